"""`lmdev run SCRIPT.py`: a plain script as a run (metrics, output, exit status), and a full disk."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import run_lmdev

PLAIN = textwrap.dedent("""
    import sys
    import lmdev  # no lmdev.init(): `lmdev run` made the run active
    print("hello from", sys.argv[1:], flush=True)
    print("a warning line", file=sys.stderr)
    for i in range(50):
        lmdev.log({"loss": 1.0 / (i + 1)}, step=i)
    sys.exit(int(sys.argv[1]))
""")


def show(home, ref):
    res = run_lmdev("runs", "show", ref, "--json", "--system", env={"LMDEV_HOME": str(home)})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("code, status", [(0, "finished"), (3, "failed")])
def test_lmdev_run_records_a_plain_script(tmp_path, code, status):
    script = tmp_path / "plain.py"
    script.write_text(PLAIN)
    home = tmp_path / "home"
    res = run_lmdev("run", "--name", "plain", "--telemetry-interval", "0.1", str(script), str(code),
                    "--flag", env={"LMDEV_HOME": str(home)})
    assert res.returncode == code
    assert "hello from ['%d', '--flag']" % code in res.stdout  # teed to the terminal
    assert "a warning line" in res.stderr
    doc = show(home, "plain")
    assert doc["status"] == status and doc["exit_code"] == code
    assert doc["config"]["args"] == [str(code), "--flag"]
    assert [p[0] for p in doc["metrics"]["loss"]] == list(range(50))
    logs = {os.path.basename(a["path"]): a for a in doc["artifacts"]}
    assert set(logs) == {"stdout.log", "stderr.log"}
    assert "hello from" in open(logs["stdout.log"]["path"]).read()
    assert "a warning line" in open(logs["stderr.log"]["path"]).read()
    assert any(k.startswith("process/") for k in doc["system"])  # the child's RSS and CPU
    if code:
        assert any(e["level"] == "error" and "status 3" in e["message"] for e in doc["events"])


def test_lmdev_run_missing_script_is_a_usage_error(tmp_path):
    res = run_lmdev("run", str(tmp_path / "nope.py"), env={"LMDEV_HOME": str(tmp_path / "home")})
    assert res.returncode == 2 and "no such script" in res.stderr and "Traceback" not in res.stderr


FULL_DISK = textwrap.dedent("""
    import resource, signal, warnings, lmdev
    run = lmdev.init("full", flush_interval=0.05, telemetry=False)
    run.log({"warmup": 1.0}, step=0)
    run.flush()
    # from now on no file may grow past its current size (+ a little): the disk is "full"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = 256 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    total = 0.0
    for step in range(200_000):  # "training" goes on
        total += step
        run.log({"a": float(step), "b": 2.0, "c": 3.0}, step=step)
        if step % 20_000 == 0:
            run.flush()
    run.finish()
    print("training finished", total)
""")


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_a_full_disk_does_not_stop_training(tmp_path):
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    env = dict(os.environ, LMDEV_HOME=str(tmp_path / "home"))
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "training finished" in res.stdout
    assert res.stderr.count("LmdevWarning") == 1, res.stderr  # one warning, however many failures
    assert "cannot write to" in res.stderr
