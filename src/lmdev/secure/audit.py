"""The audit log: an append-only, hash-chained JSON-lines file, ``$LMDEV_HOME/audit.log``.

Each line is one entry::

    {"prev":"<sha256 of the previous entry>","seq":N,"time":"...","event":"scan",...,"hash":"<sha256>"}

where ``hash`` is the sha256 of the line's bytes up to (not including) ``,"hash":``. Editing an
entry breaks its hash; deleting, inserting or reordering entries breaks the next entry's
``prev``. Verification hashes the raw bytes (no JSON parsing), so a million entries take about a
second. An entry is written with one ``write`` on an ``O_APPEND`` descriptor under an exclusive
``flock`` and fsynced: a kill -9 leaves either the whole entry or none of it. A torn last line
(power loss mid-write) is reported as such and dropped, with a record of it, by the next append.

A hash chain shows tampering by anyone who does not rewrite every later entry; to catch a full
rewrite, keep the head hash (``lmdev secure audit verify`` prints it) somewhere else and pass it
back with ``--head``.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import io
import json
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError, LmdevWarning

LOG_NAME = "audit.log"
GENESIS = "0" * 64
_PREFIX = b'{"prev":"'
_SUFFIX_LEN = len(b',"hash":"') + 64 + len(b'"}')


def log_path(home: str | os.PathLike[str] | None = None) -> Path:
    from lmdev.track.store import home as store_home

    return store_home(home) / LOG_NAME


def format_entry(prev: str, seq: int, event: str, details: dict[str, Any]) -> bytes:
    """One entry's line (with its newline), chained to ``prev``."""
    body = {"seq": seq, "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "event": event, "user": _user(), "host": socket.gethostname(), "pid": os.getpid(), **details}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=True, default=str, allow_nan=False)
    head = _PREFIX + prev.encode() + b'",' + text[1:-1].encode()
    return head + b',"hash":"' + hashlib.sha256(head).hexdigest().encode() + b'"}\n'


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _tail(fd: int, size: int) -> tuple[bytes, int]:
    """The last complete line of the file (b'' if none) and the offset where a torn tail starts
    (``size`` when the file ends with a newline)."""
    pos, buf = size, b""
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        lines = buf.split(b"\n")
        if len(lines) >= 3 or (pos == 0 and len(lines) >= 2):
            torn_at = size - len(lines[-1])
            return lines[-2] + b"\n", torn_at
    return b"", size - len(buf)


def append(event: str, home: str | os.PathLike[str] | None = None, **details: Any) -> None:
    """Append one entry. Best effort for the caller: a log that cannot be written is a warning."""
    path = log_path(home)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        warnings.warn(f"cannot write the audit log {path}: {exc.strerror}", LmdevWarning, stacklevel=2)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        last, torn_at = _tail(fd, size)
        prev, seq = (GENESIS, 0) if not last else (_digest(last), _seq(last) + 1)
        if torn_at < size:
            torn = os.pread(fd, size - torn_at, torn_at)
            os.ftruncate(fd, torn_at)
            line = format_entry(prev, seq, "audit.torn-tail-dropped",
                         {"bytes": len(torn), "sha256": hashlib.sha256(torn).hexdigest()})
            os.write(fd, line)
            prev, seq = _digest(line), seq + 1
        os.write(fd, format_entry(prev, seq, event, details))
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(line: bytes) -> str:
    """The hash of a complete entry line (ending in a newline)."""
    return line[-67:-3].decode()


def _seq(line: bytes) -> int:
    try:
        return int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        return 0


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    head: str
    first_bad: int | None = None        # 1-based line number of the first bad entry
    problem: str = ""
    torn_tail: bool = False
    problems: list[str] = field(default_factory=list)


PARALLEL_MIN = 32 * 1024 * 1024   # below this a single pass is quicker than starting workers


def verify(home: str | os.PathLike[str] | None = None, head: str | None = None,
           workers: int | None = None) -> VerifyResult:
    """Check the whole chain; name the first bad entry. The loop only slices and hashes bytes
    (no JSON). A large log is cut at line boundaries into one piece per CPU, each piece's chain
    checked in its own process and the pieces joined (the first line of each must follow the
    last of the one before); any problem is then located by a single pass, so the answer is the
    same as the sequential one."""
    path = log_path(home)
    if not path.is_file():
        raise LmdevError(f"no audit log at {path}", "set LMDEV_HOME to the folder holding audit.log")
    size = path.stat().st_size
    workers = workers or min(os.cpu_count() or 1, 16)
    joined = _parallel(path, size, workers) if workers > 1 and size >= PARALLEL_MIN else None
    result = joined or _sequential(path)
    if result.ok and head and head != result.head:
        return VerifyResult(False, result.entries, result.head, result.entries, f"the head is {result.head[:16]}..., "
                            f"not the expected {head[:16]}... (entries were removed from the end or the log rewritten)")
    return result


def _sequential(path: Path) -> VerifyResult:
    with open(path, "rb") as f:
        n, first_prev, prev, bad = _chain(f, GENESIS.encode())
    if bad is not None:
        return _diagnose(bad, prev, n)
    return VerifyResult(True, n, prev.decode())


def _chain(lines: Any, prev: bytes | None) -> tuple[int, bytes, bytes, bytes | None]:
    """Check consecutive lines: (lines read, the first line's ``prev``, the last good digest, the
    first bad line or None). ``prev`` None: the first line's predecessor is checked by the caller."""
    sha, hash_key, prefix = hashlib.sha256, b',"hash":"', _PREFIX
    n, first_prev = 0, b""
    for line in lines:
        n += 1
        if prev is None:
            prev = first_prev = line[9:73]
        elif n == 1:
            first_prev = prev
        digest = line[-67:-3]
        if (line[9:73] != prev or line[:9] != prefix or line[-76:-67] != hash_key
                or line[-1:] != b"\n" or sha(line[:-76]).hexdigest().encode() != digest):
            return n, first_prev, prev, line
        prev = digest
    return n, first_prev, prev or b"", None


def _piece(path: str, start: int, end: int) -> tuple[int, bytes, bytes, bool]:
    """One worker's piece ``[start, end)`` (whole lines): lines, first prev, last digest, ok."""
    with open(path, "rb", buffering=0) as f:
        n, first_prev, last, bad = _chain(_lines_between(f, start, end), None)
    return n, first_prev, last, bad is None


def _lines_between(f: Any, start: int, end: int, block: int = 1 << 24) -> Iterator[bytes]:
    """The lines of ``f`` in ``[start, end)``, read in large blocks (a last line without its
    newline is yielded as it is: a torn tail)."""
    f.seek(start)
    left, tail = end - start, b""
    while left > 0:
        data = f.read(min(block, left))
        if not data:
            break
        left -= len(data)
        for line in io.BytesIO(tail + data):
            tail = line
            if line[-1:] == b"\n":
                yield line
                tail = b""
    if tail:
        yield tail


def _cuts(path: Path, size: int, pieces: int) -> list[int]:
    """Offsets that start lines, splitting the file into about equal pieces."""
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, pieces):
            f.seek(size * i // pieces)
            f.readline()
            if f.tell() > cuts[-1] and f.tell() < size:
                cuts.append(f.tell())
    return [*cuts, size]


def _parallel(path: Path, size: int, workers: int) -> VerifyResult | None:
    """The chain checked in pieces by worker processes; None when any piece or joint is bad (the
    caller then finds and names the first bad entry with one sequential pass)."""
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    cuts = _cuts(path, size, workers)
    # fork is cheap and safe from a single-threaded CLI; anywhere else start clean interpreters
    ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
    with ProcessPoolExecutor(len(cuts) - 1, mp_context=ctx) as pool:
        parts = list(pool.map(_piece, [str(path)] * (len(cuts) - 1), cuts[:-1], cuts[1:]))
    prev, total = GENESIS.encode(), 0
    for n, first_prev, last, ok in parts:
        if not ok or first_prev != prev:
            return None
        prev, total = last, total + n
    return VerifyResult(True, total, prev.decode())


def _diagnose(line: bytes, prev: bytes, n: int) -> VerifyResult:
    """Why line ``n`` broke the chain (the slow path, taken once)."""
    good = n - 1
    if not line.endswith(b"\n"):
        return VerifyResult(True, good, prev.decode(), n, "the last entry is torn (an interrupted "
                            "write); the next append drops it", torn_tail=True)
    if not line.startswith(_PREFIX) or line[-_SUFFIX_LEN - 1:-_SUFFIX_LEN + 8] != b',"hash":"':
        return VerifyResult(False, good, prev.decode(), n, "not an audit entry (edited or inserted)")
    if hashlib.sha256(line[:-_SUFFIX_LEN - 1]).hexdigest().encode() != line[-67:-3]:
        return VerifyResult(False, good, prev.decode(), n, "its hash does not match its content (edited)")
    return VerifyResult(False, good, prev.decode(), n, "it does not follow the entry before it "
                        "(an entry was deleted, inserted or moved here)")


def entries(home: str | os.PathLike[str] | None = None, since: float | None = None) -> Iterator[dict[str, Any]]:
    """The parsed entries (complete lines only), optionally those at or after ``since`` (epoch s)."""
    path = log_path(home)
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if since is not None:
                try:
                    if datetime.fromisoformat(entry["time"]).timestamp() < since:
                        continue
                except (KeyError, ValueError, TypeError):
                    continue
            yield entry


def record(event: str, **details: Any) -> None:
    """Record an action of another part of lmdev (a setup install, a remote command or
    bootstrap) in one line at its call site: secrets in the details are redacted, long strings
    cut to 1000 characters, and nothing is ever raised to the caller (a failure is a warning)."""
    try:
        from lmdev.secure.redact import redact_value

        short = {k: (v[:1000] + "..." if isinstance(v, str) and len(v) > 1000 else v) for k, v in details.items()}
        append(event, **redact_value(short))
    except Exception as exc:  # noqa: BLE001 - the action itself must not fail because of its record
        warnings.warn(f"cannot record {event} in the audit log: {exc}", LmdevWarning, stacklevel=2)
