"""lmdev.data.check on text corpora: hygiene (empty, overlong, non-UTF-8), the length
histogram, duplicates and overlap between train and validation."""

from __future__ import annotations

from lmdev.data import CheckOptions, check


def by_id(report, split: str = "train") -> dict:
    return {f.id: f for f in report.findings if f.split == split}


def test_text_hygiene(tmp_path):
    lines = [b"hello world", b"", b"Hello,  World!", b"caf\xe9 latin-1", b"hello world", b"a" * 300, b"short"]
    (tmp_path / "c.txt").write_bytes(b"\n".join(lines) + b"\n")
    report = check(tmp_path / "c.txt", CheckOptions(max_tokens=100))
    f = by_id(report)
    assert f["rows.duplicate"].rows == [4]
    assert f["rows.near_duplicate"].rows == [2]
    assert f["text.empty"].rows == [1]
    assert f["text.non_utf8"].rows == [3]
    assert f["text.overlong"].rows == [5] and "301" in f["text.overlong"].message
    hist = f["text.lengths"].data["histogram"]
    assert sum(hist.values()) == 6 and hist["256-511"] == 1
    assert report.exit_code == 0


def test_validation_lines_seen_in_training(tmp_path):
    (tmp_path / "train.txt").write_text("".join(f"line {i}\n" for i in range(200)))
    (tmp_path / "val.txt").write_text("line 5\nLINE 6!\nnew line\n")
    report = check(tmp_path / "train.txt", CheckOptions(val=str(tmp_path / "val.txt")))
    f = by_id(report, "val")
    assert f["split.overlap"].rows == [0] and f["split.overlap"].severity == "severe"
    assert f["split.near_overlap"].rows == [1]
    assert report.exit_code == 1


def test_the_synthetic_corpus_split_like_training(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {type: synthetic, n_examples: 3000, val_fraction: 0.1, seq_len: 8}\n")
    report = check(tmp_path / "c.yaml")
    rows = {s.name: s.rows for s in report.splits}
    assert rows["train"] + rows["val"] == 3000 and 250 < rows["val"] < 350
    assert by_id(report)["text.overlong"].count > 2000  # "17+205=222\n" is longer than 8 tokens
