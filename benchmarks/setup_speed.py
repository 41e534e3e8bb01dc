"""`lmdev setup` speed, side by side with the anchors, on generated wheels from a local index.

    PYTHONPATH=src python benchmarks/setup_speed.py [--packages 30] [--repeat 3]

Measures (median of --repeat runs, warm installer caches, Python's bytecode cache on as for a user):
  - the plan alone (doctor's facts + the planner, in process) and `lmdev setup --dry-run` (CLI);
  - a no-op `lmdev setup` on a satisfied environment (CLI), beside `uv pip install -r` and
    `uv pip sync pylock.toml` on the same satisfied environment;
  - installing the same package set into a fresh venv from the same file:// index: `pip install`,
    `uv pip install`, `lmdev setup --no-verify` with no lock yet (resolve, pin check, lock, install),
    and `lmdev setup --no-verify` with the lock there (installed as is) beside `uv pip sync pylock.toml`.
Prints each time and the ratios against the budgets (plan < 0.3 s, no-op < 1 s, <= 0.5x pip, <= 1.2x uv).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lmdev.setup.installer import installer_env, uv_binary
from tests.unit.setup.fakeindex import make_wheel, write_index

ENV = {**installer_env(), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
ENV.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed lmdev has its bytecode cached


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=ENV, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return took


def build(root: Path, n: int) -> tuple[Path, Path]:
    """A torch index (torch, torchvision) and a general index with n small packages torch needs."""
    deps = [f"dep{i:03d}" for i in range(n)]
    wheels = [make_wheel(root / "b", d, "1.0.0", [deps[i + 1]] if i + 1 < n and i % 3 == 0 else [])
              for i, d in enumerate(deps)]
    wheels.append(make_wheel(root / "b", "filelock", "3.0.0"))
    general = write_index(root / "pypi", wheels)
    # torch requires the generated packages, so every installer installs the same set
    tidx = write_index(root / "torchidx", [
        make_wheel(root / "t", "torch", "2.9.1+cpu", ["filelock", *deps]),
        make_wheel(root / "t", "torchvision", "0.24.0+cpu", ["torch==2.9.1+cpu"])])
    (root / "reqs.txt").write_text("torch>=2.9.1\ntorchvision\n")
    return tidx, general


def fresh_venv(root: Path, name: str) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([uv_binary(), "venv", "--quiet", "--no-config", str(path)], check=True, env=ENV)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lmdev-setup-bench-"))
    tidx, general = build(root, args.packages)
    proj = root / "proj"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(f'[tool.lmdev.setup]\ntorch-index = "{tidx.as_uri()}"\n'
                                         f'index-url = "{general.as_uri()}"\n')
    lm = [sys.executable, "-m", "lmdev"]
    reqs = root / "reqs.txt"
    idx = ["--index-url", general.as_uri(), "--extra-index-url", tidx.as_uri()]

    from lmdev.probe.collect import collect
    from lmdev.setup.plan import make_plan
    from lmdev.setup.profile import profile_from_facts

    plan_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        make_plan(profile_from_facts(collect()), ["torch"])
        plan_times.append(time.perf_counter() - t0)
    dry = [timed([*lm, "setup", "--dry-run"], proj) for _ in range(args.repeat)]
    floor = [timed([*lm, "--help"], proj) for _ in range(args.repeat)]  # any lmdev command's start-up

    # warm every cache once
    timed([sys.executable, "-m", "pip", "--python", str(fresh_venv(root, "w1") / "bin/python"), "install", "-q",
           "-r", str(reqs), *idx], root)
    timed([uv_binary(), "pip", "install", "-q", "--no-config", "--python", str(fresh_venv(root, "w2") / "bin/python"),
           "-r", str(reqs), "--default-index", general.as_uri(), "--index", tidx.as_uri()], root)
    sys.stderr.write("warm\n")
    t: dict[str, list[float]] = {k: [] for k in ("pip", "uv", "lm", "lm_lock", "uv_sync", "noop", "noop_uv",
                                                  "noop_uv_sync")}
    uv_py = [uv_binary(), "pip", "install", "-q", "--no-config", "-r", str(reqs), "--default-index",
             general.as_uri(), "--index", tidx.as_uri(), "--python"]
    sync = [uv_binary(), "pip", "sync", "-q", "--no-config", "--preview-features", "pylock", str(proj / "pylock.toml"),
            "--python"]
    for _ in range(args.repeat):
        v = fresh_venv(root, "pip")
        t["pip"].append(timed([sys.executable, "-m", "pip", "--python", str(v / "bin/python"), "install", "-q",
                               "-r", str(reqs), *idx], root))
        v = fresh_venv(root, "uv")
        t["uv"].append(timed([*uv_py, str(v / "bin/python")], root))
        v = fresh_venv(root, "lm")
        (proj / "pylock.toml").unlink(missing_ok=True)
        t["lm"].append(timed([*lm, "setup", "torch", "--venv", str(v), "--no-verify"], proj))
        t["noop"].append(timed([*lm, "setup", "--venv", str(v), "--no-verify"], proj))
        t["noop_uv"].append(timed([*uv_py, str(v / "bin/python")], root))
        t["noop_uv_sync"].append(timed([*sync, str(v / "bin/python")], root))
        v = fresh_venv(root, "lm2")
        t["lm_lock"].append(timed([*lm, "setup", "torch", "--venv", str(v), "--no-verify"], proj))
        v = fresh_venv(root, "uvsync")
        t["uv_sync"].append(timed([*sync, str(v / "bin/python")], root))
    m = {k: statistics.median(v) for k, v in t.items()}
    print(f"packages: torch, torchvision, filelock + {args.packages} generated, the same set for all")
    print(f"plan alone (facts + planner, in process): {statistics.median(plan_times):.3f} s   budget < 0.3 s")
    print(f"lmdev --help (the CLI's start-up floor): {statistics.median(floor):.3f} s")
    print(f"lmdev setup --dry-run (CLI, incl. interpreter start): {statistics.median(dry):.3f} s")
    print(f"no-op on a satisfied environment: lmdev setup {m['noop']:.3f} s (budget < 1 s); "
          f"uv pip install -r {m['noop_uv']:.3f} s; uv pip sync pylock.toml {m['noop_uv_sync']:.3f} s")
    print(f"install into a fresh venv: pip {m['pip']:.3f} s, uv pip install {m['uv']:.3f} s, "
          f"lmdev (no lock: resolve + pin check + lock + install) {m['lm']:.3f} s")
    print(f"lmdev / pip = {m['lm'] / m['pip']:.2f}x (budget <= 0.5x); lmdev / uv = {m['lm'] / m['uv']:.2f}x "
          "(budget <= 1.2x)")
    print(f"from the lock: lmdev {m['lm_lock']:.3f} s, uv pip sync pylock.toml {m['uv_sync']:.3f} s: "
          f"{m['lm_lock'] / m['uv_sync']:.2f}x; lmdev from the lock / uv pip install = {m['lm_lock'] / m['uv']:.2f}x")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
