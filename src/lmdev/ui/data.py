"""What the dashboard reads from the run store: the store's own queries plus a few read-only
ones of its own that stay fast on big stores (one query for the runs table's metrics, metric
chunks read straight into numpy arrays).

Everything here only reads: no row of the store is ever written by the dashboard.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lmdev.errors import LmdevError
from lmdev.track.store import DB_NAME, DamagedRun, Store, hostname
from lmdev.track.types import RunInfo

# metrics shown in the runs table, and which way is "best"
_KEY_METRIC = re.compile(r"(loss|acc|accuracy|perplexity|ppl|f1|bleu|rouge|auc|reward|tokens_per_s|mfu)",
                         re.IGNORECASE)
_HIGHER_IS_BETTER = re.compile(r"(acc|accuracy|f1|bleu|rouge|auc|reward|tokens_per_s|throughput|mfu|precision|recall)",
                               re.IGNORECASE)
MAX_TABLE_KEYS = 8  # key metrics per run in the runs table


def higher_is_better(key: str) -> bool:
    return bool(_HIGHER_IS_BETTER.search(key.rsplit("/", 1)[-1]))


def is_key_metric(key: str) -> bool:
    return bool(_KEY_METRIC.search(key))


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
    def store(self) -> Iterator[Store]:
        st: Store | None = getattr(self._local, "store", None)
        if st is None:
            if not self.path.exists():
                raise NoStore(f"there is no run store at {self.path}",
                              "run `lmdev demo` or `lmdev train` to record runs, or start `lmdev ui` with "
                              "--home (or LMDEV_HOME) pointing at the folder that holds lmdev.db")
            st = Store(self.home, read_only=self.read_only)  # raises LmdevError when the file is corrupt
            self._local.store = st
        try:
            yield st
        except sqlite3.DatabaseError as exc:  # a query that the store did not wrap
            self._local.store = None
            st.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise LmdevError(f"cannot read the run store {self.path}: {exc}") from None
            raise LmdevError(f"the run store {self.path} is not a readable SQLite database ({exc})",
                             f"move it aside to start a new store (mv {self.path} {self.path}.corrupt)") from None
        except LmdevError:
            if not self.path.exists():
                self._local.store = None
            raise


def live_status(run: RunInfo, pid_alive: Any = None, now: float | None = None) -> str:
    """The status to show: a ``running`` run whose process is gone shows as ``killed``
    (without writing it, unlike ``lmdev runs``)."""
    if run.status != "running":
        return run.status
    now = time.time() if now is None else now
    if run.host == hostname():
        from lmdev.track.store import _pid_alive

        alive = (pid_alive or _pid_alive)(run.pid, None)
        return "running" if alive else "killed"
    beat = run.heartbeat or run.start_time
    return "running" if now - beat < 600 else "killed"


def run_row(run: RunInfo) -> dict[str, Any]:
    d = run.to_dict()
    d["live_status"] = live_status(run)
    return d


def table_metrics(st: Store) -> dict[str, dict[str, dict[str, Any]]]:
    """{run id: {key: {last, best, min, max, count, nonfinite, step}}} for the key metrics of
    every run, in two queries whatever the number of runs."""
    conn = st.conn
    ids = dict(conn.execute("SELECT rid, id FROM runs").fetchall())
    keys = {kid: key for kid, key in conn.execute("SELECT id, key FROM metric_keys") if is_key_metric(key)}
    if not keys:
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    rows = conn.execute(
        "SELECT run, key, sum(n), min(value_min), max(value_max), sum(nonfinite), max(step_max), max(rowid) "
        "FROM metrics GROUP BY run, key").fetchall()
    last_rows: list[int] = []
    per_run_count: dict[int, int] = {}
    picked = []
    for rid, kid, n, lo, hi, bad, step, last_rowid in rows:
        if kid not in keys or rid not in ids:
            continue
        if per_run_count.get(rid, 0) >= MAX_TABLE_KEYS:
            continue
        per_run_count[rid] = per_run_count.get(rid, 0) + 1
        picked.append((rid, kid, n, lo, hi, bad, step))
        last_rows.append(last_rowid)
    last_vals: dict[tuple[int, int], float] = {}
    for i in range(0, len(last_rows), 900):
        chunk = last_rows[i:i + 900]
        for rid, kid, vals in conn.execute(
                f"SELECT run, key, vals FROM metrics WHERE rowid IN ({','.join('?' * len(chunk))})", chunk):
            last_vals[(rid, kid)] = _last_value(vals)
    for rid, kid, n, lo, hi, bad, step in picked:
        key = keys[kid]
        best = hi if higher_is_better(key) else lo
        out.setdefault(str(ids[rid]), {})[str(key)] = {
            "last": json_float(last_vals.get((rid, kid))), "best": json_float(_number(best)),
            "min": json_float(_number(lo)), "max": json_float(_number(hi)), "count": int(_number(n) or 0),
            "nonfinite": int(_number(bad) or 0), "step": step if isinstance(step, int) else None,
            "higher_is_better": higher_is_better(str(key)),
        }
    return out


def _last_value(vals: Any) -> float:
    """The last value of a stored chunk; NaN for a chunk that is not whole (a damaged row)."""
    if not isinstance(vals, bytes) or not vals or len(vals) % 8:
        return float("nan")
    return float(np.frombuffer(vals, dtype="<f8")[-1])


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


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


def metric_arrays(st: Store, run: RunInfo, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{key: (steps, times, values)} as numpy arrays in step order, read chunk by chunk."""
    conn = st.conn
    rid = st._rid(run.id)
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for key in keys:
        try:
            arrays = _key_arrays(conn, rid, key)
        except (ValueError, TypeError) as exc:  # a chunk that is not whole
            raise DamagedRun(run.id, f"metric {key!r}: {exc}") from None
        if arrays is not None:
            out[key] = arrays
    return out


def _key_arrays(conn: sqlite3.Connection, rid: int, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One key's (steps, times, values) in step order; None when the run has no such key."""
    row = conn.execute("SELECT id FROM metric_keys WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    chunks = conn.execute("SELECT steps, times, vals FROM metrics WHERE run = ? AND key = ? ORDER BY rowid",
                          (rid, row[0])).fetchall()
    if not chunks:
        return None
    steps = np.concatenate([np.frombuffer(c[0], dtype="<i8") for c in chunks])
    times = np.concatenate([np.frombuffer(c[1], dtype="<f8") for c in chunks])
    vals = np.concatenate([np.frombuffer(c[2], dtype="<f8") for c in chunks])
    if not steps.size == times.size == vals.size:
        raise ValueError("its arrays differ in length")
    if steps.size > 1 and np.any(steps[1:] < steps[:-1]):
        order = np.argsort(steps, kind="stable")
        steps, times, vals = steps[order], times[order], vals[order]
    return steps, times, vals


def metrics_cursor(st: Store, run: RunInfo) -> dict[str, Any]:
    """A cheap fingerprint of everything a run has recorded: it changes when anything new arrives."""
    conn = st.conn
    rid = st._rid(run.id)
    m = conn.execute("SELECT coalesce(max(rowid), 0), coalesce(sum(n), 0) FROM metrics WHERE run = ?", (rid,)).fetchone()
    s = conn.execute("SELECT count(*), max(time) FROM system_metrics WHERE run = ?", (rid,)).fetchone()
    e = conn.execute("SELECT count(*) FROM events WHERE run = ?", (rid,)).fetchone()
    a = conn.execute("SELECT count(*) FROM artifacts WHERE run = ?", (rid,)).fetchone()
    return {"metric_chunk": m[0], "points": m[1], "system": s[0], "system_time": s[1], "events": e[0],
            "artifacts": a[0]}


def system_series(st: Store, run: RunInfo) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"device/key[/rankN]": (times, values)} for the run's system samples."""
    rid = st._rid(run.id)
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for t, rank, device, key, value in st.conn.execute(
            "SELECT time, rank, device, key, value FROM system_metrics WHERE run = ? ORDER BY time, rowid", (rid,)):
        name = f"{device}/{key}" + (f"/rank{rank}" if rank else "")
        ts, vs = groups.setdefault(name, ([], []))
        ts.append(t)
        vs.append(float("nan") if value is None else value)
    return {k: (np.asarray(ts, dtype=float), np.asarray(vs, dtype=float)) for k, (ts, vs) in groups.items()}


def parse_json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default
