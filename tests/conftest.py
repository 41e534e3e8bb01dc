import os
import subprocess
import sys
from pathlib import Path

import pytest

# torch.compile's Triton bindings segfault when imported after TensorFlow (which Keras and some
# TensorBoard paths load into this process); importing them first makes either order safe.
try:
    import torch._dynamo  # noqa: F401
except ImportError:
    pass

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "machines"


def run_lmdev(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run the real `lmdev` command (python -m lmdev) in a subprocess."""
    full_env = dict(os.environ, NO_COLOR="1", COLUMNS="120")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "lmdev", *args],
        capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout,
    )


def train_digits(cwd: Path, steps: int) -> dict:
    """Train examples/digits_mlp.yaml for ``steps`` in ``cwd`` (its own run store, one checkpoint at
    the end, no telemetry, one thread); returns the environment the commands on it need."""
    env = {"LMDEV_HOME": str(cwd / ".lmdev"), "LMDEV_TELEMETRY": "0", "OMP_NUM_THREADS": "1"}
    r = run_lmdev("train", str(ROOT / "examples/digits_mlp.yaml"), "--set", f"train.max_steps={steps}",
                  "--set", f"checkpoint.every={steps}", cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    return env


@pytest.fixture
def lmdev_cli():
    return run_lmdev
