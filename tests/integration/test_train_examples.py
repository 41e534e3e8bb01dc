"""The training examples leave nothing behind in the folder they are run from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_lightning_example_leaves_no_lightning_logs_in_the_callers_folder(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    pytest.importorskip("sklearn")
    env = dict(os.environ, LMDEV_HOME=str(tmp_path / "home"), LMDEV_TELEMETRY="0", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "lightning_mlp.py"), "--epochs", "1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "val/accuracy" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no lightning_logs/, nothing else


def test_the_hooks_example_trains_with_its_factory_loss_and_callbacks(tmp_path: Path) -> None:
    """examples/hooks/digits_hooks.yaml: a factory told the data's shapes, a focal loss and a
    callback, all from my_hooks.py beside the config, through the CLI (then resumed)."""
    import json

    pytest.importorskip("sklearn")
    report = tmp_path / "report.json"
    env = dict(os.environ, LMDEV_HOME=str(tmp_path / "home"), LMDEV_TELEMETRY="0", OMP_NUM_THREADS="1",
               HOOKS_REPORT=str(report))
    config = ROOT / "examples" / "hooks" / "digits_hooks.yaml"
    res = subprocess.run([sys.executable, "-m", "lmdev", "train", str(config), "--json", "--set", "train.max_steps=100"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout[res.stdout.index("{"):])
    assert result["status"] == "finished" and result["val"]["val/accuracy"] > 0.5
    seen = json.loads(report.read_text())
    assert [step for step, _ in seen["eval"]] == [50, 100]
    assert [100, "step-00000100"] in seen["checkpoint"] and seen["resume"] == []
    res = subprocess.run([sys.executable, "-m", "lmdev", "train", str(config), "--json", "--set", "train.max_steps=150",
                          "--resume", result["run_id"]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(report.read_text())["resume"] == [100]


def test_the_custom_trainer_example_runs(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "hooks" / "custom_trainer.py"), "--steps", "20"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "AuxLossTrainer: finished after 20 steps" in res.stdout
    assert "CriticTrainer: finished after 20 steps" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []
