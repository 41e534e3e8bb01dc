"""Signing model folders with OpenSSF model-signing (https://github.com/sigstore/model-transparency).

``sign(folder)`` hashes every file of the folder (model-signing's manifest: one sha256 per file)
and signs the manifest with an elliptic-curve private key, offline; the signature is a Sigstore
bundle written to ``FOLDER/model.sig`` (for a single file, ``FILE.sig`` beside it: what
``lmdev checkpoint export --sign`` writes). ``verify(path)`` re-hashes the folder and checks the
bundle against the public key: a changed, added or removed file fails, by name. Keys:
``keygen_signing()`` writes a P-256 key pair (PEM; the private key 0600) to
``$LMDEV_HOME/keys/signing.pem`` / ``signing.pub``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.secure import audit

SIGNATURE_NAME = "model.sig"


def _model_signing() -> Any:
    try:
        import model_signing
    except ImportError:
        raise LmdevError("signing needs the model-signing package", "pip install 'lmdev[secure]'") from None
    return model_signing


def key_paths() -> tuple[Path, Path]:
    from lmdev.track.store import home

    folder = home() / "keys"
    return folder / "signing.pem", folder / "signing.pub"


def keygen_signing(private: Path | None = None, force: bool = False) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec

    priv, pub = (private, private.with_suffix(".pub")) if private else key_paths()
    if priv.exists() and not force:
        raise LmdevError(f"{priv} already exists", "pass --force to replace it")
    priv.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    audit.append("signing-keygen", private=str(priv), public=str(pub))
    return priv, pub


def _model(path: Path) -> Path:
    if not (path.is_dir() or path.is_file()):
        raise LmdevError(f"{path} is not a file or folder", "sign or verify a model folder or file")
    return path


def signature_path(path: Path) -> Path:
    """Where the signature of ``path`` lives: ``DIR/model.sig`` or ``FILE.sig``."""
    return path / SIGNATURE_NAME if path.is_dir() else path.with_name(path.name + ".sig")


def sign(folder: Path, key: Path | None = None) -> Path:
    ms = _model_signing()
    folder = _model(folder)
    key = key or key_paths()[0]
    if not key.is_file():
        raise LmdevError(f"no signing key at {key}", "run `lmdev secure keygen --signing` or pass --key")
    sig = signature_path(folder)
    hashing = ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME], ignore_git_paths=True)
    try:
        ms.signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(hashing).sign(folder, sig)
    except (ValueError, OSError) as exc:
        raise LmdevError(f"cannot sign {folder}: {exc}", "check the key is an EC private key in PEM") from None
    audit.append("sign", path=str(folder.absolute()), key=str(key))
    return sig


@dataclass
class Verification:
    ok: bool
    folder: str
    problems: list[str] = field(default_factory=list)   # one line per changed / added / removed file


def verify(folder: Path, public_key: Path | None = None) -> Verification:
    ms = _model_signing()
    folder = _model(folder)
    public_key = public_key or key_paths()[1]
    sig = signature_path(folder)
    if not sig.is_file():
        result = Verification(False, str(folder), [f"no signature ({sig.name}) beside or in it"])
    elif not public_key.is_file():
        raise LmdevError(f"no public key at {public_key}", "pass --key PUBLIC.pem")
    else:
        try:
            ms.verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(folder, sig)
            result = Verification(True, str(folder))
        except ValueError as exc:
            result = Verification(False, str(folder), _problems(str(exc), folder))
        except Exception as exc:  # a corrupt bundle, the wrong key: model-signing raises several types
            result = Verification(False, str(folder), [f"the signature does not verify: {exc}"])
    audit.append("verify", path=str(folder.absolute()), ok=result.ok, problems=result.problems[:10])
    return result


def _problems(message: str, path: Path) -> list[str]:
    """model-signing's mismatch message -> one readable line per file."""
    out: list[str] = []
    message = message.replace("\\'", "'")
    for m in re.finditer(r"Extra files found in model '[^']*': ([^\"'\]]+)", message):
        out += [f"added: {name.strip()}" for name in m.group(1).split(",")]
    for m in re.finditer(r"Missing files in model '[^']*': ([^\"'\]]+)", message):
        out += [f"removed: {name.strip()}" for name in m.group(1).split(",")]
    for m in re.finditer(r"Hash mismatch for '([^']+)'", message):
        out.append(f"changed: {path.name if m.group(1) == '.' else m.group(1)}")
    return out or [message]


def verify_if_signed(path: str | os.PathLike[str], what: str = "load") -> None:
    """The check on load: when ``path`` carries a signature, it must verify against the public
    key (``$LMDEV_SIGNING_PUBLIC_KEY`` or ``$LMDEV_HOME/keys/signing.pub``), else
    ``LmdevError`` names what changed. Unsigned files pass (the scanner still judges them); a
    signed one with no public key to check it passes with a warning and an audit entry."""
    p = Path(path)
    if not signature_path(p).is_file():
        return
    env = os.environ.get("LMDEV_SIGNING_PUBLIC_KEY")
    public = Path(env) if env else key_paths()[1]
    if not public.is_file():
        import warnings

        from lmdev.errors import LmdevWarning

        audit.append("signature-unchecked", path=str(p.absolute()), what=what, reason=f"no public key at {public}")
        warnings.warn(f"{p} is signed but there is no public key at {public} to check it",
                      LmdevWarning, stacklevel=2)
        return
    result = verify(p, public)
    if not result.ok:
        raise LmdevError(f"refusing to {what} {p}: its signature does not verify ({'; '.join(result.problems[:3])})",
                         f"use the file as signed, or check it with `lmdev secure verify {p} --key PUBLIC.pem`")

