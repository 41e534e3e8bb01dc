"""Pulling runs: export from one store, merge into another, idempotently and bit for bit."""

import math

from lmdev.remote import transfer
from lmdev.track import api
from lmdev.track.store import Store


def _remote_run(home, steps):
    run = api.init("r", home=home, telemetry=False, flush_interval=60)
    for s in range(steps):
        run.log({"loss": 1.0 / (s + 1) + 1e-17 * s, "acc": s / 7}, step=s)
    run.event("checkpoint saved", level="info")
    return run


def _pull(remote_home, local_home, name="gpu"):
    with Store(local_home) as store:
        cursors = {r.id: transfer.cursor(store, r) for r in transfer.pulled_runs(store, name)}
        payload = transfer.export_runs(remote_home, cursors, [], checkpoints=False)
        return [transfer.merge_run(store, name, d) for d in payload["runs"]]


def test_pull_is_idempotent_and_continues_a_running_run(tmp_path, home):
    remote, local = tmp_path / "remote", tmp_path / "local"
    run = _remote_run(remote, 50)
    run.flush()
    first = _pull(remote, local)
    assert first[0].new_run and first[0].points == 100 and first[0].status == "running"
    assert _pull(remote, local)[0].points == 0  # twice adds nothing
    for s in range(50, 80):
        run.log({"loss": 1.0 / (s + 1)}, step=s)
    run.finish()
    later = _pull(remote, local)
    assert later[0].points == 30 and later[0].status == "finished" and not later[0].new_run
    assert [(r.points, r.events) for r in _pull(remote, local)] == [(0, 0)]
    with Store(remote) as a, Store(local) as b:
        ra, rb = a.list_runs()[0], b.list_runs()[0]
        ma, mb = a.metrics(ra), b.metrics(rb)
        assert [(p[0], p[1]) for p in ma["loss"]] == [(p[0], p[1]) for p in mb["loss"]]  # bit for bit
        assert [e.message for e in a.events(ra)] == [e.message for e in b.events(rb)]
        assert "remote:gpu" in rb.tags and rb.host == ra.host


def test_non_finite_values_travel_unchanged(tmp_path, home):
    remote, local = tmp_path / "remote", tmp_path / "local"
    run = api.init("nan", home=remote, telemetry=False)
    run.log({"loss": float("nan")}, step=0)
    run.log({"loss": float("inf")}, step=1)
    run.finish()
    _pull(remote, local)
    with Store(local) as b:
        vals = [p[1] for p in b.metrics(b.list_runs()[0])["loss"]]
    assert math.isnan(vals[0]) and vals[1] == float("inf")


def test_missing_files_skips_paths_outside_the_run(tmp_path):
    with Store(tmp_path) as s:
        res = transfer.MergeResult("abc", True, 0, 0, 0, "finished",
                                   [("ckpt/a.safetensors", 3), ("../../etc/passwd", 1)], "/r/runs/abc")
        got = transfer.missing_files(s, res)
    assert got == [("/r/runs/abc/ckpt/a.safetensors", tmp_path / "runs" / "abc" / "ckpt" / "a.safetensors")]
