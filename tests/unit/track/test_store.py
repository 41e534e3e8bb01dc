"""The store: schema versions and migrations, corrupt and newer files, queries, reaping."""

import sqlite3
import subprocess
import sys
import time

import pytest

from lmdev.errors import LmdevError
from lmdev.track import store as st
from lmdev.track.store import SCHEMA_VERSION, Store, connect, migrate
from lmdev.track.types import RunInfo


def _info(run_id, name="r", **kw):
    return RunInfo(id=run_id, name=name, project="p", status="running", start_time=time.time(),
                   host=st.hostname(), **kw)


def test_new_store_is_wal_with_current_schema(tmp_path):
    with Store(tmp_path) as s:
        assert s.path == tmp_path / "lmdev.db"
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "metrics", "metric_keys", "system_metrics", "events", "artifacts"} <= tables


def test_migrations_run_in_order_from_an_older_version(tmp_path):
    path = tmp_path / "lmdev.db"
    v1 = [["CREATE TABLE t (a INTEGER)"]]
    conn = connect(path, migrations=v1)
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    v2 = v1 + [["ALTER TABLE t ADD COLUMN b TEXT DEFAULT 'x'"]]
    conn = connect(path, migrations=v2)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("SELECT a, b FROM t").fetchall() == [(1, "x")]
    assert migrate(conn, path, v2) == 2  # already current: nothing to do
    conn.close()


def test_store_from_a_newer_lmdev_is_refused(tmp_path):
    Store(tmp_path).close()
    raw = sqlite3.connect(tmp_path / "lmdev.db")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(LmdevError) as info:
        Store(tmp_path)
    assert "newer lmdev" in info.value.message and str(tmp_path / "lmdev.db") in info.value.message
    assert "upgrade" in info.value.hint


def test_corrupt_store_names_the_file_and_the_way_out(tmp_path):
    (tmp_path / "lmdev.db").write_bytes(b"this is not a database " * 200)
    with pytest.raises(LmdevError) as info:
        Store(tmp_path)
    path = str(tmp_path / "lmdev.db")
    assert path in info.value.message
    assert f"mv {path} {path}.corrupt" in info.value.hint and ".recover" in info.value.hint


def test_run_lookup_by_id_prefix_and_name(tmp_path):
    with Store(tmp_path) as s:
        s.create_run(_info("abc111", name="alpha"))
        time.sleep(0.01)
        s.create_run(_info("abc222", name="beta"))
        time.sleep(0.01)
        s.create_run(_info("def333", name="beta"))
        assert s.get_run("abc111").name == "alpha"
        assert s.get_run("abc1").id == "abc111"
        assert s.get_run("def").id == "def333"
        assert s.get_run("beta").id == "def333"  # a name: the newest run of that name
        with pytest.raises(LmdevError, match="matches 2 runs"):
            s.get_run("abc")
        with pytest.raises(LmdevError, match="no run matches"):
            s.get_run("zzz")
        assert [r.id for r in s.list_runs()] == ["def333", "abc222", "abc111"]
        assert [r.id for r in s.list_runs(status="running", limit=1)] == ["def333"]


def test_reap_marks_runs_of_dead_processes_killed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with Store(tmp_path) as s:
        s.create_run(_info("alive", pid=__import__("os").getpid()), pid_start=None)
        s.create_run(_info("dead", pid=dead.pid))
        other = _info("elsewhere", pid=1)
        other.host = "another-host"
        s.create_run(other)
        assert s.reap() == ["dead"]
        assert s.get_run("alive").status == "running"
        assert s.get_run("elsewhere").status == "running"  # fresh heartbeat on another host
        assert s.get_run("dead").status == "killed"
        assert s.get_run("dead").end_time is not None
        assert any("killed" in e.message for e in s.events(s.get_run("dead")))
        assert s.reap(now=time.time() + st.STALE_AFTER_S + 1) == ["elsewhere"]


def test_delete_run_removes_its_rows(tmp_path):
    with Store(tmp_path) as s:
        rid = s.create_run(_info("gone"))
        with s.write() as c:
            ids = s.key_ids(c, ["loss"])
        s.insert_batch(rid, metrics=[st.pack_chunk(rid, ids["loss"], [0, 1], [1.0, 1.1], [0.5, 0.25])],
                       system=[(rid, 1.0, 0, "host", "cpu_percent", 3.0)],
                       events=[(rid, 1.0, "info", "hi", "{}")])
        run = s.get_run("gone")
        assert s.metric_count(run) == 2
        assert s.metrics(run) == {"loss": [(0, 0.5, 1.0), (1, 0.25, 1.1)]}
        s.delete_run(run)
        for table in ("metrics", "system_metrics", "events", "artifacts", "runs"):
            assert s.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_chunks_round_trip_in_step_order(tmp_path):
    import math

    with Store(tmp_path) as s:
        rid = s.create_run(_info("chunks"))
        with s.write() as c:
            kid = s.key_ids(c, ["v"])["v"]
        s.insert_batch(rid, metrics=[st.pack_chunk(rid, kid, [5, 6], [1.0, 1.0], [5.0, math.inf]),
                                     st.pack_chunk(rid, kid, [0, 6], [2.0, 2.0], [0.0, 6.5])])
        run = s.get_run("chunks")
        assert [(p[0], p[1]) for p in s.metrics(run)["v"]] == [(0, 0.0), (5, 5.0), (6, math.inf), (6, 6.5)]
        (summary,) = s.summaries(run)
        assert (summary.count, summary.first_step, summary.last_step, summary.last) == (4, 0, 6, 6.5)
        assert (summary.min, summary.max, summary.nonfinite) == (0.0, 6.5, 1)
