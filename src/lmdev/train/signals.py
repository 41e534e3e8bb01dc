"""Stopping a training cleanly: SIGTERM, SIGINT and SIGHUP only set a flag that the loop reads
at the end of a step; it then saves a checkpoint and stops."""

from __future__ import annotations

import signal
from typing import Any

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n))


class SignalLatch:
    """SIGTERM, SIGINT and SIGHUP only set a flag (``signals``): the loop saves a checkpoint at
    the end of the step and stops. A second signal while that save (or the run's final record)
    is written is noted too, never an exit mid-save.

    ``install()`` while another latch is installed (the session's, around the training and the
    run's final record) returns that one: a signal that came during set-up is seen by the loop."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    @classmethod
    def install(cls) -> SignalLatch:
        import threading

        latch = cls()
        if threading.current_thread() is not threading.main_thread():
            return latch
        outer = signal.getsignal(signal.SIGTERM)
        if isinstance(outer, SignalLatch):
            return outer  # its owner restores it
        for sig in STOP_SIGNALS:
            latch._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, latch)
        return latch

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
