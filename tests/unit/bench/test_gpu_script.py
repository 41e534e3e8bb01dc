"""benchmarks/gpu/run.sh without a GPU: it lists its checks, and refuses at once (exit 2) saying why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"


def run(*args: str, out=None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable, **({"OUT": str(out)} if out else {}))
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_dry_run_lists_every_gpu_check():
    res = run("--dry-run")
    assert res.returncode == 0, res.stderr
    names = [line.split()[0] for line in res.stdout.splitlines()]
    assert names == ["bench", "mfu", "amp", "compile", "ddp", "fsdp", "resume", "plan"]
    assert [ln.split()[0] for ln in run("--dry-run", "--only", "resume,plan").stdout.splitlines()] == ["resume", "plan"]
    bad = run("--only", "warp-drive")
    assert bad.returncode == 2 and "unknown check(s): warp-drive" in bad.stderr


def test_without_a_gpu_it_stops_at_once_and_writes_nothing(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run the checks")
    res = run(out=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("benchmarks/gpu/run.sh: no GPU to check: ")
    assert list(tmp_path.iterdir()) == []
