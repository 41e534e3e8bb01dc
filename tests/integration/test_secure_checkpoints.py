"""Encrypted checkpoints end to end: `lmdev train` with ``checkpoint: {encrypt: true}`` writes
age-encrypted files; a SIGKILL in the middle of a save leaves the previous checkpoint intact and
readable; `--resume`, `lmdev checkpoint verify` and `export --sign` read them with the key; the
signed export is checked whenever lmdev loads it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_lmdev

pytest.importorskip("pyrage")
pytestmark = pytest.mark.integration

CONFIG = """
name: secret-run
seed: 1
model: {type: mlp, hidden: [16]}
data: {type: digits, batch_size: 32}
train: {max_steps: 8, eval_every: 1000, log_every: 2}
checkpoint: {every: 4, keep: 10, encrypt: true}
device: cpu
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, LMDEV_HOME=str(home), OMP_NUM_THREADS="1", NO_COLOR="1")
    for name in ("LMDEV_TEST_CRASH_AT", "LMDEV_TEST_PAUSE_AT", "LMDEV_AGE_KEY", "LMDEV_AGE_KEY_FILE", "LMDEV_TRUST"):
        env.pop(name, None)
    env.update(extra)
    return env


def _train(tmp: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmdev", "train", str(tmp / "config.yaml"), "--json",
                             "--no-telemetry", *extra], cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_mid_save(tmp: Path, home: Path) -> Path:
    """Every save pauses after writing its (encrypted) weights; SIGKILL lands in the second."""
    proc = _train(tmp, _env(home, LMDEV_TEST_PAUSE_AT="after_weights=3"))
    deadline = time.monotonic() + 120
    while not list(home.glob("runs/*/checkpoints/.step-00000008.*.tmp/model.safetensors")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return next(home.glob("runs/*/checkpoints"))


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("enc")
    home = tmp / "home"
    (tmp / "config.yaml").write_text(CONFIG)
    assert run_lmdev("secure", "keygen", env=_env(home)).returncode == 0
    folder = _kill_mid_save(tmp, home)
    return {"tmp": tmp, "home": home, "folder": folder}


def test_sigkill_mid_save_leaves_the_previous_encrypted_checkpoint_usable(killed: dict) -> None:
    from lmdev.train import checkpoint as ckpt

    folder = killed["folder"]
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["step-00000004"]
    good = folder / "step-00000004"
    assert ckpt.verify(good) is None and ckpt.is_encrypted(good)
    assert all((good / n).read_bytes().startswith(b"age-encryption.org/v1\n") for n in ckpt.FILES)
    env = _env(killed["home"])
    done = run_lmdev("checkpoint", "verify", str(good), env=env)
    assert done.returncode == 0 and "age-encrypted" in done.stdout, done.stdout + done.stderr


def test_resume_reads_the_encrypted_checkpoint_and_writes_encrypted_ones(killed: dict) -> None:
    from lmdev.train import checkpoint as ckpt

    proc = _train(killed["tmp"], _env(killed["home"]), "--resume")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["status"] == "finished" and doc["steps"] == 8, doc
    last = Path(doc["checkpoint_dir"]) / "step-00000008"
    assert ckpt.verify(last) is None and ckpt.is_encrypted(last)


def test_without_the_key_export_fails_in_one_line(killed: dict, tmp_path: Path) -> None:
    env = _env(killed["home"], LMDEV_AGE_KEY_FILE=str(tmp_path / "missing.key"))
    done = run_lmdev("checkpoint", "export", str(killed["folder"] / "step-00000004"), str(tmp_path / "o.safetensors"),
                     env=env)
    assert done.returncode == 2 and "missing.key" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_export_signs_and_every_load_checks_the_signature(killed: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import lmdev.secure
    from lmdev.errors import LmdevError
    from lmdev.secure import signing

    env = _env(killed["home"])
    monkeypatch.setenv("LMDEV_HOME", str(killed["home"]))
    signing.keygen_signing()
    out = tmp_path / "model.safetensors"
    done = run_lmdev("checkpoint", "export", str(killed["folder"] / "step-00000004"), str(out), "--sign", env=env)
    assert done.returncode == 0 and (tmp_path / "model.safetensors.sig").is_file(), done.stdout + done.stderr
    assert signing.verify(out).ok and "1.weight" in lmdev.secure.load(out)
    data = bytearray(out.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    out.write_bytes(bytes(data))
    assert signing.verify(out).problems == ["changed: model.safetensors"]
    with pytest.raises(LmdevError, match="signature does not verify"):
        lmdev.secure.load(out)
