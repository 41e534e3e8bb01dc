"""Exports (CSV, JSON, TensorBoard) and the documents of `runs show --json`/`runs list --json`."""

import csv
import json
import math

import pytest

import lmdev
from lmdev.track.export import export, list_document, run_document
from lmdev.track.store import Store


@pytest.fixture
def recorded(home):
    with lmdev.init("exp", config={"lr": 0.1}) as run:
        for i in range(5):
            run.log({"loss": 1.0 / (i + 1), "acc": i / 10}, step=i)
        run.log({"loss": math.nan}, step=5)
        run._add_system([(run.info.start_time + 1, 0, "host", "cpu_percent", 50.0)])
        run.event("done")
    return home


def test_run_document(recorded):
    with Store(recorded) as s:
        doc = run_document(s, s.get_run("exp"))
        json.dumps(doc, allow_nan=False)  # strict JSON
        assert doc["schema"] == "lmdev.run/1" and doc["name"] == "exp" and doc["status"] == "finished"
        assert doc["config"] == {"lr": 0.1}
        assert doc["metrics"]["loss"][:2] == [[0, 1.0], [1, 0.5]]
        assert doc["metrics"]["loss"][5] == [5, "NaN"]
        assert doc["events"][0]["message"] == "done" and doc["artifacts"] == []
        assert "system" not in doc
        assert run_document(s, s.get_run("exp"), system=True)["system"]["host/cpu_percent"][0][2] == 50.0
        listing = list_document(s, s.list_runs())
        json.dumps(listing, allow_nan=False)
        assert listing["runs"][0]["last"] == {"acc": 0.4, "loss": "NaN"}


def test_csv_export(recorded, tmp_path):
    with Store(recorded) as s:
        files = export(s, s.get_run("exp"), "csv", tmp_path / "out.csv")
    rows = list(csv.DictReader(open(files[0])))
    assert len(rows) == 11 and rows[0].keys() == {"key", "step", "time", "value"}
    assert {(r["key"], r["step"], r["value"]) for r in rows} >= {("loss", "5", "nan"), ("acc", "4", "0.4")}
    assert files[1].name == "out.system.csv"


def test_tensorboard_export_reads_back(recorded, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with Store(recorded) as s:
        files = export(s, s.get_run("exp"), "tensorboard", tmp_path / "tb")
    assert len(files) == 1
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert {"loss", "acc", "system/host/cpu_percent"} <= set(acc.Tags()["scalars"])
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [0, 1, 2, 3, 4, 5]
    assert loss[1].value == pytest.approx(0.5) and math.isnan(loss[5].value)
