"""The dashboard's small guards: same-origin redirects, the port-scoped token cookie, the cap on
live streams, the back-off after failed logins and the strength of a user-chosen token.

Plain objects with no FastAPI in them, so each rule is tested on its own (tests/unit/ui/).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE_PREFIX = "lmdev_ui_token"
MIN_TOKEN_BITS = 128
MAX_STREAMS = 32  # live server-sent-event streams in all
MAX_STREAMS_PER_CLIENT = 6  # ... and from one client address (a browser holds ~6 per host anyway)
FREE_FAILURES = 5  # wrong tokens a client may send before it must wait
MAX_BACKOFF_S = 300.0

_SAFE_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/-]*\Z")


def safe_redirect_path(path: str) -> str:
    """``path`` when it is a same-origin path (``/x/y``), else ``/``: never ``//host``,
    ``/\\host``, ``https://...`` or anything with a scheme, space or control character."""
    return path if _SAFE_PATH.match(path or "") else "/"


def cookie_name(port: int | None) -> str:
    """The token cookie's name, per port: cookies ignore ports, so two dashboards on one host
    would otherwise overwrite each other's token."""
    return f"{COOKIE_PREFIX}_{int(port)}" if port else COOKIE_PREFIX


def token_bits(token: str) -> float:
    """A generous estimate of a token's entropy: its length times the bits of the smallest
    alphabet it fits (hex, url-safe base64, printable ASCII); a token of fewer than 8 distinct
    characters ("aaaa...", "abab...") counts only the bits of those characters."""
    if not token:
        return 0.0
    if re.fullmatch(r"[0-9a-f]+|[0-9A-F]+", token):
        per_char = 4.0
    elif re.fullmatch(r"[A-Za-z0-9_-]+", token):
        per_char = 6.0
    else:
        per_char = math.log2(95)
    distinct = len(set(token))
    if distinct < 8:
        per_char = min(per_char, math.log2(distinct)) if distinct > 1 else 0.0
    return len(token) * per_char


class StreamGate:
    """Counts the live streams, in all and per client; ``enter`` says whether one more may open."""

    def __init__(self, total: int = MAX_STREAMS, per_client: int = MAX_STREAMS_PER_CLIENT) -> None:
        self.total, self.per_client = total, per_client
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, client: str) -> bool:
        with self._lock:
            if sum(self._open.values()) >= self.total or self._open.get(client, 0) >= self.per_client:
                return False
            self._open[client] = self._open.get(client, 0) + 1
            return True

    def leave(self, client: str) -> None:
        with self._lock:
            left = self._open.get(client, 0) - 1
            if left > 0:
                self._open[client] = left
            else:
                self._open.pop(client, None)

    def count(self) -> int:
        with self._lock:
            return sum(self._open.values())


@dataclass
class _Failures:
    count: int = 0
    until: float = 0.0
    seen: set[str] = field(default_factory=set)  # digests of the wrong tokens already counted


@dataclass
class LoginThrottle:
    """Failed logins per client address: after ``free`` wrong tokens, each further one makes the
    client wait twice as long (1 s, 2 s, 4 s... up to ``max_wait``) before any token is checked.
    The same wrong token sent again (a stale cookie on every request of a page) counts once; a
    right token clears the client's record."""

    free: int = FREE_FAILURES
    max_wait: float = MAX_BACKOFF_S
    clock: Callable[[], float] = time.monotonic
    _clients: dict[str, _Failures] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_left(self, client: str) -> float:
        """Seconds the client must still wait before a token of theirs is checked (0: none)."""
        with self._lock:
            rec = self._clients.get(client)
            return max(0.0, rec.until - self.clock()) if rec else 0.0

    def failed(self, client: str, token: str) -> None:
        import hashlib

        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        with self._lock:
            if len(self._clients) > 10_000:  # never grow without bound: forget the oldest
                self._clients.pop(next(iter(self._clients)))
            rec = self._clients.setdefault(client, _Failures())
            if digest in rec.seen:
                return
            if len(rec.seen) < 1024:
                rec.seen.add(digest)
            rec.count += 1
            if rec.count > self.free:
                rec.until = self.clock() + min(self.max_wait, 2.0 ** (rec.count - self.free - 1))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)
