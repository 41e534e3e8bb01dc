"""The Run API: logging, values, steps, status, ranks, and a store that cannot be written."""

import math
import sqlite3
import warnings

import pytest

import lmdev
from lmdev.errors import LmdevError
from lmdev.track import api
from lmdev.track import run as run_mod
from lmdev.track.run import LmdevWarning
from lmdev.track.store import Store


def stored(home, ref):
    with Store(home) as s:
        run = s.get_run(ref)
        return run, s.metrics(run), s.events(run), s.artifacts(run)


def test_log_finish_round_trip(home):
    run = lmdev.init("first", config={"lr": 1e-3, "layers": [128, 64]}, tags=["a"])
    assert api.active_run() is run
    for i in range(100):
        run.log({"loss": 1.0 / (i + 1), "acc": i}, step=i)
    run.finish()
    assert api.active_run() is None
    info, metrics, _, _ = stored(home, "first")
    assert info.status == "finished" and info.end_time >= info.start_time
    assert info.config == {"lr": 1e-3, "layers": [128, 64]} and info.tags == ["a"]
    assert info.lmdev_version == lmdev.__version__ and info.pid and info.host
    assert [s for s, _, _ in metrics["loss"]] == list(range(100))
    assert metrics["loss"][9][1] == pytest.approx(0.1)
    assert metrics["acc"][-1][1] == 99


def test_steps_default_to_one_after_the_last(home):
    with lmdev.init("steps") as run:
        run.log({"a": 1.0})
        run.log({"a": 2.0})
        run.log({"a": 3.0}, step=10)
        run.log({"a": 4.0})
    _, metrics, _, _ = stored(home, "steps")
    assert [(s, v) for s, v, _ in metrics["a"]] == [(0, 1.0), (1, 2.0), (10, 3.0), (11, 4.0)]


def test_lmdev_log_uses_the_active_run_and_needs_one(home):
    with pytest.raises(LmdevError, match="no active run"):
        lmdev.log({"x": 1.0})
    lmdev.init("active")
    lmdev.log({"x": 1.0}, step=3)
    lmdev.finish()
    _, metrics, _, _ = stored(home, "active")
    assert metrics["x"][0][:2] == (3, 1.0)


def test_caller_may_reuse_its_dict(home):
    with lmdev.init("reuse") as run:
        d = {"v": 0.0}
        for i in range(5):
            d["v"] = float(i)
            run.log(d, step=i)
    _, metrics, _, _ = stored(home, "reuse")
    assert [v for _, v, _ in metrics["v"]] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("value", ["0.5", [1.0], None, {"a": 1}, b"1", 1 + 2j])
def test_non_numeric_value_is_a_type_error_naming_the_key(home, value):
    with lmdev.init("bad") as run:
        with pytest.raises(TypeError, match="'val/loss'"):
            run.log({"ok": 1.0, "val/loss": value})


def test_nan_and_inf_are_stored_and_flagged(home):
    with lmdev.init("nonfinite") as run:
        run.log({"x": math.nan, "y": math.inf, "z": -math.inf, "big": 2**80, "b": True}, step=0)
        run.log({"huge": 10**400, "ints": 3}, step=0)
    _, metrics, _, _ = stored(home, "nonfinite")
    assert math.isnan(metrics["x"][0][1])
    assert metrics["y"][0][1] == math.inf and metrics["z"][0][1] == -math.inf
    assert metrics["big"][0][1] == float(2**80) and metrics["b"][0][1] == 1.0
    assert metrics["huge"][0][1] == math.inf and metrics["ints"][0][1] == 3.0
    with Store(home) as s:
        summary = {m.key: m for m in s.summaries(s.get_run("nonfinite"))}
        assert summary["x"].nonfinite == 1 and summary["y"].nonfinite == 1
        assert summary["big"].nonfinite == 0
        flagged = dict(s.conn.execute("SELECT k.key, m.nonfinite FROM metrics m JOIN metric_keys k "
                                      "ON k.id = m.key").fetchall())
        assert flagged == {"x": 1, "y": 1, "z": 1, "big": 0, "b": 0, "huge": 1, "ints": 0}


def test_numpy_and_torch_scalars(home):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    with lmdev.init("arrays") as run:
        t = torch.tensor(0.25, requires_grad=True) * 2
        run.log({"np32": np.float32(1.5), "np_int": np.int64(7), "np0d": np.array(2.5),
                 "torch": t, "torch1": torch.tensor([3.0])}, step=0)
        with pytest.raises(TypeError, match="'vec'.*not a scalar"):
            run.log({"vec": torch.zeros(3)})
        with pytest.raises(TypeError, match="'arr'"):
            run.log({"arr": np.zeros(3)})
    _, metrics, _, _ = stored(home, "arrays")
    assert {k: v[0][1] for k, v in metrics.items()} == {
        "np32": 1.5, "np_int": 7.0, "np0d": 2.5, "torch": 0.5, "torch1": 3.0}


def test_accelerator_tensors_are_read_by_the_writer_in_one_batch(home, monkeypatch):
    """Tensors not on the CPU are kept as tensors by log() and converted by the writer."""

    torch = pytest.importorskip("torch")
    calls = []
    real = run_mod._tensor_values

    def fake_values(tensors):
        calls.append(len(tensors))
        return real(tensors)  # the real conversion (torch.stack per device), on CPU tensors here

    monkeypatch.setattr(run_mod, "_tensor_values", fake_values)
    with lmdev.init("accel") as run:
        for i in range(50):  # as log() keeps them; mixed with plain numbers and a NaN
            run._metrics.append((i, 0.0, {"loss": torch.tensor(float(i)) if i % 2 else float(i)}))
        run._metrics.append((50, 0.0, {"loss": torch.tensor(math.nan)}))
    _, metrics, _, _ = stored(home, "accel")
    values = [v for _, v, _ in metrics["loss"]]
    assert values[:50] == [float(i) for i in range(50)] and math.isnan(values[50])
    assert calls == [26]  # one conversion for the whole batch, not one per call


def test_context_manager_records_failure_and_the_error(home):
    with pytest.raises(ZeroDivisionError):
        with lmdev.init("boom") as run:
            run.log({"x": 1.0})
            raise ZeroDivisionError("boom")
    info, metrics, events, _ = stored(home, "boom")
    assert info.status == "failed" and metrics["x"]
    assert any(e.level == "error" and "ZeroDivisionError" in e.message for e in events)


def test_events_and_artifacts(home, tmp_path):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"\x00" * 1000)
    with lmdev.init("things") as run:
        run.event("checkpoint saved", level="info", step=10)
        run.event("NaN skipped", level="warning")
        with pytest.raises(ValueError):
            run.event("x", level="loud")
        run.log_artifact(f, kind="checkpoint")
        copied = run.log_artifact(f, kind="checkpoint", copy=True)
        with pytest.raises(LmdevError, match="no such file"):
            run.log_artifact(tmp_path / "missing")
        run.fingerprint("train", b"abc")
    info, _, events, artifacts = stored(home, "things")
    assert [(e.level, e.message, e.data) for e in events] == [
        ("info", "checkpoint saved", {"step": 10}), ("warning", "NaN skipped", {})]
    assert [a.kind for a in artifacts] == ["checkpoint", "checkpoint"]
    assert artifacts[0].size == 1000 and len(artifacts[0].sha256) == 64
    assert artifacts[1].path == str(copied) and copied.parent == home / "runs" / info.id / "artifacts"
    assert info.data_fingerprints["train"].startswith("ba7816bf")


def test_log_after_finish_is_ignored(home):
    run = lmdev.init("late")
    run.finish()
    run.log({"x": 1.0})
    run.finish()  # twice is fine
    _, metrics, _, _ = stored(home, "late")
    assert metrics == {}


def test_only_rank_zero_logs_metrics_unless_asked(home, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LMDEV_RUN_ID", "shared123456")
    quiet = lmdev.init("ranked")
    quiet.log({"x": 1.0})
    quiet.finish()
    loud = lmdev.init("ranked", log_all_ranks=True)
    loud.log({"y": 2.0})
    loud.finish()
    info, metrics, _, _ = stored(home, "shared123456")
    assert list(metrics) == ["y"]
    assert info.status == "running"  # neither owned it: the owner sets the final status


def test_ranks_of_one_launch_share_a_run(home, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29512")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    monkeypatch.setenv("RANK", "1")
    other = lmdev.init("launch", telemetry=False)
    monkeypatch.setenv("RANK", "0")
    zero = lmdev.init("launch", telemetry=False)
    assert other.id == zero.id and zero.owner and not other.owner
    zero._add_system([(1.0, 0, "process", "rss_bytes", 1.0)])
    other._add_system([(1.0, 1, "process", "rss_bytes", 2.0)])
    other.log({"x": 1.0})
    zero.log({"x": 2.0}, step=0)
    other.finish()
    zero.finish()
    with Store(home) as s:
        run = s.get_run(zero.id)
        assert run.status == "finished"
        assert [v for _, v, _ in s.metrics(run)["x"]] == [2.0]
        assert sorted((x.rank, x.value) for x in s.system(run)) == [(0, 1.0), (1, 2.0)]


def test_a_store_that_fails_warns_once_and_training_continues(home, monkeypatch):
    run = lmdev.init("full", flush_interval=0.05)
    real = Store.insert_batch
    failing = {"on": True}

    def insert(self, *args, **kwargs):
        if failing["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "insert_batch", insert)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(20):
            run.log({"x": float(i)}, step=i)
            run.flush()
        failing["on"] = False
        run.log({"x": 99.0}, step=99)
        run.finish()
    ours = [w for w in caught if issubclass(w.category, LmdevWarning)]
    assert len(ours) == 1 and "disk is full" in str(ours[0].message)
    info, metrics, events, _ = stored(home, "full")
    assert info.status == "finished"
    assert [v for _, v, _ in metrics["x"]] == [99.0]
    assert any(e.level == "error" and "20 values were not stored" in e.message for e in events)


def test_an_unwritable_home_warns_and_records_nothing(tmp_path, monkeypatch, home):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LMDEV_HOME", str(blocker / "home"))
    with pytest.warns(LmdevWarning, match="not recorded"):
        run = lmdev.init("nowhere")
    run.log({"x": 1.0})
    run.event("still fine")
    run.flush()
    run.finish()
    assert run.finished


def test_a_corrupt_store_is_an_error_at_init(home):
    home.mkdir(parents=True)
    (home / "lmdev.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(LmdevError, match="not a readable SQLite database"):
        lmdev.init("corrupt")


def test_at_exit_finishes_open_runs(home):
    run = lmdev.init("open")
    run.log({"x": 1.0})
    run_mod._at_exit()
    assert run.finished
    info, metrics, _, _ = stored(home, "open")
    assert info.status == "finished" and metrics["x"]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_does_not_write_the_parents_run(home):
    import os

    run = lmdev.init("forked")
    run.log({"x": 1.0}, step=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
        pid = os.fork()
    if pid == 0:  # the child: like a DataLoader worker that calls log by mistake
        try:
            run.log({"x": 2.0}, step=1)
            run.finish("failed")
            run_mod._at_exit()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    run.finish()
    info, metrics, _, _ = stored(home, "forked")
    assert info.status == "finished" and [v for _, v, _ in metrics["x"]] == [1.0]
