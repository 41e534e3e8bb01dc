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


@pytest.fixture
def lmdev_cli():
    return run_lmdev
