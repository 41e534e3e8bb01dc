"""A process killed with SIGKILL: its run is found killed; what was flushed is all there."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import run_lmdev

LOGGER = textwrap.dedent("""
    import sys, time, lmdev
    run = lmdev.init("doomed", flush_interval=0.1, telemetry=False)
    print(run.id, flush=True)
    i = 0
    while True:
        run.log({"i": i}, step=i)
        i += 1
        if i % 100 == 0:
            time.sleep(0.001)
""")


def _count(db, run_id):
    try:
        with sqlite3.connect(db, timeout=30) as c:
            return c.execute("SELECT coalesce(sum(m.n), 0) FROM metrics m JOIN runs r "
                             "ON r.rid = m.run WHERE r.id = ?", (run_id,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_marks_the_run_killed_and_keeps_what_was_flushed(tmp_path):
    script = tmp_path / "doomed.py"
    script.write_text(LOGGER)
    home = tmp_path / "home"
    env = dict(os.environ, LMDEV_HOME=str(home))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    db = home / "lmdev.db"
    # wait until the writer has flushed on its own, twice (no finish(), no exit)
    seen = []
    deadline = time.monotonic() + 120
    while len(set(seen)) < 3 and time.monotonic() < deadline:
        seen.append(_count(db, run_id))
        time.sleep(0.05)
    assert len(set(seen)) >= 3, "the writer did not flush periodically"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = json.loads(run_lmdev("runs", "show", run_id, "--json", env={"LMDEV_HOME": str(home)}).stdout)
    assert before["status"] == "killed"  # reaped by the command: its process is gone
    steps = [p[0] for p in before["metrics"]["i"]]
    assert steps == list(range(len(steps))) and len(steps) >= max(seen)  # a gap-free prefix
    assert [p[1] for p in before["metrics"]["i"]] == [float(s) for s in steps]
    assert any("killed" in e["message"] for e in before["events"])
    assert before["end_time"] is not None


def test_lmdev_run_killed_by_a_signal_is_recorded_killed(tmp_path):
    script = tmp_path / "suicide.py"
    script.write_text("import os, signal, lmdev\nlmdev.log({'x': 1.0})\nos.kill(os.getpid(), signal.SIGKILL)\n")
    res = run_lmdev("run", "--no-telemetry", str(script), env={"LMDEV_HOME": str(tmp_path / "home")})
    assert res.returncode == 128 + signal.SIGKILL
    doc = json.loads(run_lmdev("runs", "show", "suicide", "--json",
                               env={"LMDEV_HOME": str(tmp_path / "home")}).stdout)
    assert doc["status"] == "killed" and doc["exit_code"] == -signal.SIGKILL
