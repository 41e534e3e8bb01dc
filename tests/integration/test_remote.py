"""lmdev remote and lmdev cluster against real OpenSSH servers on 127.0.0.1 (see remote_lab.py).

One lab for the module: hosts n1 and n2 (n2 behind the jump host) may import the test venv's
site-packages (torch); n3 is a plain Python with no package index, reached by an ~/.ssh/config
alias, and gets lmdev and every dependency from the bundle.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_lmdev
from tests.integration import remote_lab

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(remote_lab.can_run() is not None, reason=str(remote_lab.can_run()))]

STEPS = 200


@pytest.fixture(scope="module")
def lab():
    lab = remote_lab.start_lab()
    yield lab
    lab.stop()
    shutil.rmtree(lab.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def env(lab, tmp_path_factory):
    """The environment of the local lmdev: the lab's client HOME and a fresh local store."""
    e = lab.env(tmp_path_factory.mktemp("local") / ".lmdev")
    for name, target, extra in (
            ("n1", lab.target("n1"), ["--site-packages", lab.site_packages]),
            ("jump", lab.target("jump"), []),
            ("n2", lab.target("n2"), ["--site-packages", lab.site_packages, "--jump", "jump"]),  # a named jump host
            ("n3", "node3", [])):
        r = run_lmdev("remote", "add", name, target, "--accept-new", *extra, env=e)
        assert r.returncode == 0, r.stderr
    return e


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("proj")
    text = (ROOT / "examples" / "digits_mlp.yaml").read_text()
    text = text.replace("max_steps: 500, eval_every: 100, log_every: 10",
                        f"max_steps: {STEPS}, eval_every: 50, log_every: 5")
    text = text.replace("every: 100, keep: 3", "every: 50, keep: 2").replace("device: auto ", "device: cpu  ")
    (d / "cfg.yaml").write_text(text)
    (d / ".gitignore").write_text("ignored.bin\n")
    (d / "ignored.bin").write_bytes(b"x" * 10)
    subprocess.run(["git", "init", "-q"], cwd=d, check=True)
    return d


@pytest.fixture(scope="module")
def single20(project, tmp_path_factory) -> list[tuple[int, float]]:
    """The losses of a 20-step run of the project's config in one local process (computed once:
    the cluster and the Slurm test compare with it)."""
    return _store_losses(_local_run(project, tmp_path_factory.mktemp("single20"), 20))


@pytest.fixture(scope="module")
def login(lab, env) -> str:
    """A remote on n1 that is a "Slurm login node": stub Slurm commands in --slurm-bin."""
    r = run_lmdev("remote", "add", "login", lab.target("n1"), "--site-packages", lab.site_packages,
                  "--slurm-bin", str(lab.dir / "slurm-bin"), env=env)
    assert r.returncode == 0, r.stderr
    return "login"


def _equal_losses(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [p[0] for p in got] == [p[0] for p in want] and got
    for (_, a), (_, b) in zip(got, want):
        assert abs(a - b) <= 1e-4 * abs(b)


def _json(r: subprocess.CompletedProcess) -> object:
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def _store_losses(home: Path, key: str = "train/loss", tag: str | None = None) -> list[tuple[int, float]]:
    from lmdev.track.store import Store

    with Store(home) as s:
        runs = [r for r in s.list_runs() if tag is None or tag in r.tags]
        assert len(runs) == 1, [r.id for r in runs]
        return [(p[0], p[1]) for p in s.metrics(runs[0])[key]]


def _local_run(project: Path, tmp: Path, steps: int) -> Path:
    home = tmp / "single" / ".lmdev"
    r = run_lmdev("train", str(project / "cfg.yaml"), "--json", "--set", f"train.max_steps={steps}",
                  env={"LMDEV_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    return home


# -- add / check --------------------------------------------------------------------------------

def test_unknown_host_key_is_refused_until_accept_new(lab, env, tmp_path):
    fresh = dict(env, HOME=str(tmp_path), LMDEV_HOME=str(tmp_path / ".lmdev"))  # an empty known_hosts
    (tmp_path / ".ssh").mkdir()
    shutil.copy(lab.key, tmp_path / ".ssh" / "id_ed25519")
    r = run_lmdev("remote", "add", "again", lab.target("n1"), env=fresh)
    assert r.returncode == 2 and "unknown" in r.stderr and "--accept-new" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_lmdev("remote", "add", "again", lab.target("n1"), "--accept-new", env=fresh)
    assert r.returncode == 0, r.stderr
    assert f"[127.0.0.1]:{lab.ports['n1']}" in (tmp_path / ".ssh" / "known_hosts").read_text()
    listed = _json(run_lmdev("remote", "list", "--json", env=fresh))
    assert [x["name"] for x in listed["remotes"]] == ["again"]


def test_changed_host_key_is_refused(lab, env):
    kh = Path(env["HOME"]) / ".ssh" / "known_hosts"
    saved = kh.read_text()
    lines = saved.splitlines()
    n1 = next(i for i, line in enumerate(lines) if line.startswith(f"[127.0.0.1]:{lab.ports['n1']}"))
    n3 = next(line for line in lines if line.startswith(f"[127.0.0.1]:{lab.ports['n3']}"))
    lines[n1] = lines[n1].split(" ")[0] + " " + n3.split(" ", 1)[1]  # someone else's key
    kh.write_text("\n".join(lines) + "\n")
    try:
        r = run_lmdev("remote", "check", "n1", "--accept-new", env=env)
    finally:
        kh.write_text(saved)
    assert r.returncode == 2 and "CHANGED" in r.stderr and "ssh-keygen -R" in r.stderr


def test_connection_errors_are_one_line(lab, env, tmp_path):
    closed = remote_lab.free_port()
    r = run_lmdev("remote", "add", "dead", f"127.0.0.1:{closed}", env=env)
    assert r.returncode == 2 and "cannot reach" in r.stderr and "refused" in r.stderr
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    r = run_lmdev("remote", "add", "stranger", lab.target("n1"), "--key", str(tmp_path / "other"), env=env)
    assert r.returncode == 2 and "authentication failed" in r.stderr
    old = lab.dir / "python3.8"
    old.write_text("#!/bin/sh\necho '{\"version\": [3, 8, 18], \"machine\": \"x86_64\", \"libc\": [\"glibc\", "
                   "\"2.36\"], \"home\": \"/tmp\", \"free\": 1000000000}'\n")
    old.chmod(0o755)
    r = run_lmdev("remote", "add", "old", lab.target("n1"), "--python", str(old), env=env)
    assert r.returncode == 2 and "3.8.18" in r.stderr and "3.10" in r.stderr
    for stderr in (r.stderr,):
        assert stderr.count("\n") == 1 and "Traceback" not in stderr
    names = [x["name"] for x in _json(run_lmdev("remote", "list", "--json", env=env))["remotes"]]
    assert names == ["jump", "n1", "n2", "n3"]


def test_bootstrap_without_a_package_index(lab, env):
    first = _json(run_lmdev("remote", "check", "n3", "--json", env=env))
    assert first["bootstrapped"] is True and first["root"] == str(lab.home_of("n3") / ".lmdev-remote")
    site = lab.home_of("n3") / ".lmdev-remote" / "venv" / "lib"
    # its own venv, with every dependency from the bundle (nothing linked, nothing downloaded there)
    assert list(site.glob("python3*/site-packages/numpy")) and list(site.glob("python3*/site-packages/lmdev"))
    assert not list(site.glob("python3*/site-packages/_lmdev_linked.pth"))
    again = _json(run_lmdev("remote", "check", "n3", "--json", env=env))
    assert again["bootstrapped"] is False and again["fingerprint"] == first["fingerprint"]
    # a remote whose lmdev differs is fixed on the next connect
    installed = lab.home_of("n3") / ".lmdev-remote" / "installed.json"
    installed.write_text(json.dumps({"fingerprint": "stale"}))
    fixed = _json(run_lmdev("remote", "check", "n3", "--json", env=env))
    assert fixed["bootstrapped"] is True and fixed["fingerprint"] == first["fingerprint"]


def test_remote_doctor_json_matches_the_local_schema(env):
    import jsonschema

    schema = json.loads((ROOT / "docs" / "schemas" / "doctor.schema.json").read_text())
    r = run_lmdev("remote", "doctor", "n3", "--json", env=env)
    report = _json(r)
    jsonschema.validate(report, schema)
    assert "/home/lmdevtn3/.lmdev-remote/venv" in report["facts"]["host"]["python"]["executable"]


def test_remote_setup_from_a_bundle_without_an_index_then_the_same_from_its_index(lab, env, tmp_path):
    from lmdev.setup.installer import installed
    from tests.unit.setup.fakeindex import serve, setup_project

    assert run_lmdev("remote", "check", "n3", env=env).returncode == 0  # lmdev is there (bootstrapped)
    proj = setup_project(tmp_path)
    # this machine's indexes are the fake ones only; the remote reaches none (its PIP_INDEX_URL is dead)
    here = dict(env, PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS="", PIP_INDEX_URL="", PIP_EXTRA_INDEX_URL="",
                PIP_CONSTRAINT="", VIRTUAL_ENV="")  # and never the test venv
    doc = _json(run_lmdev("remote", "setup", "n3", "--project", str(proj), "--no-verify", "--json", env=here,
                          timeout=600))
    assert doc["source"] == "bundle" and doc["index"]["reachable"] is False and doc["bundle_bytes"] > 0
    assert doc["setup"]["environments"][0]["action"] == "from-bundle" and doc["setup"]["plan"]["python"] == "3.11"
    root = lab.home_of("n3") / ".lmdev-remote"
    have = installed(root / "venv")
    assert have["torch"] == "2.9.1+cpu" and have["torchvision"] == "0.24.0+cpu" and have["filelock"] == "3.0.0"
    assert (root / "env" / "pylock.toml").is_file() and doc["lock_digest"]
    # the remote with an index (served on 127.0.0.1) sets itself up: the same files, the same lock digest
    with serve(tmp_path) as url:
        again = _json(run_lmdev("remote", "setup", "n3", "--index-url", f"{url}/pypi/simple", "--torch-index",
                                f"{url}/torchidx/simple", "--no-verify", "--json", env=here, timeout=600))
    assert again["source"] == "index" and again["index"]["reachable"] is True and again["bundle"] is None
    assert again["setup"]["environments"][0]["action"] in ("installed", "no-op")
    assert again["lock_digest"] == doc["lock_digest"] and installed(root / "venv") == have
    # a bundle made here with `lmdev setup bundle` (the indexes are this machine's): the same again
    assert run_lmdev("setup", "--no-verify", cwd=proj, env=here).returncode == 0
    assert run_lmdev("setup", "bundle", str(tmp_path / "mine.tar"), cwd=proj, env=here).returncode == 0
    mine = _json(run_lmdev("remote", "setup", "n3", "--bundle", str(tmp_path / "mine.tar"), "--no-verify", "--json",
                           env=here, timeout=600))
    assert mine["source"] == "bundle" and mine["index"]["reachable"] is None  # not asked: a bundle in any case
    assert mine["lock_digest"] == doc["lock_digest"] and installed(root / "venv") == have
    r = run_lmdev("remote", "setup", "n3", "--bundle", str(tmp_path / "missing.tar"), env=here)
    assert r.returncode == 2 and "lmdev setup bundle" in r.stderr and "Traceback" not in r.stderr


# -- train, attach, pull ------------------------------------------------------------------------

def _read_until(proc: subprocess.Popen, needle: str, timeout: float = 120) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {needle!r} in time; got {seen[-2000:]!r}")
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"ended before {needle!r}; got {seen[-2000:]!r}")
        seen += line
    return seen


def test_train_detached_survives_a_dropped_connection_and_pulls_bit_for_bit(lab, env, project, tmp_path):
    # the remote job pauses 2 s at each of its 4 evaluations (a callback: the losses are unchanged),
    # so it cannot finish before the connection is dropped after its first loss line
    (project / "pause.py").write_text("import time\n\n\nclass Pause:\n"
                                      "    def on_eval(self, trainer, step, metrics):\n        time.sleep(2)\n")
    (project / "slow.yaml").write_text((project / "cfg.yaml").read_text() + "callbacks: [pause:Pause]\n")
    r = run_lmdev("remote", "train", "n1", str(project / "slow.yaml"), "--sync", str(project), "--detach", env=env)
    assert r.returncode == 0, r.stderr
    assert "sent 4 changed file(s) of 4" in r.stderr  # the configs, pause.py and .gitignore, not ignored.bin
    job = r.stdout.strip().splitlines()[-1]
    attach = subprocess.Popen([sys.executable, "-m", "lmdev", "remote", "attach", "n1", job], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, **env))
    try:
        _read_until(attach, " · loss ")
        for pid in lab.session_pids("n1"):  # the server side of the SSH connection goes away
            os.kill(pid, signal.SIGKILL)
        code = attach.wait(60)
    finally:
        attach.kill()
    assert code == 2 and f"lmdev remote attach n1 {job}" in attach.stderr.read()
    r = run_lmdev("remote", "attach", "n1", job, env=env)
    assert r.returncode == 0 and "finished (exit status 0)" in r.stderr, r.stderr
    first = _json(run_lmdev("remote", "pull", "n1", "--json", env=env))
    assert len(first) == 1 and first[0]["new_run"] and first[0]["points"] > 0 and first[0]["status"] == "finished"
    second = _json(run_lmdev("remote", "pull", "n1", "--checkpoints", "--json", env=env))
    assert [(x["points"], x["system"], x["events"]) for x in second] == [(0, 0, 0)]
    assert second[0]["fetched"] > 0
    pulled = _store_losses(Path(env["LMDEV_HOME"]), tag="remote:n1")
    local = _store_losses(_local_run(project, tmp_path, STEPS))
    assert len(pulled) == STEPS // 5 and pulled == local  # bit for bit


def test_ui_tunnel_serves_the_remote_dashboard_and_comes_back(lab, env):
    ui = subprocess.Popen([sys.executable, "-m", "lmdev", "remote", "ui", "n1"], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, **env))
    try:
        url = _read_until(ui, "dashboard at").split("dashboard at ")[1].split()[0]
        with urllib.request.urlopen(url + "api/runs", timeout=10) as resp:
            assert resp.status == 200
        for pid in lab.session_pids("n1"):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "api/health", timeout=3) as resp:
                    assert json.loads(resp.read())["ok"] is True
                break
            except OSError:
                assert time.monotonic() < deadline, "the tunnel did not come back"
                time.sleep(0.5)
        ui.send_signal(signal.SIGINT)
        assert ui.wait(60) == 0
    finally:
        ui.kill()
    err = ui.stderr.read()
    assert "reconnected" in err, err
    jobs = _json(run_lmdev("remote", "jobs", "n1", "--json", env=env))
    states = [j["state"] for j in jobs if j["kind"] == "ui"]
    assert states and all(s == "stopped" for s in states), jobs  # the remote dashboard is gone


# -- cluster ------------------------------------------------------------------------------------

def test_cluster_check_and_train_equal_a_single_process(lab, env, project, single20):
    port = remote_lab.free_port()
    assert run_lmdev("cluster", "create", "duo", "--hosts", "n1,n2", "--port", str(port), env=env).returncode == 0
    rep = _json(run_lmdev("cluster", "check", "duo", "--json", "--mbytes", "4", env=env))
    assert rep["ok"], rep["findings"]
    assert rep["allreduce"]["nodes"] == 2 and rep["allreduce"]["busbw_gbps"] > 0 and rep["allreduce"]["sum_ok"]
    steps = 20
    r = run_lmdev("train", str(project / "cfg.yaml"), "--on", "duo", "--set", f"train.max_steps={steps}", env=env)
    assert r.returncode == 0, r.stderr
    run_id = r.stderr.split("run ")[-1].split()[0]
    logs = Path(env["LMDEV_HOME"]) / "runs" / run_id / "logs"
    assert (logs / "n1.log").is_file() and (logs / "n2.log").is_file()
    from lmdev.track.store import Store

    with Store(env["LMDEV_HOME"]) as s:
        run = s.get_run(run_id)
        cluster_losses = [(p[0], p[1]) for p in s.metrics(run)["train/loss"]]
    assert cluster_losses[-1][0] == steps
    _equal_losses(cluster_losses, single20)
    # a node whose environment lock differs is named, with its fix
    env_dir = lab.home_of("n2") / ".lmdev-remote" / "env"
    (env_dir / "pylock.toml").write_text('lock-version = "1.0"\n\n[[packages]]\nname = "torch"\n'
                                         'version = "2.0.0"\n')
    try:
        bad = run_lmdev("cluster", "check", "duo", "--mbytes", "1", env=env)
    finally:
        (env_dir / "pylock.toml").unlink()
    assert bad.returncode == 1, bad.stdout + bad.stderr
    line = next(x for x in bad.stdout.splitlines() if "same environment" in x)
    assert "FAIL" in line and "n2:" in line and "while n1 has no lock" in line
    assert "lmdev remote setup n2" in bad.stdout


# -- Slurm (stub commands on the remote that run the job there and record its states) ---------

def test_slurm_submit_follow_and_cancel(lab, env, project, login):
    r = run_lmdev("remote", "train", "login", str(project / "cfg.yaml"), "--sync", str(project), "--slurm",
                  "--sbatch", "time=00:10:00", "--set", "train.max_steps=20", env=env)
    assert r.returncode == 0 and "submitted to Slurm" in r.stderr, r.stderr
    assert "finished (exit status 0)" in r.stderr
    stub = lab.home_of("n1") / ".slurm-stub"
    first = stub.joinpath("log").read_text().split()
    jid = first[0]
    assert [s for i, s in zip(first[::2], first[1::2]) if i == jid] == ["PENDING", "RUNNING", "COMPLETED"]
    script = next((lab.home_of("n1") / ".lmdev-remote" / "jobs").glob("*/job.sbatch")).read_text()
    assert "#SBATCH --time=00:10:00" in script and "LMDEV_HOME=" in script
    r = run_lmdev("remote", "train", "login", str(project / "cfg.yaml"), "--sync", str(project), "--slurm",
                  "--detach", "--set", "train.max_steps=100000", env=env)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 60
    while "RUNNING" not in stub.joinpath("log").read_text().split(jid, 1)[-1]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    state = run_lmdev("remote", "stop", "login", job, env=env)
    assert state.returncode == 0 and ": stopped" in state.stdout, state.stdout + state.stderr
    assert stub.joinpath("log").read_text().strip().endswith("CANCELLED")


def test_train_on_a_slurm_login_node_across_two_nodes_equals_a_single_process(lab, env, project, login, single20):
    r = run_lmdev("train", str(project / "cfg.yaml"), "--on", login, "--slurm", "--sbatch", "nodes=2",
                  "--set", "train.max_steps=20", env=env)
    assert r.returncode == 0 and "submitted to Slurm" in r.stderr, r.stderr
    job = r.stderr.split("submitted to Slurm job ")[1].split()[0]
    job_dir = lab.home_of("n1") / ".lmdev-remote" / "jobs" / job
    script = (job_dir / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "srun" in script and "--node-rank" in script
    jid = json.loads((job_dir / "job.json").read_text())["slurm_id"]
    log = [line.split() for line in (lab.home_of("n1") / ".slurm-stub" / "log").read_text().splitlines()]
    assert [x[1] for x in log if x[0] == jid] == ["PENDING", "RUNNING", "srun-x2", "COMPLETED"]
    run_id = r.stderr.split(", run ")[-1].split()[0]
    from lmdev.track.store import Store

    with Store(env["LMDEV_HOME"]) as s:  # pulled into the local store
        losses = [(p[0], p[1]) for p in s.metrics(s.get_run(run_id))["train/loss"]]
    _equal_losses(losses, single20)
    # Slurm places jobs itself: a cluster of SSH hosts is not a Slurm target; --slurm needs --on
    assert run_lmdev("cluster", "create", "pair", "--hosts", "n1,n3", env=env).returncode == 0
    r = run_lmdev("train", str(project / "cfg.yaml"), "--on", "pair", "--slurm", env=env)
    assert r.returncode == 2 and "--sbatch nodes=2" in r.stderr
    r = run_lmdev("train", str(project / "cfg.yaml"), "--slurm", env=env)
    assert r.returncode == 2 and "--on LOGIN" in r.stderr
