"""Encrypted checkpoints (``checkpoint: {encrypt: ...}``): written age-encrypted, verified without
the key, read back transparently with it, refused with the wrong one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("pyrage")
torch = pytest.importorskip("torch")

from lmdev.errors import LmdevError  # noqa: E402
from lmdev.secure import crypto  # noqa: E402
from lmdev.secure.scan import UnsafeModelError  # noqa: E402
from lmdev.train import checkpoint as ckpt  # noqa: E402

MARK = 1234.5678


def _state(encrypt: object, step: int = 2) -> dict:
    return {"step": step, "secret_path": "/data/PLAINTEXT-MARKER", "config": {"checkpoint": {"encrypt": encrypt}}}


def _save(folder: Path, encrypt: object, step: int = 2) -> Path:
    weights = {"w": torch.full((64, 64), MARK), "b": torch.arange(5.0)}
    tensors = {"optim.0.exp_avg": torch.full((8,), 7.0)}
    path, _ = ckpt.save(folder, step, weights, tensors, _state(encrypt, step))
    return path


def test_an_encrypted_checkpoint_hides_its_content_and_reads_back(tmp_path: Path) -> None:
    crypto.keygen()
    path = _save(tmp_path / "ck", True)
    for name in ckpt.FILES:
        raw = (path / name).read_bytes()
        assert raw.startswith(crypto.AGE_HEADER), name
        assert b"PLAINTEXT-MARKER" not in raw and b"exp_avg" not in raw and b'"w"' not in raw
    assert ckpt.verify(path) is None and ckpt.is_encrypted(path)
    got = ckpt.load(path)
    assert got.step == 2 and got.state["secret_path"] == "/data/PLAINTEXT-MARKER"
    assert torch.equal(got.weights["w"], torch.full((64, 64), MARK))
    assert torch.equal(got.tensors["optim.0.exp_avg"], torch.full((8,), 7.0))
    assert ckpt.read_state(path)["step"] == 2


def test_a_plain_checkpoint_stays_plain(tmp_path: Path) -> None:
    path = _save(tmp_path / "ck", False)
    assert not ckpt.is_encrypted(path)
    assert json.loads((path / "state.json").read_text())["step"] == 2


def test_verify_needs_no_key_and_load_needs_the_right_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crypto.keygen()
    path = _save(tmp_path / "ck", True)
    (crypto.default_key_path()).unlink()
    assert ckpt.verify(path) is None  # the manifest hashes the ciphertext
    with pytest.raises(LmdevError, match="no key file"):
        ckpt.load(path)
    other = crypto.keygen(tmp_path / "other.key")
    monkeypatch.setenv("LMDEV_AGE_KEY", other.identity)
    with pytest.raises(LmdevError, match="cannot decrypt"):
        ckpt.load(path)


def test_recipients_need_only_the_public_key_to_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = crypto.keygen(tmp_path / "reader.key")  # the training machine never sees this secret
    path = _save(tmp_path / "ck", [reader.recipient])
    monkeypatch.setenv("LMDEV_AGE_KEY_FILE", str(tmp_path / "reader.key"))
    assert torch.equal(ckpt.load(path).weights["b"], torch.arange(5.0))


def test_encrypt_without_a_key_fails_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ckpt.SaveError, match="checkpoint.encrypt is set"):
        _save(tmp_path / "ck", True)
    assert ckpt.list_checkpoints(tmp_path / "ck") == [] and not list((tmp_path / "ck").glob(".*"))


def test_export_of_an_encrypted_checkpoint(tmp_path: Path) -> None:
    crypto.keygen()
    path = _save(tmp_path / "ck", True)
    out = ckpt.export_safetensors(path, tmp_path / "out.safetensors")
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(out))["w"], torch.full((64, 64), MARK))


def test_decrypted_content_that_is_not_safetensors_is_refused(tmp_path: Path) -> None:
    crypto.keygen()
    path = _save(tmp_path / "ck", True)
    import pickle

    payload = pickle.dumps({"w": 1}, protocol=4)  # a pickle where safetensors belongs: never parsed
    crypto.encrypt_bytes_to(payload, path / "model.safetensors", crypto.resolve_recipients())
    with pytest.raises(UnsafeModelError, match="not a safetensors file"):
        ckpt.read_tensors(path / "model.safetensors")


def test_the_age_command_decrypts_a_checkpoint_file(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if not shutil.which("age"):
        pytest.skip("the age command is not installed")
    crypto.keygen()
    path = _save(tmp_path / "ck", True)
    out = subprocess.run(["age", "-d", "-i", str(crypto.default_key_path()), str(path / "state.json")],
                         capture_output=True, check=True).stdout
    assert json.loads(out)["secret_path"] == "/data/PLAINTEXT-MARKER"
    assert os.stat(crypto.default_key_path()).st_mode & 0o077 == 0


def test_a_failed_encrypted_write_is_a_save_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The encryptor failing mid-save (here: the age command cannot write) is the same one-line
    SaveError as a full disk; the partial folder is removed and earlier checkpoints stay."""
    crypto.keygen()
    first = _save(tmp_path / "ck", True, step=2)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "age"
    fake.write_text("#!/bin/sh\necho 'age: error: failed to write output: no space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("LMDEV_AGE_CLI", "1")
    with pytest.raises(ckpt.SaveError, match="no space left"):
        _save(tmp_path / "ck", True, step=4)
    assert ckpt.list_checkpoints(tmp_path / "ck") == [first] and not list((tmp_path / "ck").glob(".*"))
