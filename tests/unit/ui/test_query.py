"""The store's read side (lmdev.track.query): what the dashboard asks of the store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmdev import track
from lmdev.track.metric_names import higher_is_better
from lmdev.track.query import Query, live_status
from lmdev.track.store import Store


@pytest.fixture
def q(home):
    st = Store(home)
    yield Query(st)
    st.close()


def _run(home, name, points, **kw):
    run = track.init(name, home=home, telemetry=False, **kw)
    for step, values in points:
        run.log(values, step=step)
    run.finish()
    return run


def test_table_metrics_has_last_and_best_of_key_metrics_only(home, q):
    run = _run(home, "a", [(s, {"train/loss": 1.0 / (s + 1), "val/accuracy": s / 10, "lr": 0.1}) for s in range(10)])
    table = q.table_metrics()[run.id]
    assert set(table) == {"train/loss", "val/accuracy"}  # lr is not a key metric
    loss, acc = table["train/loss"], table["val/accuracy"]
    assert loss.last == pytest.approx(0.1) and loss.best == loss.min == pytest.approx(0.1) and loss.count == 10
    assert acc.best == acc.max == pytest.approx(0.9) and acc.higher_is_better and not loss.higher_is_better
    assert higher_is_better("val/f1") and not higher_is_better("val/loss")


def test_series_come_in_step_order_as_arrays(home, q):
    run = _run(home, "b", [(5, {"x": 5.0}), (1, {"x": 1.0}), (3, {"x": float("nan")})])
    s = q.series(q.run(run.id), ["x", "missing"])
    assert list(s) == ["x"]
    assert s["x"].steps.tolist() == [1, 3, 5] and s["x"].steps.dtype == np.int64
    assert s["x"].values[0] == 1.0 and math.isnan(s["x"].values[1]) and s["x"].values[2] == 5.0


def test_cursor_changes_when_anything_is_recorded(home, q):
    run = track.init("c", home=home, telemetry=False)
    run.log({"x": 1.0}, step=0)
    run.flush()
    info = q.run(run.id)
    before = q.cursor(info)
    run.event("hello")
    run.flush()
    after = q.cursor(info)
    assert after.events == before.events + 1 and after != before
    run.log({"x": 2.0}, step=1)
    run.finish()
    assert q.cursor(info).points == 2
    assert live_status(q.run(run.id)) == "finished"


def test_final_values_read_every_spelling_of_a_metric(home, q):
    a = _run(home, "keras", [(0, {"val_loss": 2.0}), (1, {"val_loss": 0.5})])
    b = _run(home, "lmdev", [(0, {"val/loss": 3.0}), (1, {"val/loss": 0.7})])
    finals = q.final_values([q.run(a.id), q.run(b.id)], ["val/loss", "val_loss"])
    assert finals == {a.id: 0.5, b.id: 0.7}
    assert "val_loss" in q.metric_keys() and "val/loss" in q.metric_keys()


def test_lineage_lists_forks_and_resumes(home, q):
    parent = _run(home, "base", [(s, {"loss": 1.0}) for s in range(5)])
    fork = _run(home, "fork", [(s, {"loss": 0.5}) for s in range(3, 6)], parent=parent.id)
    resumed = track.init("resumed", home=home, telemetry=False)
    resumed.event("resumed at step 2", kind="resume", step=2, dropped=7)
    resumed.finish()
    lin = q.lineage(q.run(parent.id))
    assert lin.parent is None and [f.id for f in lin.forks] == [fork.id] and lin.resumes == []
    child = q.lineage(q.run(fork.id))
    assert child.parent is not None and child.parent.id == parent.id and child.parent.name == "base"
    r = q.lineage(q.run(resumed.id)).resumes
    assert [(x.step, x.dropped) for x in r] == [(2, 7)]


def test_system_keys_and_series(home, q):
    run = track.init("sys", home=home, telemetry=False)
    run._add_system([(1.0, 0, "host", "cpu_percent", 10.0), (2.0, 1, "gpu:0", "util", 50.0)])
    run.finish()
    info = q.run(run.id)
    assert q.system_keys(info) == ["gpu:0/util/rank1", "host/cpu_percent"]
    times, values = q.system_series(info)["host/cpu_percent"]
    assert times.tolist() == [1.0] and values.tolist() == [10.0]


def test_final_value_is_the_last_point_at_the_highest_step(home, q):
    run = _run(home, "order", [(5, {"val/loss": 0.5}), (1, {"val/loss": 9.0}), (5, {"val/loss": 0.4})])
    assert q.final_values([q.run(run.id)], ["val/loss"]) == {run.id: 0.4}
    assert q.final_values([q.run(run.id)], ["nope"]) == {}
