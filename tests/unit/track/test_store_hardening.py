"""Nothing lost, nothing written by readers, no traceback from odd text or damaged rows."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import lmdev
from lmdev.cli import main
from lmdev.errors import LmdevError, LmdevWarning
from lmdev.track import run as run_mod
from lmdev.track import store as store_mod
from lmdev.track.store import Store


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the lock -------------------------------------------------------------------------------------

def test_run_creation_waits_for_a_held_lock_says_so_once_and_keeps_every_point(home, monkeypatch, capsys):
    with lmdev.init("first"):
        pass  # the store exists
    monkeypatch.setattr(run_mod, "FIRST_WAIT_S", 0.05)
    monkeypatch.setattr(run_mod, "BUSY_TIMEOUT_S", 0.2)  # each later attempt: 0.2 s, so several
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)  # the old code gave up after this
    holder = sqlite3.connect(home / "lmdev.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_later():
        time.sleep(1.0)  # longer than every busy timeout above: the old code gave up here
        holder.execute("COMMIT")
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    with pytest.warns(LmdevWarning, match="is locked by another process") as said:
        run = lmdev.init("waited", flush_interval=0.05)
    assert released.is_set()  # it waited for the lock rather than giving up
    assert len(said) == 1
    for i in range(848):
        run.log({"loss": float(i)}, step=i)
    run.finish()
    with Store(home) as st:
        assert st.metric_count(st.get_run(run.id)) == 848


def test_points_logged_while_the_lock_is_held_are_kept(home, monkeypatch):
    monkeypatch.setattr(run_mod, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)
    run = lmdev.init("busy", flush_interval=0.05)
    holder = sqlite3.connect(home / "lmdev.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    for i in range(500):
        run.log({f"k{i % 7}": float(i)}, step=i)  # new keys: registering them needs the lock
    time.sleep(0.5)  # several flushes fail on the lock
    holder.execute("COMMIT")
    run.finish()
    with Store(home) as st:
        assert st.metric_count(st.get_run(run.id)) == 500


# -- read-only ------------------------------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}


def test_read_only_commands_write_nothing(home, capsys, tmp_path, monkeypatch):
    with lmdev.init("ro", config={"lr": 0.1}) as run:
        run.log({"loss": 1.0})
    with lmdev.init("ro2", config={"lr": 0.2}) as run2:
        run2.log({"loss": 2.0})
    before = _snapshot(home)
    assert code_ok(cli(capsys, "runs", "list", "--read-only"))
    assert code_ok(cli(capsys, "runs", "show", run.id, "--read-only", "--json"))
    assert code_ok(cli(capsys, "runs", "compare", run.id, run2.id, "--read-only"))
    assert code_ok(cli(capsys, "runs", "export", run.id, "--read-only", "--format", "json",
                       "-o", str(tmp_path / "x.json")))
    monkeypatch.setenv("LMDEV_READ_ONLY", "1")
    assert code_ok(cli(capsys, "runs", "list", "--json"))
    code, _, err = cli(capsys, "runs", "rm", run.id, "--yes")
    assert code == 2 and "read-only" in err
    assert _snapshot(home) == before  # no -wal, no -shm, no new mtime


def code_ok(result):
    code, out, err = result
    assert code == 0, err
    return True


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_read_only_media_a_store_nobody_can_write(tmp_path):
    """A store folder and file nobody may write (0555/0444), read as an unprivileged user."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"lmdev-ro-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        h = base / ".lmdev"
        with lmdev.init("on-cd", home=h, telemetry=False) as run:
            run.log({"loss": 0.5})
        (h / "runs").rmdir() if (h / "runs").exists() and not any((h / "runs").iterdir()) else None
        os.chmod(h / "lmdev.db", 0o444)
        os.chmod(h, 0o555)
        cmd = [sys.executable, "-m", "lmdev", "runs", "--home", str(h), "list", "--json", "--read-only"]
        if os.geteuid() == 0:  # root ignores permissions: run as nobody
            if not shutil.which("setpriv"):
                pytest.skip("needs setpriv to drop root")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        src = str(Path(lmdev.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=src, HOME=str(base))
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=base, timeout=120)
        if os.geteuid() == 0 and "Permission denied" in r.stderr and "lmdev" not in r.stderr:
            pytest.skip("the unprivileged user cannot read the checkout")
        assert r.returncode == 0, r.stderr
        assert [x["name"] for x in json.loads(r.stdout)["runs"]] == ["on-cd"]
        assert sorted(p.name for p in h.iterdir()) == ["lmdev.db"]
    finally:
        os.chmod(base / ".lmdev", 0o755) if (base / ".lmdev").exists() else None
        shutil.rmtree(base, ignore_errors=True)


# -- text from users ------------------------------------------------------------------------------

MARKUP = ["[/]", "[bold]", "[/bold]", "[link=x]", "[red]x[/red]", "\\[", "[", "]"]


def test_rich_markup_in_names_tags_keys_and_values_is_shown_as_text(home, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside the table's cells
    ids = []
    for m in MARKUP:
        with lmdev.init(f"run {m}", project=f"p{m}", tags=[m], config={m: m}) as run:
            run.log({f"loss{m}": 1.0, m: 2.0})
            run.event(f"event {m}")
        ids.append(run.id)
    code, out, err = cli(capsys, "runs", "list")
    assert code == 0 and "Traceback" not in err
    assert "run [/]" in out and "run [bold]" in out
    for run_id, m in zip(ids, MARKUP):
        code, out, err = cli(capsys, "runs", "show", run_id)
        assert code == 0, err
        assert f"run {m}" in out and f"event {m}" in out
    code, out, err = cli(capsys, "runs", "compare", *ids)
    assert code == 0 and "Traceback" not in err and "[/]" in out


# -- damaged rows ---------------------------------------------------------------------------------

def _damage(home, run_id, sql, *args):
    with sqlite3.connect(home / "lmdev.db") as conn:
        conn.execute(sql.replace("RID", "(SELECT rid FROM runs WHERE id = ?)"), (*args, run_id))


@pytest.mark.parametrize("sql", [
    "UPDATE runs SET config = '{not json' WHERE id = ?",
    "UPDATE runs SET config = '[1, 2]' WHERE id = ?",
    "UPDATE runs SET tags = 'nope' WHERE id = ?",
    "UPDATE runs SET start_time = 'yesterday' WHERE id = ?",
    "UPDATE runs SET command = x'00ff' WHERE id = ?",
    "UPDATE runs SET pid = 'abc' WHERE id = ?",
    "UPDATE metrics SET vals = x'0102' WHERE run = RID",
])
def test_a_damaged_run_is_reported_and_skipped_the_rest_lists(home, capsys, sql):
    with lmdev.init("good") as good:
        good.log({"loss": 1.0})
    with lmdev.init("bad") as bad:
        bad.log({"loss": 2.0})
    _damage(home, bad.id, sql)
    for argv in (("runs", "list"), ("runs", "list", "--json")):
        code, out, err = cli(capsys, *argv)
        assert code == 1 and "Traceback" not in err
        assert "good" in out and bad.id in err and "damaged" in err
    code, out, err = cli(capsys, "runs", "list", "--json")
    doc = json.loads(out)
    assert [r["name"] for r in doc["runs"]] == ["good"] and doc["damaged"][0]["id"] == bad.id
    code, _, err = cli(capsys, "runs", "show", bad.id)
    assert code == 1 and "damaged" in err
    code, _, _ = cli(capsys, "runs", "show", good.id)
    assert code == 0


@pytest.mark.parametrize("limit", ["1" + "0" * 30, "-1", "9223372036854775808", "abc", "1e3"])
def test_a_huge_or_bad_limit_is_a_usage_error(home, capsys, limit):
    with lmdev.init("x"):
        pass
    with pytest.raises(SystemExit) as exc:
        main(["runs", "list", "--limit", limit])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--limit" in err and "corrupt" not in err


def test_limit_bounds_are_checked_in_the_store_too(home):
    with lmdev.init("x"):
        pass
    with Store(home) as st:
        assert len(st.list_runs(limit=(1 << 63) - 1)) == 1
        with pytest.raises(LmdevError, match="limit"):
            st.list_runs(limit=10**30)
