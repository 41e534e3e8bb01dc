"""lmdev.data.check on tables with planted problems: each check finds what was planted (and
little else), names the rows, writes the full row lists, and reads data in chunks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmdev.data import CheckOptions, check, hashing, read
from lmdev.data.planted import make_table, write_csv
from lmdev.errors import LmdevError


def by_id(report, split: str = "train") -> dict:
    return {f.id: f for f in report.findings if f.split == split}


def rows_of(finding) -> set[int]:
    if finding.rows_file:
        return {int(r) for r in Path(finding.rows_file).read_text().split()}
    return set(finding.rows)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    d = tmp_path_factory.mktemp("planted")
    p = make_table(3000, seed=3)
    write_csv(d / "train.csv", p.x, p.y)
    write_csv(d / "val.csv", p.val_x, p.val_y)
    report = check(d / "train.csv", CheckOptions(val=str(d / "val.csv"), out_dir=d / "out"))
    return p, report, d


def test_planted_duplicates_are_found_with_all_rows_in_a_file(planted):
    p, report, _ = planted
    f = by_id(report)["rows.duplicate"]
    found = rows_of(f)
    assert len(found & p.duplicates) >= 0.95 * len(p.duplicates)
    assert len(found - p.duplicates) <= 0.05 * len(found)
    assert f.count == len(found) and len(f.rows) == 10 and f.rows_file


def test_rows_leaked_into_validation_are_severe(planted):
    p, report, _ = planted
    f = by_id(report, "val")["split.overlap"]
    assert f.severity == "severe"
    assert rows_of(f) == p.leaked


def test_flipped_labels_are_found(planted):
    p, report, _ = planted
    found = rows_of(by_id(report)["label.errors"])
    assert len(found & p.flipped) >= 0.8 * len(p.flipped)
    assert len(found & p.flipped) >= 0.8 * len(found)


def test_the_label_in_disguise_and_the_constant_column_are_named(planted):
    p, report, _ = planted
    found = by_id(report)
    assert found["feature.leak"].severity == "severe"
    assert found["feature.leak"].columns == [f"f{p.leak_column}"]
    assert found["column.constant"].columns == [f"f{p.constant_column}"]
    assert report.exit_code == 1


def test_the_report_on_disk_is_strict_json(planted):
    _, _, d = planted
    doc = json.loads((d / "out" / "report.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert doc["status"] == "severe"
    assert {s["name"]: s["rows"] for s in doc["splits"]} == {"train": 3000, "val": 600}
    assert doc["findings"][0]["severity"] == "severe"


def test_clean_data_has_no_warning(tmp_path):
    p = make_table(2000, seed=5, dup_share=0, flip_share=0, leak_share=0, leak_column=False, constant_column=False)
    write_csv(tmp_path / "t.csv", p.x, p.y)
    report = check(tmp_path / "t.csv", CheckOptions())
    assert [f.id for f in report.findings if f.severity != "info"] == []
    assert report.exit_code == 0


def test_broken_columns(tmp_path):
    lines = ["a,b,c,d,e,label"] + [f"{i},1,,{i % 7},{'inf' if i == 4 else i},{i % 2}" for i in range(40)]
    lines[10] = "9,1,,x,9,1"  # a word where a number belongs
    lines[20] = "19,1,,,19,1"  # a missing value
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    found = by_id(check(tmp_path / "t.csv", CheckOptions(fast=True)))
    assert found["column.all_missing"].columns == ["c"]
    assert found["column.constant"].columns == ["b"]
    assert found["column.non_numeric"].columns == ["d"]
    assert found["column.missing"].columns == ["d"] and found["column.missing"].rows == [9, 19]
    assert found["column.non_finite"].columns == ["e"] and found["column.non_finite"].rows == [4]
    assert all(found[k].severity == "severe" for k in ("column.all_missing", "column.non_numeric",
                                                          "column.missing", "column.non_finite"))


def test_an_almost_absent_class(tmp_path):
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(600), np.ones(397), np.full(3, 2)]
    write_csv(tmp_path / "t.csv", rng.normal(size=(1000, 3)), y)
    f = by_id(check(tmp_path / "t.csv", CheckOptions(fast=True)))["label.imbalance"]
    assert "class 2: 3 row(s)" in f.message and f.data["counts"] == {"0": 600, "1": 397, "2": 3}


def test_chunked_reading_finds_duplicates_across_chunks(tmp_path, monkeypatch):
    p = make_table(2000, seed=4, flip_share=0, leak_column=False)
    write_csv(tmp_path / "t.csv", p.x, p.y)
    whole = rows_of(by_id(check(tmp_path / "t.csv", CheckOptions(fast=True)))["rows.duplicate"])
    monkeypatch.setattr(read, "CHUNK_BYTES", 4096)  # about 40 lines a chunk
    src = read.TableSource("train", tmp_path / "t.csv", "csv")
    assert len(list(src.chunks())) > 20
    chunked = check(tmp_path / "t.csv", CheckOptions(fast=True, out_dir=tmp_path / "o"))
    assert rows_of(by_id(chunked)["rows.duplicate"]) == whole == p.duplicates


def test_npy_with_a_label_index_and_a_sample_size(tmp_path):
    p = make_table(3000, seed=6, dup_share=0, leak_column=False, constant_column=False)
    np.save(tmp_path / "t.npy", np.column_stack([p.y, p.x]))
    report = check(tmp_path / "t.npy", CheckOptions(label=0, sample_size=1000))
    assert report.sample_size == 1000
    assert report.splits[0].columns == p.x.shape[1] and report.splits[0].classes == 4
    found = rows_of(by_id(report)["label.errors"])
    assert found and len(found & p.flipped) >= 0.8 * len(found)  # only sampled rows are judged


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = make_table(1000, seed=7, flip_share=0)
    cols = {f"f{i}": p.x[:, i] for i in range(p.x.shape[1])} | {"target": p.y}
    pq.write_table(pa.table(cols), tmp_path / "t.parquet")
    found = by_id(check(tmp_path / "t.parquet", CheckOptions(label="target", fast=True)))
    assert rows_of(found["rows.duplicate"]) == p.duplicates
    assert found["feature.leak"].columns == [f"f{p.leak_column}"]


def test_a_config_with_separate_validation_file(tmp_path):
    p = make_table(1000, seed=8)
    write_csv(tmp_path / "train.csv", p.x, p.y)
    write_csv(tmp_path / "val.csv", p.val_x, p.val_y)
    (tmp_path / "c.yaml").write_text("data: {type: csv:train.csv, val: val.csv, target: label}\n")
    report = check(tmp_path / "c.yaml", CheckOptions(fast=True))
    assert [s.name for s in report.splits] == ["train", "val"]
    assert set(by_id(report, "val")["split.overlap"].rows) <= p.leaked


def test_the_digits_config_is_split_as_training_splits_it():
    root = Path(__file__).resolve().parents[3]
    report = check(root / "examples" / "digits_mlp.yaml", CheckOptions(fast=True))
    assert [(s.name, s.rows) for s in report.splits] == [("train", 1438), ("val", 359)]
    assert report.exit_code == 0


def test_a_header_without_rows_is_severe(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label\n")
    report = check(tmp_path / "t.csv")
    assert [f.id for f in report.findings] == ["split.empty"] and report.exit_code == 1


def test_a_missing_file_and_a_missing_label_column_are_user_errors(tmp_path):
    with pytest.raises(LmdevError, match="does not exist"):
        check(tmp_path / "nope.csv")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(LmdevError, match="no column 'zz'"):
        check(tmp_path / "t.csv", CheckOptions(label="zz"))


def test_row_hashes_treat_equal_values_alike():
    a = np.array([[0.0, np.nan, 1.5], [-0.0, np.nan, 1.5], [0.0, np.nan, 1.5000001]])
    h = hashing.row_hashes(a)
    assert h[0] == h[1] != h[2]
    dup, first = hashing.duplicate_rows(np.array([5, 7, 5, 5, 7], dtype=np.uint64))
    assert dup.tolist() == [2, 3, 4] and first.tolist() == [0, 0, 1]
