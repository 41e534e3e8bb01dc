"""The API W&B users reach for: resume and fork, run.config, run.summary, commit=False, a re-run
init finishing the previous run, the context manager."""

import pytest

import lmdev
from lmdev.errors import LmdevError
from lmdev.track import api
from lmdev.track.store import Store


def stored(home, ref):
    with Store(home) as s:
        run = s.get_run(ref)
        return run, s.metrics(run), s.events(run)


def test_resume_continues_the_same_run_and_its_steps(home):
    first = lmdev.init("cont", config={"lr": 0.1})
    for i in range(5):
        first.log({"loss": float(i)})
    first.finish("killed")
    again = lmdev.init(resume="cont")
    assert again.id == first.id and again.name == "cont"
    again.log({"loss": 50.0})  # after the last step
    again.finish()
    info, metrics, events = stored(home, first.id)
    assert info.status == "finished" and info.parent_id is None
    assert [s for s, _, _ in metrics["loss"]] == [0, 1, 2, 3, 4, 5]
    with Store(home) as s:
        assert len(s.list_runs()) == 1
    resumes = [e.data for e in events if e.data.get("kind") == "resume"]
    assert resumes == [{"kind": "resume", "step": 4, "dropped": 0}]


def test_resume_at_a_step_rewinds(home):
    with lmdev.init("rw") as run:
        for i in range(10):
            run.log({"loss": float(i)})
    run_id = run.id
    again = lmdev.init(resume=f"{run_id}@3")
    again.log({"loss": -4.0})
    again.finish()
    _, metrics, events = stored(home, run_id)
    assert [(s, v) for s, v, _ in metrics["loss"]] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, -4.0)]
    assert [e.data for e in events if e.data.get("kind") == "resume"] == [{"kind": "resume", "step": 3, "dropped": 6}]


def test_a_live_run_cannot_be_resumed(home):
    run = lmdev.init("live")
    with pytest.raises(LmdevError, match="still running"):
        lmdev.init(resume=run.id, reinit="create_new")
    run.finish()


def test_fork_starts_a_new_run_with_a_parent_link_and_step(home):
    with lmdev.init("base", config={"lr": 0.1, "layers": 2}) as parent:
        for i in range(10):
            parent.log({"loss": float(i)})
    child = lmdev.init(fork=f"{parent.id}@6")
    assert child.id != parent.id and child.config["lr"] == 0.1  # the parent's config by default
    child.config.update({"lr": 0.01})
    child.log({"loss": 0.5})
    child.finish()
    info, metrics, events = stored(home, child.id)
    assert info.parent_id == parent.id and info.fork_step == 6
    assert info.config == {"lr": 0.01, "layers": 2}
    assert [s for s, _, _ in metrics["loss"]] == [7]
    assert any(e.data.get("kind") == "fork" and e.data["step"] == 6 for e in events)
    with Store(home) as s:
        assert [r.id for r in s.forks(s.get_run(parent.id))] == [child.id]


def test_config_is_a_mapping_whose_changes_are_stored_redacted(home):
    run = lmdev.init("cfg", config={"lr": 0.1})
    assert run.config["lr"] == 0.1 and run.config.lr == 0.1 and dict(run.config) == {"lr": 0.1}
    run.config["batch"] = 32
    run.config.update({"hf_token": "hf_" + "a" * 34, "wd": 0.0})
    run.finish()
    info, _, _ = stored(home, "cfg")
    assert info.config["batch"] == 32 and info.config["wd"] == 0.0
    assert info.config["hf_token"] == "[REDACTED]"


def test_summary_defaults_to_last_values_and_can_be_set(home):
    run = lmdev.init("sum")
    for i in range(4):
        run.log({"loss": 1.0 / (i + 1), "acc": i / 10})
    assert run.summary["loss"] == pytest.approx(0.25)
    run.summary["best_acc"] = 0.99
    run.summary["loss"] = 0.2  # the user's value wins
    assert dict(run.summary) == {"loss": 0.2, "acc": pytest.approx(0.3), "best_acc": 0.99}
    run.finish()
    with Store(home) as s:
        info = s.get_run("sum")
        assert info.summary == {"best_acc": 0.99, "loss": 0.2}
        assert s.summary(info) == {"loss": 0.2, "acc": pytest.approx(0.3), "best_acc": 0.99}


def test_commit_false_gathers_one_step(home):
    with lmdev.init("commit") as run:
        run.log({"a": 1.0}, commit=False)
        run.log({"b": 2.0}, commit=False)
        run.log({"c": 3.0})  # commits a, b, c at step 0
        run.log({"a": 4.0})  # step 1
        run.log({"b": 5.0}, step=7, commit=False)
        run.log({"b": 6.0}, step=8)  # another step: 7 is committed first
        run.log({"z": 9.0}, commit=False)  # committed by finish
    _, metrics, _ = stored(home, "commit")
    pts = {k: [(s, v) for s, v, _ in p] for k, p in metrics.items()}
    assert pts == {"a": [(0, 1.0), (1, 4.0)], "b": [(0, 2.0), (7, 5.0), (8, 6.0)], "c": [(0, 3.0)], "z": [(9, 9.0)]}


def test_init_again_finishes_the_previous_run(home):
    first = lmdev.init("cell")
    second = lmdev.init("cell")
    assert first.finished and not second.finished and api.active_run() is second
    second.finish()
    with Store(home) as s:
        assert [r.status for r in s.list_runs()] == ["finished", "finished"]


def test_context_manager_records_failure(home):
    with pytest.raises(RuntimeError):
        with lmdev.init("ctx") as run:
            run.log({"x": 1.0})
            raise RuntimeError("boom")
    info, _, events = stored(home, "ctx")
    assert info.status == "failed" and any("boom" in e.message for e in events)


def test_store_existing_creates_nothing(tmp_path):
    home = tmp_path / "nowhere"
    with Store.existing(home) as s:
        assert s.list_runs() == []
    assert not home.exists()


def test_a_version_1_store_is_migrated_and_its_runs_read(tmp_path):
    import sqlite3

    from lmdev.track.store import MIGRATIONS, connect

    path = tmp_path / "lmdev.db"
    old = connect(path, MIGRATIONS[:1])
    old.execute("INSERT INTO runs (id, name, project, status, start_time) VALUES ('abc', 'old', 'p', 'finished', 1.0)")
    old.close()
    with Store(tmp_path) as s:
        info = s.get_run("abc")
        assert (info.fork_step, info.summary, s.media(info)) == (None, {}, [])
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
