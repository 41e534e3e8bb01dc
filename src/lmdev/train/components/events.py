"""A run's event log as the trainer writes it: no run, no events; ranks other than 0 label
their events with their rank (only rank 0 logs metrics)."""

from __future__ import annotations

import warnings
from typing import Any

from lmdev.errors import LmdevWarning


class RunEvents:
    def __init__(self, run: Any, rank: int = 0) -> None:
        self.run, self.rank = run, rank

    def event(self, message: str, level: str = "info") -> None:
        if self.run is None:
            return
        self.run.event(message if self.rank == 0 else f"[rank {self.rank}] {message}", level=level)

    def warning(self, message: str) -> None:
        self.event(message, "warning")

    def tell_user(self, message: str) -> None:
        """Something the user must see (a corrupt checkpoint skipped): an event and a warning."""
        self.warning(message)
        warnings.warn(message, LmdevWarning, stacklevel=3)
