"""`lmdev setup` speed, side by side with the anchors (`uv pip install`, `pip install`), in one run.

    PYTHONPATH=src python benchmarks/setup_speed.py [--repeat 5] [--real-repeat 3] [--packages 30]
                                                    [--no-real] [--real-indexes] [--real-file-index]

Two package sets, each installed by every tool from the same sources with the same arguments:
  - tiny: generated wheels (torch, torchvision, filelock and --packages small packages torch requires)
    from file:// indexes;
  - real: the real PyTorch CPU wheel and its torchvision from this machine's package source, found and
    served exactly as tests/integration/test_setup_real.py does (a PEP 503 index on http://127.0.0.1 as
    the torch index), everything else (numpy, sympy, ...) from the machine's own pip configuration
    (its local indexes and find-links folder); with --real-indexes the same once more without the
    find-links folder (which here holds the torch wheel too: a hashed lock has uv hash it each resolve).
For each set (medians of the repeats; warm installer caches, each install into a fresh venv made by
`uv venv`; Python's bytecode cache on, as for an installed lmdev):
  - install: `pip install`, `uv pip install`, `lmdev setup --no-verify` with no lock yet (resolve, pin
    check, lock, install) and from the lock (beside `uv pip sync pylock.toml`);
  - a no-op `lmdev setup` on the satisfied environment, beside uv's no-op on it;
  - the plan alone: `lmdev setup --dry-run --json` (CLI) and facts + planner in process.
Prints the ratios against the budgets (plan < 0.3 s, no-op < 1 s, <= 0.5x pip, <= 1.2x uv).
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lmdev.setup.config import load_sources
from lmdev.setup.installer import installer_env, uv_binary
from tests.integration.test_setup_real import local_index, real_torch_pair
from tests.integration.test_setup_real import torch_index as real_torch_index
from tests.unit.setup.fakeindex import make_wheel, serve, write_index

ENV = {**installer_env(), "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "NO_COLOR": "1"}
ENV.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed lmdev has its bytecode cached
LM = [sys.executable, "-m", "lmdev"]


@dataclass
class Case:
    """One package set: a project whose [tool.lmdev.setup] names every source, and the same
    sources as installer arguments for the anchors."""

    name: str
    label: str
    root: Path
    proj: Path
    reqs: Path = field(init=False)
    uv_src: list[str] = field(default_factory=list)
    pip_src: list[str] = field(default_factory=list)

    def prepare(self) -> None:
        plan = json.loads(run([*LM, "setup", "--dry-run", "--json"], self.proj).stdout)
        specs = [r["spec"] for e in plan["environments"] for r in e["requirements"]]
        pinned = next(r["pinned_index"] for e in plan["environments"] for r in e["requirements"])
        self.reqs = self.root / f"{self.name}-reqs.txt"
        self.reqs.write_text("\n".join(specs) + "\n")
        sources = load_sources(self.proj, environ=ENV).with_torch_index(pinned)
        self.uv_src, self.pip_src = sources.uv_args(), sources.pip_args()


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return proc


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    run(cmd, cwd)
    return time.perf_counter() - t0


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def project(root: Path, name: str, torch_idx: str, index: str, extras: list[str], links: list[str]) -> Path:
    proj = root / f"{name}-proj"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(
        f'[tool.lmdev.setup]\ntorch-index = "{torch_idx}"\nindex-url = "{index}"\n'
        f"extra-index-urls = {toml_list(extras)}\nfind-links = {toml_list(links)}\n")
    return proj


def tiny_case(root: Path, n: int) -> Case:
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
    return Case("tiny", f"tiny: torch, torchvision, filelock + {n} generated packages", root,
                project(root, "tiny", tidx.as_uri(), general.as_uri(), [], []))


@dataclass
class RealSources:
    """The real torch CPU wheel and its torchvision, and this machine's own package sources."""

    torch: Path
    torchvision: Path
    index: str
    extras: list[str]
    find_links: list[str]

    @staticmethod
    def find(key: str) -> RealSources | None:
        try:
            torch, tv = real_torch_pair()
            index = local_index()
        except pytest.skip.Exception as exc:
            sys.stderr.write(f"{key} set skipped: {exc}\n")
            return None
        machine = load_sources(Path.cwd(), environ=os.environ)
        return RealSources(torch, tv, index, [u for u in machine.extra_index_urls if u != index], machine.find_links)

    def label(self, key: str, where: str) -> str:
        return f"{key}: {self.torch.name}, {self.torchvision.name} and their requirements; {where}"


@contextmanager
def real_case(root: Path, find_links: bool = True) -> Iterator[Case | None]:
    """The real torch CPU wheel and its torchvision on an http://127.0.0.1 torch index; the rest from
    this machine's local indexes and (``find_links``) its find-links folders, as the machine's pip
    configuration has them (None where the machine has no such wheel)."""
    key = "real" if find_links else "real-indexes"
    real = RealSources.find(key)
    if real is None:
        yield None
        return
    links = real.find_links if find_links else []
    label = real.label(key, f"find-links {', '.join(links)} too" if links else "indexes only (no find-links folder)")
    with serve(real_torch_index(root / key, [real.torch, real.torchvision])) as base:
        yield Case(key, label, root, project(root, key, f"{base}/simple", real.index, real.extras, links))


def real_file_case(root: Path) -> Case | None:
    """The real set with the torch index as a file:// folder and no find-links folder: every source
    local, no HTTP server in the timing (the test server of ``real_case`` answers uv's 404 queries for
    every non-torch project, and some of them stall about a second)."""
    real = RealSources.find("real-file")
    if real is None:
        return None
    simple = real_torch_index(root / "real-file", [real.torch, real.torchvision]) / "simple"
    return Case("real-file", real.label("real-file", "the torch index a file:// folder, indexes only"), root,
                project(root, "real-file", simple.as_uri(), real.index, real.extras, []))


def fresh_venv(root: Path, name: str) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([uv_binary(), "venv", "--quiet", "--no-config", str(path)], check=True, env=ENV)
    return path


def measure(case: Case, repeat: int, pip: bool = True) -> dict[str, float]:
    """Medians (seconds) of every installer on this package set (``pip``: pip's install too)."""
    case.prepare()
    root, proj = case.root, case.proj
    lock = proj / "pylock.toml"
    uv = [uv_binary(), "pip", "install", "-q", "--no-config", "-r", str(case.reqs), *case.uv_src, "--python"]
    sync = [uv_binary(), "pip", "sync", "-q", "--no-config", "--preview-features", "pylock", str(lock), "--python"]

    def py(v: Path) -> str:
        return str(v / "bin" / "python")

    def pip_cmd(v: Path) -> list[str]:
        return [sys.executable, "-m", "pip", "--python", py(v), "install", "-q", "-r", str(case.reqs), *case.pip_src]

    if pip:  # warm every cache once
        timed(pip_cmd(fresh_venv(root, "warm-pip")), root)
    timed([*uv, py(fresh_venv(root, "warm-uv"))], root)
    timed([*LM, "setup", "--venv", str(fresh_venv(root, "warm-lm")), "--no-verify"], proj)  # files by the lock's URLs
    for name in ("warm-pip", "warm-uv", "warm-lm"):
        shutil.rmtree(root / name, ignore_errors=True)
    t: dict[str, list[float]] = {k: [] for k in ("pip", "uv", "lm", "lm_lock", "uv_sync", "noop", "noop_uv",
                                                  "noop_uv_sync", "dry")}
    for _ in range(repeat):
        if pip:
            t["pip"].append(timed(pip_cmd(fresh_venv(root, "v-pip")), root))
        v = fresh_venv(root, "v-uv")
        t["uv"].append(timed([*uv, py(v)], root))
        v = fresh_venv(root, "v-lm")
        lock.unlink(missing_ok=True)
        t["lm"].append(timed([*LM, "setup", "--venv", str(v), "--no-verify"], proj))
        t["noop"].append(timed([*LM, "setup", "--venv", str(v), "--no-verify"], proj))
        t["noop_uv"].append(timed([*uv, py(v)], root))
        t["noop_uv_sync"].append(timed([*sync, py(v)], root))
        t["dry"].append(timed([*LM, "setup", "--dry-run", "--json"], proj))
        v = fresh_venv(root, "v-lm2")
        t["lm_lock"].append(timed([*LM, "setup", "--venv", str(v), "--no-verify"], proj))
        v = fresh_venv(root, "v-uvsync")
        t["uv_sync"].append(timed([*sync, py(v)], root))
        for name in ("v-pip", "v-uv", "v-lm", "v-lm2", "v-uvsync"):
            shutil.rmtree(root / name, ignore_errors=True)
    return {k: statistics.median(v) for k, v in t.items() if v}


def plan_in_process(repeat: int) -> float:
    from lmdev.setup.engine import machine_facts
    from lmdev.setup.plan import make_plan
    from lmdev.setup.profile import profile_from_facts

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        make_plan(profile_from_facts(machine_facts()), ["torch"])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def report(case: Case, m: dict[str, float]) -> None:
    print(f"\n== {case.label} ==")
    print(f"plan alone, CLI (lmdev setup --dry-run --json): {m['dry']:.3f} s   budget < 0.3 s")
    print(f"no-op on a satisfied environment: lmdev setup {m['noop']:.3f} s (budget < 1 s); "
          f"uv pip install -r {m['noop_uv']:.3f} s; uv pip sync pylock.toml {m['noop_uv_sync']:.3f} s")
    pip = f"pip {m['pip']:.3f} s, " if "pip" in m else ""
    print(f"install into a fresh venv: {pip}uv pip install {m['uv']:.3f} s, "
          f"lmdev (no lock: resolve + pin check + lock + install) {m['lm']:.3f} s")
    vs_pip = f"lmdev / pip = {m['lm'] / m['pip']:.2f}x (budget <= 0.5x); " if "pip" in m else ""
    print(f"{vs_pip}lmdev / uv = {m['lm'] / m['uv']:.2f}x (budget <= 1.2x)")
    print(f"from the lock: lmdev {m['lm_lock']:.3f} s, uv pip sync pylock.toml {m['uv_sync']:.3f} s: "
          f"{m['lm_lock'] / m['uv_sync']:.2f}x; lmdev from the lock / uv pip install = {m['lm_lock'] / m['uv']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", type=int, default=30, help="generated packages in the tiny set")
    ap.add_argument("--repeat", type=int, default=5, help="repeats on the tiny set")
    ap.add_argument("--real-repeat", type=int, default=3, help="repeats on the real torch set")
    ap.add_argument("--no-real", action="store_true", help="only the tiny set")
    ap.add_argument("--real-indexes", action="store_true",
                    help="also the real set from the indexes alone (no find-links folder; pip left out)")
    ap.add_argument("--real-file-index", action="store_true",
                    help="also the real set with a file:// torch index (no HTTP server; pip left out)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lmdev-setup-bench-"))
    try:
        floor = statistics.median(timed([*LM, "--help"], root) for _ in range(args.repeat))
        print(f"lmdev --help (any command's start-up floor): {floor:.3f} s; "
              f"plan alone in process (facts + planner): {plan_in_process(args.repeat):.3f} s")
        tiny = tiny_case(root, args.packages)
        report(tiny, measure(tiny, args.repeat))
        if not args.no_real:
            with real_case(root) as real:
                if real is not None:
                    report(real, measure(real, args.real_repeat))
        if args.real_indexes:
            with real_case(root, find_links=False) as real:
                if real is not None:
                    report(real, measure(real, args.real_repeat, pip=False))
        if args.real_file_index and (local := real_file_case(root)) is not None:
            report(local, measure(local, args.real_repeat, pip=False))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
