"""``lmdev run --guard`` covers ``pickle.Unpickler`` (and subclasses of it) as well as
``pickle.load``/``loads``: the scan runs before any opcode does. Each case runs in its own
interpreter, since the guard patches the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import corpus

PRELUDE = "from lmdev.secure import guard\nguard.install()\nimport pickle, io, sys\n"


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LMDEV_HOME=str(cwd / "home"), LMDEV_TRUST="")
    return subprocess.run([sys.executable, "-c", PRELUDE + code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    canary = tmp_path / "CANARY"
    (tmp_path / "evil.pkl").write_bytes(corpus.global_call("os", "system", f"touch {canary}", 4))
    return tmp_path / "evil.pkl", canary


@pytest.mark.parametrize("how", [
    "pickle.Unpickler(open('evil.pkl', 'rb')).load()",
    "pickle._Unpickler(open('evil.pkl', 'rb')).load()",
    "pickle.Unpickler(io.BytesIO(open('evil.pkl', 'rb').read())).load()",
    "class Mine(pickle.Unpickler):\n    pass\nMine(open('evil.pkl', 'rb')).load()",
    "pickle.loads(open('evil.pkl', 'rb').read())",
])
def test_every_unpickling_entry_point_scans_first(how: str, evil: tuple[Path, Path]) -> None:
    path, canary = evil
    done = _run(how, path.parent)
    assert done.returncode != 0 and "UnsafeModelError" in done.stderr and "os.system" in done.stderr, done.stderr
    assert not canary.exists()


def test_a_safe_stream_still_loads_through_the_unpickler(tmp_path: Path) -> None:
    code = ("data = pickle.dumps({'a': [1, 2]}, protocol=5)\n"
            "print(pickle.Unpickler(io.BytesIO(data)).load(), isinstance(pickle.Unpickler, type))\n")
    done = _run(code, tmp_path)
    assert done.returncode == 0 and "{'a': [1, 2]} True" in done.stdout, done.stderr
