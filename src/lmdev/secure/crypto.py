"""Encryption at rest in the age format (https://age-encryption.org/v1) through pyrage.

Why age: it is a small, fixed, audited format (X25519 recipients, ChaCha20-Poly1305 in 64 KiB
chunks) with a command-line tool (``age``) that decrypts what lmdev writes and vice versa, and
pyrage (bindings to the Rust ``rage`` implementation) streams it from Python file objects, so
memory stays flat whatever the file size. Tink's streaming AEAD has no matching command-line
tool for users and its Python package is far heavier.

Files: ``X`` -> ``X.age``. Folders: a tar stream of the folder, encrypted on the fly ->
``DIR.tar.age``; decryption streams it back through tarfile's ``data`` filter (no absolute
paths, no links out of the folder).

Keys (an age identity ``AGE-SECRET-KEY-1...``), first found wins: an explicit key file,
``$LMDEV_AGE_KEY`` (the key itself), ``$LMDEV_AGE_KEY_FILE``, the OS keyring (service
``lmdev``, user ``age-identity``; needs the ``keyring`` package), ``$LMDEV_HOME/keys/age.key``.
A key file must not be readable by group or others (like ssh's keys).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_path, atomic_stream
from lmdev.secure import audit

KEYRING_SERVICE, KEYRING_USER = "lmdev", "age-identity"
AGE_HEADER = b"age-encryption.org/v1\n"
BUFFER = 1 << 20   # pyrage reads and writes 8 KiB at a time: buffer the file objects it calls


def _pyrage() -> Any:
    try:
        import pyrage
    except ImportError:
        raise LmdevError("encryption needs the pyrage package", "pip install 'lmdev[secure]'") from None
    return pyrage


def default_key_path() -> Path:
    from lmdev.track.store import home

    return home() / "keys" / "age.key"


@dataclass
class KeyPair:
    identity: str      # AGE-SECRET-KEY-1...
    recipient: str     # age1...
    source: str        # where the identity came from


def keygen(out: Path | None = None, use_keyring: bool = False, force: bool = False) -> KeyPair:
    """A new X25519 identity, written 0600 to ``out`` (default ``$LMDEV_HOME/keys/age.key``) or to
    the OS keyring."""
    identity = _pyrage().x25519.Identity.generate()
    secret, public = str(identity), str(identity.to_public())
    if use_keyring:
        _keyring().set_password(KEYRING_SERVICE, KEYRING_USER, secret)
        where = f"keyring:{KEYRING_SERVICE}/{KEYRING_USER}"
    else:
        path = out or default_key_path()
        if path.exists() and not force:
            raise LmdevError(f"{path} already exists", "pass --force to replace it, or --out another path")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path.with_name(path.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"# public key: {public}\n{secret}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(path.with_name(path.name + ".tmp"), path)
        where = str(path)
    audit.append("keygen", recipient=public, where=where)
    return KeyPair(secret, public, where)


def _keyring() -> Any:
    try:
        import keyring
    except ImportError:
        raise LmdevError("the OS keyring needs the keyring package", "pip install keyring") from None
    return keyring


def _read_key_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError:
        raise LmdevError(f"no key file at {path}", "run `lmdev secure keygen` or pass --key") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LmdevError(f"key file {path} is readable by others (mode {stat.S_IMODE(mode):o})",
                         f"chmod 600 {path}")
    for line in path.read_text().splitlines():
        if line.startswith("AGE-SECRET-KEY-1"):
            return line.strip()
    raise LmdevError(f"{path} holds no age identity (AGE-SECRET-KEY-1...)", "run `lmdev secure keygen`")


def load_identity(key: str | os.PathLike[str] | None = None) -> KeyPair:
    """The identity to decrypt with (and whose recipient encrypts by default)."""
    pyrage = _pyrage()
    if key is not None:
        secret, source = _read_key_file(Path(key)), str(key)
    elif os.environ.get("LMDEV_AGE_KEY"):
        secret, source = os.environ["LMDEV_AGE_KEY"].strip(), "$LMDEV_AGE_KEY"
    elif os.environ.get("LMDEV_AGE_KEY_FILE"):
        secret, source = _read_key_file(Path(os.environ["LMDEV_AGE_KEY_FILE"])), "$LMDEV_AGE_KEY_FILE"
    else:
        secret, source = _from_keyring_or_default()
    try:
        identity = pyrage.x25519.Identity.from_str(secret)
    except Exception:
        raise LmdevError(f"the key from {source} is not an age identity", "run `lmdev secure keygen`") from None
    return KeyPair(secret, str(identity.to_public()), source)


def _from_keyring_or_default() -> tuple[str, str]:
    try:
        import keyring

        secret = keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
        if secret:
            return secret, "keyring"
    except Exception:  # no keyring package or no backend: fall through to the file
        pass
    path = default_key_path()
    return _read_key_file(path), str(path)


def _recipients(recipients: Sequence[str], key: str | os.PathLike[str] | None) -> list[Any]:
    pyrage = _pyrage()
    names = list(recipients) or [load_identity(key).recipient]
    out = []
    for name in names:
        try:
            out.append(pyrage.x25519.Recipient.from_str(name))
        except Exception:
            raise LmdevError(f"{name!r} is not an age recipient (age1...)", "give the public key keygen printed") from None
    return out


def _tar_reader(folder: Path) -> tuple[IO[bytes], threading.Thread, list[BaseException]]:
    """A pipe whose read end yields a tar stream of ``folder`` (written by a thread)."""
    r, w = os.pipe()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(w, "wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
                tar.add(folder, arcname=folder.name)
        except BaseException as exc:  # surfaced by the caller after encryption ends
            errors.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    return os.fdopen(r, "rb"), thread, errors


def encrypt(src: Path, dst: Path | None = None, recipients: Sequence[str] = (),
            key: str | os.PathLike[str] | None = None) -> Path:
    """Encrypt a file (-> ``src.age``) or a folder (-> ``src.tar.age``), streaming."""
    pyrage = _pyrage()
    if not src.exists():
        raise LmdevError(f"{src} does not exist", "give a file or folder to encrypt")
    targets = _recipients(recipients, key)
    dst = dst or src.with_name(src.name + (".tar.age" if src.is_dir() else ".age"))
    if src.is_dir():
        with atomic_stream(dst, buffering=BUFFER) as out:
            reader, thread, errors = _tar_reader(src)
            with reader:
                pyrage.encrypt_io(reader, out, targets)
            thread.join()
            if errors:
                raise LmdevError(f"cannot read {src}: {errors[0]}")
    else:
        with atomic_path(dst) as tmp:  # file to file: no Python in the loop
            if (cli := age_cli()) is not None:
                try:
                    _run_age([cli, *[a for r in targets for a in ("-r", str(r))], "-o", tmp, str(src)])
                except AgeCommandError as exc:
                    raise LmdevError(f"cannot encrypt {src}: {exc}", "check the disk space and permissions") from None
            else:
                pyrage.encrypt_file(str(src), tmp, targets)
    audit.append("encrypt", path=str(src.absolute()), out=str(dst.absolute()), folder=src.is_dir(),
                 recipients=[str(r) for r in recipients] or ["(own key)"])
    return dst


class AgeCommandError(Exception):
    """The age command failed (its own message)."""


def age_cli() -> str | None:
    """The ``age`` command (Go), when installed and not turned off with ``LMDEV_AGE_CLI=0``. It
    writes and reads the same format as pyrage and, measured here, needs about 1.4-1.6x less CPU
    per byte (assembly ChaCha20-Poly1305) and overlaps reading, ciphering and writing:
    ``benchmarks/secure_crypto.py``. lmdev uses it for whole files, pyrage for streams."""
    if os.environ.get("LMDEV_AGE_CLI", "1") == "0":
        return None
    return shutil.which("age")


def _run_age(argv: list[str], secret: str | None = None, data: bytes | None = None,
             stdout: Any = subprocess.DEVNULL) -> bytes:
    """Run the age command; returns its standard output when ``stdout`` is ``subprocess.PIPE``.
    An identity goes through its standard input (``-i -``): never on the command line, never in a
    file. ``data``: the plaintext to encrypt, through the standard input."""
    feed = (secret + "\n").encode() if secret else data
    done = subprocess.run(argv, input=feed, stdout=stdout, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace").strip().splitlines()
        raise AgeCommandError((text[0] if text else f"age exited {done.returncode}").removeprefix("age: error: "))
    return done.stdout or b""


def is_encrypted(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(AGE_HEADER)) == AGE_HEADER


def decrypt(src: Path, dst: Path | None = None, key: str | os.PathLike[str] | None = None) -> Path:
    """Decrypt ``X.age`` -> ``X`` or ``DIR.tar.age`` -> ``DIR`` (a folder), streaming."""
    pyrage = _pyrage()
    if not src.is_file() or not is_encrypted(src):
        raise LmdevError(f"{src} is not an age-encrypted file", "give a file written by `lmdev secure encrypt`")
    secret = load_identity(key).identity
    identity = pyrage.x25519.Identity.from_str(secret)
    folder = src.name.endswith(".tar.age")
    dst = dst or src.with_name(src.name.removesuffix(".tar.age" if folder else ".age") or src.name + ".out")
    try:
        if folder:
            _decrypt_folder(pyrage, src, dst, identity)
        else:
            with atomic_path(dst) as tmp:
                if (cli := age_cli()) is not None:
                    _run_age([cli, "-d", "-i", "-", "-o", tmp, str(src)], secret=secret)
                else:
                    pyrage.decrypt_file(str(src), tmp, [identity])
    except (pyrage.DecryptError, AgeCommandError) as exc:
        audit.append("decrypt-failed", path=str(src.absolute()), error=str(exc))
        raise LmdevError(f"cannot decrypt {src}: {exc}", "use the key it was encrypted to") from None
    audit.append("decrypt", path=str(src.absolute()), out=str(dst.absolute()), folder=folder)
    return dst


def _decrypt_folder(pyrage: Any, src: Path, dst: Path, identity: Any) -> None:
    if dst.exists():
        raise LmdevError(f"{dst} already exists", "remove it or pass --out another folder")
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    r, w = os.pipe()
    errors: list[BaseException] = []

    def extract() -> None:
        try:
            with os.fdopen(r, "rb") as reader, tarfile.open(fileobj=reader, mode="r|") as tar:
                tar.extractall(staging, filter="data")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=extract, daemon=True)
    thread.start()
    try:
        with os.fdopen(w, "wb") as writer, open(src, "rb") as f:
            pyrage.decrypt_io(f, writer, [identity])
        thread.join()
        if errors:
            raise LmdevError(f"{src} does not hold a valid folder archive: {errors[0]}")
        inner = [p for p in staging.iterdir()]
        os.replace(inner[0] if len(inner) == 1 and inner[0].is_dir() else staging, dst)
    finally:
        thread.join(timeout=5)
        if staging.exists():
            import shutil

            shutil.rmtree(staging, ignore_errors=True)



# --------------------------------------------------------------------------- in-memory payloads


def resolve_recipients(recipients: Sequence[str] = (), key: str | os.PathLike[str] | None = None) -> list[str]:
    """The age recipients to encrypt to, checked: ``recipients`` as given, or the recipient of
    the own key (``load_identity``) when none are given. Raises ``LmdevError`` early (before
    anything is written) for a malformed recipient or a missing key."""
    return [str(r) for r in _recipients(recipients, key)]


def encrypt_bytes_to(data: bytes, dst: Path, recipients: Sequence[str]) -> None:
    """Write ``data`` age-encrypted to ``dst`` and fsync it. Not atomic by itself: meant for a
    file inside a temporary folder that the caller renames into place (a checkpoint)."""
    pyrage = _pyrage()
    targets = _recipients(recipients, None)
    if (cli := age_cli()) is not None:
        try:
            _run_age([cli, *[a for r in targets for a in ("-r", str(r))], "-o", str(dst)], data=data)
        except AgeCommandError as exc:  # a full disk: an OSError, as pyrage's would be
            raise OSError(f"age: {exc}") from None
        with open(dst, "rb") as written:
            os.fsync(written.fileno())
        return
    with open(dst, "wb", buffering=BUFFER) as out:
        pyrage.encrypt_io(io.BytesIO(data), out, targets)
        out.flush()
        os.fsync(out.fileno())


def decrypt_bytes(src: Path, key: str | os.PathLike[str] | None = None) -> bytes:
    """The plaintext of the age file ``src`` (memory: about twice its size while decrypting)."""
    pyrage = _pyrage()
    secret = load_identity(key).identity
    identity = pyrage.x25519.Identity.from_str(secret)
    out = io.BytesIO()
    try:
        if (cli := age_cli()) is not None:
            return _decrypted(src, _run_age([cli, "-d", "-i", "-", str(src)], secret, stdout=subprocess.PIPE))
        else:
            with open(src, "rb", buffering=BUFFER) as f:
                pyrage.decrypt_io(f, out, [identity])
    except (pyrage.DecryptError, AgeCommandError) as exc:
        audit.append("decrypt-failed", path=str(src.absolute()), error=str(exc))
        raise LmdevError(f"cannot decrypt {src}: {exc}", "use the key it was encrypted to "
                         "($LMDEV_AGE_KEY, $LMDEV_AGE_KEY_FILE or `lmdev secure keygen`'s file)") from None
    return _decrypted(src, out.getvalue())


def _decrypted(src: Path, data: bytes) -> bytes:
    audit.append("decrypt", path=str(src.absolute()), out="(memory)", folder=False)
    return data


def decrypt_to_memory_file(src: Path, key: str | os.PathLike[str] | None = None) -> Path:
    """Decrypt ``src`` into an anonymous in-memory file (Linux ``memfd``) and return a path that
    opens it (``/proc/self/fd/N``, valid for this process): readers that want a path (numpy,
    csv, pyarrow, a memory map) read an encrypted data file while the plaintext never touches a
    disk. Streaming: memory holds the plaintext once."""
    pyrage = _pyrage()
    if not hasattr(os, "memfd_create"):
        raise LmdevError(f"cannot read the encrypted {src} here: in-memory files need Linux",
                         f"decrypt it first: lmdev secure decrypt {src}")
    if not src.is_file() or not is_encrypted(src):
        raise LmdevError(f"{src} is not an age-encrypted file", "a data file ending in .age must be one")
    secret = load_identity(key).identity
    identity = pyrage.x25519.Identity.from_str(secret)
    fd = os.memfd_create(src.name.removesuffix(".age"))
    try:
        if (cli := age_cli()) is not None:
            _run_age([cli, "-d", "-i", "-", str(src)], secret, stdout=fd)
        else:
            with open(src, "rb", buffering=BUFFER) as f, os.fdopen(os.dup(fd), "wb", buffering=BUFFER) as out:
                pyrage.decrypt_io(f, out, [identity])
    except (pyrage.DecryptError, AgeCommandError) as exc:
        os.close(fd)
        audit.append("decrypt-failed", path=str(src.absolute()), error=str(exc))
        raise LmdevError(f"cannot decrypt {src}: {exc}", "use the key it was encrypted to") from None
    audit.append("decrypt", path=str(src.absolute()), out="(memory file)", folder=False)
    return Path(f"/proc/self/fd/{fd}")
