"""`lmdev remote` overheads on loopback SSH, each beside its anchor in the same run.

1. `remote doctor` over local doctor: `lmdev doctor --json` run through a warm SSH connection
   (connected, lmdev checked) against the same command run locally, alternating; budget: under
   1 s added. The cold CLI (`lmdev remote doctor NAME --json`, connect + version check included)
   is printed too.
2. `remote pull` throughput in metric points per second: a run of --points points logged on the
   remote, pulled into an empty local store; and the local store's own read of the same run.
3. All-reduce bandwidth: `lmdev cluster check`'s gloo all-reduce across two SSH "nodes" against
   the same all-reduce in a plain torch.distributed script (two local processes).
4. `remote setup NAME --bundle TAR` against the same bundle installed locally (`lmdev setup
   --from-bundle TAR`), both into an environment that already holds it (small generated wheels:
   the overhead, not the download); and the first bootstrap of a bare host (no anchor).

Needs root (the lab of tests/integration/remote_lab.py: real sshd servers on 127.0.0.1).

    .venv/bin/python benchmarks/remote_overhead.py [--runs 5] [--points 200000] [--mbytes 16]
                                                   [--only doctor,pull,allreduce,setup]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BUDGET_S = 1.0

_PLAIN_ALLREDUCE = """
import sys, time, torch, torch.distributed as dist
rank, port, mb, iters = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
x = torch.ones(int(mb * 1e6 / 4))
dist.all_reduce(x); dist.barrier()
t0 = time.perf_counter()
for _ in range(iters):
    dist.all_reduce(x)
dt = (time.perf_counter() - t0) / iters
if rank == 0:
    print(x.numel() * 4 / dt / 1e9 * 2 * (2 - 1) / 2)
dist.destroy_process_group()
"""


def lmdev(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmdev", *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), check=False)


def doctor_overhead(env: dict[str, str], runs: int) -> None:
    from lmdev.remote import ops

    os.environ.update(env)
    local, warm, cold = [], [], []
    with ops.session("n1") as (conn, renv):
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lmdev", "doctor", "--json"], capture_output=True, check=False)
            local.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = ops.lmdev_on(conn, renv, ["doctor", "--json"])
            warm.append(time.perf_counter() - t0)
            assert r.code in (0, 1), r.stderr
    for _ in range(runs):
        t0 = time.perf_counter()
        lmdev(env, "remote", "doctor", "n1", "--json")
        cold.append(time.perf_counter() - t0)
    lm, wm, cm = (statistics.median(x) for x in (local, warm, cold))
    print(f"doctor --json, local:                      median {lm * 1000:7.0f} ms")
    print(f"doctor --json, warm SSH connection:        median {wm * 1000:7.0f} ms  (+{(wm - lm) * 1000:.0f} ms, "
          f"budget +{BUDGET_S * 1000:.0f} ms: {'met' if wm - lm < BUDGET_S else 'MISSED'})")
    print(f"lmdev remote doctor n1 --json (cold CLI):  median {cm * 1000:7.0f} ms  (+{(cm - lm) * 1000:.0f} ms)")


def pull_throughput(env: dict[str, str], points: int, tmp: Path) -> None:
    from lmdev.remote import ops
    from lmdev.track.store import Store

    os.environ.update(env)
    keys = 4
    script = (f"import lmdev\nrun = lmdev.init('bench', telemetry=False)\n"
              f"for s in range({points // keys}):\n    run.log({{f'k{{i}}': s * 0.5 + i for i in range({keys})}}, step=s)\n"
              f"run.finish()\n")
    with ops.session("n1") as (conn, renv):
        r = conn.run(f"cd && LMDEV_HOME={renv.root}/home {renv.python} -", input=script, timeout=600)
        assert r.code == 0, r.stderr
        local_home = tmp / "pull-store"
        os.environ["LMDEV_HOME"] = str(local_home)
        t0 = time.perf_counter()
        res = ops.pull(conn, renv, [])
        dt = time.perf_counter() - t0
    n = sum(x.points for x in res)
    with Store(local_home) as s:
        run = next(r for r in s.list_runs() if r.name == "bench")
        t0 = time.perf_counter()
        got = sum(len(v) for v in s.metrics(run).values())
        read = time.perf_counter() - t0
    print(f"remote pull: {n:,} points in {dt:.2f} s = {n / dt:,.0f} points/s "
          f"(anchor: the local store reads them at {got / read:,.0f} points/s; ratio {dt / read:.1f}x)")


def allreduce(env: dict[str, str], mbytes: float) -> None:
    from tests.integration.remote_lab import free_port

    port = free_port()
    lmdev(env, "cluster", "create", "bench", "--hosts", "n1,n2", "--port", str(port))
    r = lmdev(env, "cluster", "check", "bench", "--json", "--mbytes", str(mbytes))
    rep = json.loads(r.stdout)
    ours = rep["allreduce"]["busbw_gbps"] if rep.get("allreduce") else float("nan")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _PLAIN_ALLREDUCE, str(rank), str(port), str(mbytes), "5"],
                              stdout=subprocess.PIPE, text=True) for rank in (0, 1)]
    out = [p.communicate()[0] for p in procs]
    plain = float(out[0].strip())
    print(f"all-reduce {mbytes:g} MB, 2 nodes, gloo: cluster check {ours:.3f} GB/s bus bandwidth; "
          f"plain torch.distributed script {plain:.3f} GB/s (ratio {ours / plain:.2f})")


def setup_overhead(env: dict[str, str], tmp: Path, runs: int, target: str) -> None:
    from tests.unit.setup.fakeindex import setup_project

    t0 = time.perf_counter()
    r = lmdev(env, "remote", "add", "n3", target, "--accept-new")
    assert r.returncode == 0, r.stderr
    assert lmdev(env, "remote", "check", "n3").returncode == 0, "bootstrap failed"
    print(f"first bootstrap of a bare host (add + check: lmdev's wheel and its dependencies' bundle over SFTP, "
          f"installed by uv there): {time.perf_counter() - t0:.1f} s")
    iso = dict(env, PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS="", PIP_INDEX_URL="", PIP_EXTRA_INDEX_URL="",
               PIP_CONSTRAINT="", VIRTUAL_ENV="")
    base = tmp / "setup"
    proj = setup_project(base)
    tar = base / "bundle.tar"
    for args in (["setup", "--no-verify"], ["setup", "bundle", str(tar)]):
        r = subprocess.run([sys.executable, "-m", "lmdev", *args], cwd=proj, env=dict(os.environ, **iso),
                           capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
    here, there = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "lmdev", "setup", "--from-bundle", str(tar), "--no-verify",
                            "--venv", str(base / "v")], cwd=proj, env=dict(os.environ, **iso), capture_output=True,
                           text=True, check=False)
        here.append(time.perf_counter() - t0)
        assert r.returncode == 0, r.stderr
        t0 = time.perf_counter()
        r = lmdev(iso, "remote", "setup", "n3", "--bundle", str(tar), "--no-verify")
        there.append(time.perf_counter() - t0)
        assert r.returncode == 0, r.stderr
    loc, rem = statistics.median(here[1:] or here), statistics.median(there[1:] or there)
    print(f"remote setup --bundle (median of {max(runs - 1, 1)} after the first): {rem * 1000:,.0f} ms; "
          f"local setup --from-bundle of the same bundle: {loc * 1000:,.0f} ms; added {(rem - loc) * 1000:+,.0f} ms "
          f"(ratio {rem / loc:.2f})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--points", type=int, default=200_000)
    p.add_argument("--mbytes", type=float, default=16.0)
    p.add_argument("--only", default="doctor,pull,allreduce,setup", help="comma-separated parts to run")
    args = p.parse_args()
    only = set(args.only.split(","))
    from tests.integration import remote_lab

    why = remote_lab.can_run()
    if why:
        print(f"skipped: {why}")
        return 0
    lab = remote_lab.start_lab()
    tmp = Path(tempfile.mkdtemp(prefix="lmdev-bench-remote-"))
    try:
        env = lab.env(tmp / ".lmdev")
        env["XDG_CACHE_HOME"] = str(Path("~/.cache").expanduser())  # reuse the bundle cache
        for name, extra in [(n, x) for n, x in (("n1", []), ("n2", ["--jump", lab.target("jump")]))
                            if only - {"setup"}]:
            r = lmdev(env, "remote", "add", name, lab.target(name), "--accept-new", "--site-packages",
                      lab.site_packages, *extra)
            assert r.returncode == 0, r.stderr
            assert lmdev(env, "remote", "check", name).returncode == 0
        if "doctor" in only:
            doctor_overhead(env, args.runs)
        if "pull" in only:
            pull_throughput(env, args.points, tmp)
        if "allreduce" in only:
            allreduce(env, args.mbytes)
        if "setup" in only:
            setup_overhead(env, tmp, args.runs, lab.target("n3"))
    finally:
        lab.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(lab.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
