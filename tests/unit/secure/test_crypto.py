"""Encryption at rest in the age format: files, folders, keys from a file, env or keyring."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from lmdev.errors import LmdevError
from lmdev.secure import crypto

pytest.importorskip("pyrage")


def test_keygen_writes_a_private_key_file(_home):
    pair = crypto.keygen()
    path = _home / "keys" / "age.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pair.recipient.startswith("age1") and pair.identity in path.read_text()
    with pytest.raises(LmdevError, match="already exists"):
        crypto.keygen()


def test_file_round_trip_and_the_ciphertext_hides_the_content(tmp_path, _home):
    crypto.keygen()
    src = tmp_path / "weights.bin"
    data = os.urandom(200_000) + b"SECRET-MARKER" * 100
    src.write_bytes(data)
    enc = crypto.encrypt(src)
    assert enc.name == "weights.bin.age" and b"SECRET-MARKER" not in enc.read_bytes()
    assert enc.read_bytes().startswith(b"age-encryption.org/v1\n")
    out = crypto.decrypt(enc, tmp_path / "back.bin")
    assert out.read_bytes() == data


def test_folder_round_trip(tmp_path, _home):
    crypto.keygen()
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 1000)
    (folder / "sub" / "state.json").write_text('{"step": 3}')
    enc = crypto.encrypt(folder)
    assert enc.name == "ckpt.tar.age"
    out = crypto.decrypt(enc, tmp_path / "restored")
    assert (out / "model.safetensors").read_bytes() == b"x" * 1000
    assert (out / "sub" / "state.json").read_text() == '{"step": 3}'


def test_the_wrong_key_fails_clearly(tmp_path, _home):
    crypto.keygen()
    src = tmp_path / "f"
    src.write_bytes(b"data")
    enc = crypto.encrypt(src)
    other = crypto.keygen(tmp_path / "other.key")
    with pytest.raises(LmdevError, match="cannot decrypt"):
        crypto.decrypt(enc, tmp_path / "out", key=tmp_path / "other.key")
    assert other.recipient and not (tmp_path / "out").exists()


def test_key_from_the_environment(tmp_path, monkeypatch):
    pair = crypto.keygen(tmp_path / "k")
    (tmp_path / "k").unlink()
    monkeypatch.setenv("LMDEV_AGE_KEY", pair.identity)
    src = tmp_path / "f"
    src.write_bytes(b"hello")
    assert crypto.decrypt(crypto.encrypt(src), tmp_path / "g").read_bytes() == b"hello"


def test_a_key_file_readable_by_others_is_refused(tmp_path):
    crypto.keygen(tmp_path / "k")
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(LmdevError, match="chmod 600"):
        crypto.load_identity(tmp_path / "k")


def test_encrypt_and_decrypt_are_audited(tmp_path, _home):
    crypto.keygen()
    src = tmp_path / "f"
    src.write_bytes(b"x")
    crypto.decrypt(crypto.encrypt(src), tmp_path / "g")
    log = (_home / "audit.log").read_text()
    assert '"event":"encrypt"' in log and '"event":"decrypt"' in log


def test_a_recipient_without_the_identity_can_encrypt(tmp_path, _home):
    pair = crypto.keygen(tmp_path / "theirs")
    src = tmp_path / "f"
    src.write_bytes(b"for them")
    enc = crypto.encrypt(src, recipients=[pair.recipient])
    assert crypto.decrypt(enc, tmp_path / "out", key=tmp_path / "theirs").read_bytes() == b"for them"
    with pytest.raises(LmdevError):
        crypto.encrypt(src, tmp_path / "bad.age", recipients=["not-a-key"])


def test_decrypting_a_plain_file_is_refused(tmp_path: Path, _home):
    crypto.keygen()
    (tmp_path / "plain").write_bytes(b"not encrypted")
    with pytest.raises(LmdevError, match="not an age-encrypted"):
        crypto.decrypt(tmp_path / "plain")


@pytest.mark.skipif(shutil.which("age") is None, reason="the age command is not installed (apt-get install age)")
def test_interoperates_with_the_age_command(tmp_path, _home):
    crypto.keygen()
    key = _home / "keys" / "age.key"
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(300_000))
    enc = crypto.encrypt(src)
    out = tmp_path / "by-age.bin"
    subprocess.run(["age", "-d", "-i", str(key), "-o", str(out), str(enc)], check=True)
    assert out.read_bytes() == src.read_bytes()
    recipient = crypto.load_identity(key).recipient
    theirs = tmp_path / "from-age.age"
    subprocess.run(["age", "-r", recipient, "-o", str(theirs), str(src)], check=True)
    assert crypto.decrypt(theirs, tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_decrypt_never_replaces_a_symlink_or_leaves_a_temp_file(tmp_path, _home):
    """Encrypted output goes through fsutil's atomic writers: the same refusal of non-regular
    targets as every other file lmdev writes."""
    crypto.keygen()
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights" * 1000)
    enc = crypto.encrypt(src)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "out.bin"
    link.symlink_to(victim)
    with pytest.raises(LmdevError, match="symbolic link"):
        crypto.decrypt(enc, link)
    assert link.is_symlink() and victim.read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("writer, reader", [("1", "0"), ("0", "1"), ("0", "0"), ("1", "1")])
def test_the_age_command_and_pyrage_read_each_other(tmp_path, _home, monkeypatch, writer, reader):
    """lmdev uses the age command for whole files when it is installed (LMDEV_AGE_CLI=0: never):
    either side reads what the other wrote, files and in-memory payloads alike."""
    if "1" in (writer, reader) and crypto.age_cli() is None:
        pytest.skip("the age command is not installed")
    crypto.keygen()
    src = tmp_path / "w.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    monkeypatch.setenv("LMDEV_AGE_CLI", writer)
    enc = crypto.encrypt(src)
    crypto.encrypt_bytes_to(data[:1000], tmp_path / "small.age", crypto.resolve_recipients())
    monkeypatch.setenv("LMDEV_AGE_CLI", reader)
    assert crypto.decrypt(enc, tmp_path / "back.bin").read_bytes() == data
    assert crypto.decrypt_bytes(tmp_path / "small.age") == data[:1000]
    assert crypto.decrypt_to_memory_file(enc).read_bytes() == data
    other = crypto.keygen(tmp_path / "other.key")
    monkeypatch.setenv("LMDEV_AGE_KEY", other.identity)
    with pytest.raises(LmdevError, match="cannot decrypt"):
        crypto.decrypt_bytes(enc)
