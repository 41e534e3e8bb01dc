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
