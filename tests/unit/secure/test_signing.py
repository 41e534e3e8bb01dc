"""Signing with OpenSSF model-signing: any changed, added or removed file fails, by name."""

from __future__ import annotations

import pytest

from lmdev.secure import signing

pytest.importorskip("model_signing")


@pytest.fixture
def signed(tmp_path, _home):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * 4096)
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    signing.keygen_signing()
    signing.sign(folder)
    return folder


def test_an_untouched_folder_verifies(signed):
    assert signing.verify(signed).ok


def test_a_changed_file_is_named(signed):
    (signed / "model.safetensors").write_bytes(b"v" * 4096)
    result = signing.verify(signed)
    assert not result.ok and result.problems == ["changed: model.safetensors"]


def test_an_added_file_is_named(signed):
    (signed / "extra.pkl").write_bytes(b"x")
    result = signing.verify(signed)
    assert not result.ok and "added: extra.pkl" in result.problems


def test_a_removed_file_is_named(signed):
    (signed / "config.json").unlink()
    result = signing.verify(signed)
    assert not result.ok and "removed: config.json" in result.problems


def test_another_key_does_not_verify(signed, tmp_path):
    _, pub = signing.keygen_signing(tmp_path / "other.pem")
    assert not signing.verify(signed, pub).ok


def test_an_unsigned_folder_fails(tmp_path, _home):
    (tmp_path / "m").mkdir()
    signing.keygen_signing()
    assert not signing.verify(tmp_path / "m").ok


def test_sign_and_verify_are_audited(signed, _home):
    signing.verify(signed)
    log = (_home / "audit.log").read_text()
    assert '"event":"sign"' in log and '"event":"verify"' in log


def test_a_single_file_is_signed_beside_itself(tmp_path, _home):
    f = tmp_path / "export.safetensors"
    f.write_bytes(b"w" * 4096)
    signing.keygen_signing()
    assert signing.sign(f) == tmp_path / "export.safetensors.sig" and signing.verify(f).ok
    f.write_bytes(b"v" * 4096)
    assert signing.verify(f).problems == ["changed: export.safetensors"]


def test_require_safe_refuses_a_signed_folder_that_changed(signed):
    from lmdev.errors import LmdevError
    from lmdev.secure import require_safe

    require_safe(signed)  # signed and unchanged: loads
    (signed / "model.safetensors").write_bytes(b"v" * 4096)
    with pytest.raises(LmdevError, match="signature does not verify.*changed: model.safetensors"):
        require_safe(signed)


def test_a_signature_without_a_public_key_warns_and_is_audited(signed, _home):
    from lmdev.errors import LmdevWarning
    from lmdev.secure import require_safe

    signing.key_paths()[1].unlink()
    with pytest.warns(LmdevWarning, match="no public key"):
        require_safe(signed)
    assert '"event":"signature-unchecked"' in (_home / "audit.log").read_text()
