"""Files are written atomically: a temp file in the same folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lmdev.errors import LmdevError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. ``path`` is a new file or an existing regular
    file; anything else there (a folder, a symlink, a device such as /dev/full, a pipe) is
    refused, never replaced. Any failure (a full disk) leaves the old file as it was and raises
    LmdevError."""
    path = Path(path)
    check_target(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise LmdevError(f"cannot write {path}: folder {folder} does not exist",
                         "create it first or choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise LmdevError(f"cannot write {path}: {exc.strerror}", "choose a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        check_target(path)  # it may have appeared meanwhile
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise LmdevError(f"cannot write {path}: {exc.strerror or exc}",
                             "free some disk space or choose another path") from None
        raise
    fsync_path(folder)
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """A temporary file name beside ``path`` for a writer that wants a path (a library that
    writes files itself); when the block completes, the file is fsynced and replaces ``path``
    (checked as by :func:`atomic_write_bytes`); on any failure it is removed."""
    path = Path(path)
    check_target(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        check_target(path)  # it may have appeared meanwhile
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_path(folder)


@contextmanager
def atomic_stream(path: str | Path, buffering: int = -1) -> Iterator[IO[bytes]]:
    """A binary file object written in place of ``path`` only when the block completes."""
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=buffering) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def check_target(path: Path) -> None:
    """Refuse (LmdevError) an output path that names a folder, a symlink or a special file."""
    if not path.name or path.name in (".", ".."):
        raise LmdevError(f"cannot write {path}: it is a folder, not a file name", "give a file path")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LmdevError(f"cannot write {path}: {exc.strerror}", "choose another path") from None
    if stat.S_ISREG(st.st_mode):
        return
    kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a symbolic link" if stat.S_ISLNK(st.st_mode)
            else "a device or other special file")
    raise LmdevError(f"refusing to replace {path}: it is {kind}, not a regular file", "choose a file path")


def fsync_path(folder: Path) -> None:
    """fsync a file or a folder (a folder so that a rename in it is durable); best effort: what
    cannot be opened or synced is skipped."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def read_limited(path: str | Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; checked before reading, so a
    device (``/dev/zero``), a pipe, a folder or a huge file is refused at once with an
    LmdevError naming ``what`` the file is (e.g. "config file")."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise LmdevError(f"{what} {path} does not exist", "check the path") from None
    except OSError as exc:
        raise LmdevError(f"cannot read {what} {path}: {exc.strerror}", "check the path") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise LmdevError(f"{what} {path} is {kind}", "give the path of a file")
    if st.st_size > limit:
        raise LmdevError(f"{what} {path} is {st.st_size:,} bytes, more than the {limit:,} a {what} may have",
                         "is this the right file?")
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)[:limit + 1]
    except OSError as exc:
        raise LmdevError(f"cannot read {what} {path}: {exc.strerror}", "check the file's permissions") from None


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB pieces (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
