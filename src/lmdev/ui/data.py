"""The dashboard's side of the store: one store connection per server thread, and the JSON
shapes of what the store's read side (``lmdev.track.query``) returns. No SQL here.

Everything here only reads: no row of the store is ever written by the dashboard.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.track.metric_names import higher_is_better
from lmdev.track.query import KeyMetric, Lineage, Query, live_status
from lmdev.track.store import DB_NAME, DamagedRun, Store
from lmdev.track.types import RunInfo

__all__ = ["NoStore", "Reader", "higher_is_better", "json_float", "key_metric_dict", "lineage_dict", "run_row"]


class NoStore(LmdevError):
    """There is no store at LMDEV_HOME yet."""


class Reader:
    """One store connection per server thread (SQLite connections are not shared)."""

    def __init__(self, home: Path, read_only: bool = False) -> None:
        self.home = Path(home)
        self.read_only = read_only
        self.path = self.home / DB_NAME
        self._local = threading.local()

    @contextmanager
    def query(self) -> Iterator[Query]:
        q: Query | None = getattr(self._local, "query", None)
        if q is None:
            if not self.path.exists():
                raise NoStore(f"there is no run store at {self.path}",
                              "run `lmdev demo` or `lmdev train` to record runs, or start `lmdev ui` with "
                              "--home (or LMDEV_HOME) pointing at the folder that holds lmdev.db")
            q = Query(Store(self.home, read_only=self.read_only))  # LmdevError when the file is corrupt
            self._local.query = q
        try:
            yield q
        except DamagedRun:
            raise
        except LmdevError as exc:
            # the file went away or went bad under us: open it afresh next time
            if not self.path.exists() or "run store" in exc.message:
                self._local.query = None
                q.store.close()
            raise


def run_row(run: RunInfo) -> dict[str, Any]:
    d = run.to_dict()
    d["live_status"] = live_status(run)
    return d


def json_float(value: float | None) -> float | str | None:
    """A float for JSON: NaN and infinities as the strings "nan", "inf", "-inf"."""
    if value is None:
        return None
    value = float(value)
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return value


def key_metric_dict(m: KeyMetric) -> dict[str, Any]:
    return {"last": json_float(m.last), "best": json_float(m.best), "min": json_float(m.min),
            "max": json_float(m.max), "count": m.count, "nonfinite": m.nonfinite, "step": m.step,
            "higher_is_better": m.higher_is_better}


def lineage_dict(lin: Lineage) -> dict[str, Any]:
    def fork(f: Any) -> dict[str, Any] | None:
        return None if f is None else {"id": f.id, "name": f.name, "status": f.status, "step": f.step,
                                       "start_time": f.start_time, "kind": f.kind}

    return {"id": lin.run_id, "parent": fork(lin.parent), "forks": [fork(f) for f in lin.forks],
            "resumes": [{"time": r.time, "step": r.step, "dropped": r.dropped} for r in lin.resumes]}
