"""Several processes writing to one store at once, while another reads: nothing lost, no locks."""

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import run_lmdev

WRITER = textwrap.dedent("""
    import sys, lmdev
    name, n, shared = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "shared"
    run = lmdev.init(name, flush_interval=0.02, telemetry=True, telemetry_interval=0.05,
                     log_all_ranks=shared)
    for i in range(n):
        run.log({"loss": 1.0 / (i + 1), "step_value": i, f"{name}/only": 0.5}, step=i)
        if i % 500 == 0:
            run.event(f"at {i}")
    run.finish()
    print("ok", run.id)
""")


def test_processes_write_one_store_at_once(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ, LMDEV_HOME=str(tmp_path / "home"))
    env.pop("LMDEV_RUN_ID", None)
    n, procs = 20_000, []
    for k in range(4):
        procs.append(subprocess.Popen([sys.executable, str(script), f"w{k}", str(n), "own"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # two more processes write into one shared run, as the ranks of one launch do
    shared_env = dict(env, LMDEV_RUN_ID="sharedrun001")
    for k in range(2):
        procs.append(subprocess.Popen([sys.executable, str(script), f"s{k}", str(n // 2), "shared"],
                                      env=shared_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    listings = 0
    while any(p.poll() is None for p in procs):  # read while they write
        res = run_lmdev("runs", "list", "--json", env={"LMDEV_HOME": str(tmp_path / "home")})
        assert res.returncode == 0, res.stderr
        listings += 1
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        assert "locked" not in err and "Warning" not in err, err
    assert listings >= 1
    res = run_lmdev("runs", "list", "--json", env={"LMDEV_HOME": str(tmp_path / "home")})
    runs = {r["name"]: r for r in json.loads(res.stdout)["runs"]}
    assert {f"w{k}" for k in range(4)} <= set(runs)
    for k in range(4):
        shown = json.loads(run_lmdev("runs", "show", runs[f"w{k}"]["id"], "--json", "--system",
                                     env={"LMDEV_HOME": str(tmp_path / "home")}).stdout)
        assert shown["status"] == "finished"
        assert [p[0] for p in shown["metrics"]["loss"]] == list(range(n))
        assert len(shown["metrics"][f"w{k}/only"]) == n
        assert len(shown["events"]) == n // 500
        assert shown["system"]  # telemetry from every process
    shared = json.loads(run_lmdev("runs", "show", "sharedrun001", "--json",
                                  env={"LMDEV_HOME": str(tmp_path / "home")}).stdout)
    assert len(shared["metrics"]["loss"]) == 2 * (n // 2)
    assert len(shared["metrics"]["s0/only"]) == len(shared["metrics"]["s1/only"]) == n // 2
