"""The verification ladder for real: on the shared environment's PyTorch on this CPU machine, and a
broken environment whose failure is named with its cause and fix."""

from __future__ import annotations

import json
import sys

import pytest

from lmdev.setup.verify import build_problem
from tests.conftest import run_lmdev

pytestmark = pytest.mark.integration


def test_verify_ladder_on_a_real_torch(tmp_path):
    pytest.importorskip("torch")
    r = run_lmdev("setup", "--verify", "--venv", sys.prefix, "torch", "--json", cwd=tmp_path,
                  env={"VIRTUAL_ENV": ""}, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    doc = json.loads(r.stdout)
    steps = {s["name"]: s for s in doc["environments"][0]["verification"]["steps"]}
    assert list(steps) == ["preflight", "import", "build", "operation", "mixed-precision", "distributed"]
    assert all(s["ok"] for s in steps.values())
    assert steps["operation"]["detail"]["checked"]["cpu"] < 1e-3
    assert steps["distributed"]["detail"]["backends"]["gloo"] == 4.0


def test_a_broken_torch_fails_with_cause_and_fix(tmp_path):
    venv = tmp_path / "venv"
    import venv as venv_mod

    venv_mod.create(venv, with_pip=False)
    site = next(venv.glob("lib/python3*/site-packages"))
    # a torch that imports but is not a working build (what a half-removed install looks like)
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text("__version__ = '2.9.1'\n")
    r = run_lmdev("setup", "--verify", "--venv", str(venv), "torch", "--json", cwd=tmp_path, env={"VIRTUAL_ENV": ""})
    assert r.returncode == 1, r.stderr
    steps = json.loads(r.stdout)["environments"][0]["verification"]["steps"][1:]  # after the preflight
    assert steps[0]["name"] == "import" and steps[0]["ok"]
    assert not steps[1]["ok"] and steps[1]["fix"] and "lmdev setup --repair" in steps[1]["fix"]
    assert all(s["skipped"] for s in steps[2:])


def testbuild_problem_name_cpu_build_and_missing_architecture():
    assert "CPU build on a GPU machine" in build_problem({"cuda": None}, "nvidia")
    missing = build_problem({"cuda": "12.8", "devices": ["cuda:0"], "capabilities": ["6.1"],
                             "arch_list": ["sm_70", "sm_80", "sm_90"]}, "nvidia")
    assert "no kernel image for cuda:0 (sm_61)" in missing
    assert build_problem({"cuda": "12.8", "devices": ["cuda:0"], "capabilities": ["8.9"],
                          "arch_list": ["sm_80", "sm_86"]}, "nvidia") is None



def test_dry_run_is_deterministic_and_imports_no_framework(tmp_path):
    import subprocess

    code = ("import sys, io, contextlib\nfrom lmdev.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n    main(['setup', 'torch', 'jax', '--dry-run', '--json'])\n"
            "heavy = [m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules]\n"
            "print(repr(heavy)); print(buf.getvalue())\n")
    runs = [subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
            for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout.splitlines()[0] == "[]"
    assert runs[0].stdout == runs[1].stdout  # the same facts give the same plan, byte for byte
    plan = json.loads(runs[0].stdout.split("\n", 1)[1])
    assert plan["stacks"] == ["torch", "jax"]
