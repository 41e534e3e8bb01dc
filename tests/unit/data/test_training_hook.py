"""The data section of a training config: separate validation files replace the random split,
and the check before training honours data.check (off, warn, fail) and records its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmdev import track
from lmdev.data import check_for_training
from lmdev.data.check import DataCheckFailed
from lmdev.data.planted import make_table, write_csv
from lmdev.errors import LmdevError
from lmdev.track import Store
from lmdev.train.config import load_config
from lmdev.train.data import load_data


@pytest.fixture
def csvs(tmp_path):
    p = make_table(400, features=4, classes=3, seed=2, leak_column=False, constant_column=False)
    assert len(p.leaked) == 4
    write_csv(tmp_path / "train.csv", p.x, p.y)
    write_csv(tmp_path / "val.csv", p.val_x, p.val_y)
    return tmp_path, p


def test_val_needs_file_data():
    with pytest.raises(LmdevError, match="val/test files need file data"):
        load_config({"data": {"type": "digits", "val": "v.csv"}})
    with pytest.raises(LmdevError, match="data.check"):
        load_config({"data": {"type": "digits", "check": "maybe"}})


def test_a_validation_file_replaces_the_random_split(csvs):
    d, p = csvs
    cfg = load_config({"data": {"type": "csv:train.csv", "val": "val.csv", "target": "label"}})
    data = load_data(cfg.data, 0, d)
    assert len(data.train) == 400 and len(data.val) == 80
    assert np.allclose(data.val.x.numpy(), p.val_x, atol=1e-4)  # in file order
    assert data.val.y.tolist() == p.val_y.tolist()


def test_a_validation_text_file(tmp_path):
    (tmp_path / "a.txt").write_text("abc" * 100)
    (tmp_path / "b.txt").write_text("xyz" * 30)
    cfg = load_config({"data": {"type": "text:a.txt", "val": "b.txt", "seq_len": 8}})
    data = load_data(cfg.data, 0, tmp_path)
    assert bytes(data.val.tokens) == b"xyz" * 30 and len(data.train.tokens) == 300


def test_check_off_does_nothing(csvs):
    d, _ = csvs
    cfg = load_config({"data": {"type": "csv:train.csv", "val": "val.csv", "check": "off"}})
    assert check_for_training(cfg, None, d) is None


def test_the_report_is_recorded_with_the_run(csvs):
    d, p = csvs
    cfg = load_config({"data": {"type": "csv:train.csv", "val": "val.csv", "check": "warn"}})
    run = track.init(name="hook", home=d / "home", telemetry=False)
    lines: list[str] = []
    report = check_for_training(cfg, run, d, lines.append)
    run.finish()
    assert "label_errors" not in report.checks  # the fast checks only
    assert lines[0].startswith("data check:") and "severe" in lines[0]
    with Store(d / "home") as store:
        info = store.get_run(run.id)
        (artifact,) = [a for a in store.artifacts(info) if a.kind == "data-check"]
        events = store.events(info)
    doc = json.loads(Path(artifact.path).read_text())
    overlap = next(f for f in doc["findings"] if f["id"] == "split.overlap")
    assert set(overlap["rows"]) == p.leaked and overlap["rows_file"] is None  # 4 rows: no file needed
    assert any(e.data.get("finding") == "split.overlap" and e.level == "error" for e in events)


def test_check_fail_stops_on_a_severe_finding(csvs):
    d, _ = csvs
    cfg = load_config({"data": {"type": "csv:train.csv", "val": "val.csv", "check": "fail"}})
    with pytest.raises(DataCheckFailed, match="severe") as exc:
        check_for_training(cfg, None, d)
    assert exc.value.exit_code == 1
