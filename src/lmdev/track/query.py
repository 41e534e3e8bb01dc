"""The store's read side: every query the dashboard (and any other reader) needs, typed.

The store (``store.py``) owns the schema and the writes; this module owns the reads that are
too specialised for ``Store`` itself and must stay fast on big stores: the runs table's key
metrics in two queries whatever the number of runs, a metric's points read chunk by chunk
straight into numpy arrays (the input of a chart's downsampling), a cheap fingerprint of what a
run has recorded (for live pages), system samples grouped by device, and a run's lineage
(resumes and forks).

Nothing here writes. ``Query(store)`` wraps an open :class:`~lmdev.track.store.Store`; every
SQL error becomes the store's own ``LmdevError`` (``Store.reading``), a run whose rows cannot
be decoded a ``DamagedRun``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmdev.track.metric_names import higher_is_better
from lmdev.track.store import DamagedRun, Store, run_alive
from lmdev.track.types import Artifact, Event, MetricSummary, RunInfo

# metrics shown in the runs table, and which way is "best"
_KEY_METRIC = re.compile(r"(loss|acc|accuracy|perplexity|ppl|f1|bleu|rouge|auc|reward|tokens_per_s|mfu)",
                         re.IGNORECASE)
MAX_TABLE_KEYS = 8  # key metrics per run in the runs table
COMPRESS_TAG = "lmdev-compress"  # the tag `lmdev compress` puts on the variants it records as runs


def is_key_metric(key: str) -> bool:
    return bool(_KEY_METRIC.search(key))


@dataclass
class KeyMetric:
    """One key metric of one run, as the runs table shows it."""

    key: str
    last: float | None
    best: float | None
    min: float | None
    max: float | None
    count: int
    nonfinite: int
    step: int | None
    higher_is_better: bool


@dataclass
class Series:
    """One metric's points in step order (points of one step in logging order)."""

    steps: np.ndarray  # int64
    times: np.ndarray  # float64, seconds since the epoch
    values: np.ndarray  # float64, NaN / Inf as stored


@dataclass
class Cursor:
    """A cheap fingerprint of everything a run has recorded: it changes when anything new arrives."""

    metric_chunk: int
    points: int
    system: int
    system_time: float | None
    events: int
    artifacts: int
    media: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class MediaKey:
    """One media key of a run (a histogram, image, text or table series) and its steps."""

    key: str
    kind: str
    count: int
    first_step: int
    last_step: int


@dataclass
class Resume:
    """The run was resumed from a checkpoint at ``step``; ``dropped`` points logged past it by the
    earlier process were replaced."""

    time: float
    step: int | None
    dropped: int


@dataclass
class Fork:
    """A run started from another run's checkpoint at ``step``."""

    id: str
    name: str
    status: str
    step: int | None
    start_time: float
    kind: str = "fork"  # "fork", or "compressed": a variant `lmdev compress` made of the run


@dataclass
class Lineage:
    """Where a run comes from and what came of it."""

    run_id: str
    parent: Fork | None  # the run this one was forked from (``step``: the fork step)
    forks: list[Fork] = field(default_factory=list)  # runs forked from this one
    resumes: list[Resume] = field(default_factory=list)


def fork_step(run: RunInfo) -> int | None:
    """The step of its parent a fork starts from, when the store records it."""
    return run.fork_step


def live_status(run: RunInfo, now: float | None = None) -> str:
    """The status to show: a ``running`` run whose process is gone shows as ``killed`` (without
    writing it, unlike ``Store.reap``)."""
    if run.status != "running":
        return run.status
    now = time.time() if now is None else now
    return "running" if run_alive(run.host, run.pid, None, run.heartbeat or run.start_time, now) else "killed"


class Query:
    """Read-only queries over one open store (not shared between threads, as ``Store``)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.conn

    # -- runs ---------------------------------------------------------------------------------

    def run_count(self) -> int:
        with self.store.reading():
            return int(self.conn.execute("SELECT count(*) FROM runs").fetchone()[0])

    def runs(self, project: str | None = None, limit: int | None = None) -> tuple[list[RunInfo], list[DamagedRun]]:
        """Runs, newest first, and the runs that could not be read."""
        infos = self.store.list_runs(project=project, limit=limit)
        return infos, list(self.store.damaged)

    def run(self, ref: str) -> RunInfo:
        """A run by id, id prefix or name."""
        return self.store.get_run(ref)

    def summaries(self, run: RunInfo) -> list[MetricSummary]:
        return self.store.summaries(run)

    def events(self, run: RunInfo) -> list[Event]:
        return self.store.events(run)

    def artifacts(self, run: RunInfo) -> list[Artifact]:
        return self.store.artifacts(run)

    def table_metrics(self) -> dict[str, dict[str, KeyMetric]]:
        """{run id: {key: KeyMetric}} for the key metrics of every run, in a few queries whatever
        the number of runs."""
        with self.store.reading():
            ids = dict(self.conn.execute("SELECT rid, id FROM runs").fetchall())
            keys = {kid: key for kid, key in self.conn.execute("SELECT id, key FROM metric_keys")
                    if is_key_metric(key)}
            if not keys:
                return {}
            rows = self.conn.execute(
                "SELECT run, key, sum(n), min(value_min), max(value_max), sum(nonfinite), max(step_max), "
                "max(rowid) FROM metrics GROUP BY run, key").fetchall()
            picked: list[tuple[Any, ...]] = []
            per_run: dict[int, int] = {}
            for rid, kid, n, lo, hi, bad, step, last_rowid in rows:
                if kid not in keys or rid not in ids or per_run.get(rid, 0) >= MAX_TABLE_KEYS:
                    continue
                per_run[rid] = per_run.get(rid, 0) + 1
                picked.append((rid, kid, n, lo, hi, bad, step, last_rowid))
            last_vals = self._last_values([p[-1] for p in picked])
        out: dict[str, dict[str, KeyMetric]] = {}
        for rid, kid, n, lo, hi, bad, step, last_rowid in picked:
            key = str(keys[kid])
            best = hi if higher_is_better(key) else lo
            out.setdefault(str(ids[rid]), {})[key] = KeyMetric(
                key=key, last=last_vals.get(last_rowid), best=_number(best), min=_number(lo), max=_number(hi),
                count=int(_number(n) or 0), nonfinite=int(_number(bad) or 0),
                step=step if isinstance(step, int) else None, higher_is_better=higher_is_better(key))
        return out

    def _last_values(self, rowids: list[int]) -> dict[int, float]:
        out: dict[int, float] = {}
        for i in range(0, len(rowids), 900):
            chunk = rowids[i:i + 900]
            for rowid, vals in self.conn.execute(
                    f"SELECT rowid, vals FROM metrics WHERE rowid IN ({','.join('?' * len(chunk))})", chunk):
                out[rowid] = _last_value(vals)
        return out

    # -- metrics ------------------------------------------------------------------------------

    def series(self, run: RunInfo, keys: Sequence[str]) -> dict[str, Series]:
        """{key: Series} for the keys the run has, read chunk by chunk into numpy arrays."""
        out: dict[str, Series] = {}
        with self.store.reading():
            rid = self.store.rid(run.id)
            for key in keys:
                try:
                    s = self._key_series(rid, key)
                except (ValueError, TypeError) as exc:  # a chunk that is not whole
                    raise DamagedRun(run.id, f"metric {key!r}: {exc}") from None
                if s is not None:
                    out[key] = s
        return out

    def _key_series(self, rid: int, key: str) -> Series | None:
        row = self.conn.execute("SELECT id FROM metric_keys WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        chunks = self.conn.execute("SELECT steps, times, vals FROM metrics WHERE run = ? AND key = ? "
                                   "ORDER BY rowid", (rid, row[0])).fetchall()
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
        return Series(steps, times, vals)

    def metric_keys(self) -> list[str]:
        """Every metric key any run of the store has logged, sorted."""
        with self.store.reading():
            return sorted(str(r[0]) for r in self.conn.execute("SELECT key FROM metric_keys"))

    def final_values(self, runs: Sequence[RunInfo], spellings: Sequence[str]) -> dict[str, float]:
        """{run id: the last value (the last point logged at its highest step) of the first of
        ``spellings`` the run has} (``val/loss`` and Keras' ``val_loss`` are one metric). One
        chunk read per run, whatever the length of its series."""
        out: dict[str, float] = {}
        with self.store.reading():
            ids = dict(self.conn.execute(
                f"SELECT key, id FROM metric_keys WHERE key IN ({','.join('?' * len(spellings))})",
                list(spellings)).fetchall()) if spellings else {}
            kids = [ids[k] for k in spellings if k in ids]
            for run in runs:
                rid = self.store.rid(run.id)
                for kid in kids:
                    row = self.conn.execute("SELECT steps, vals, step_max FROM metrics WHERE run = ? AND key = ? "
                                            "ORDER BY step_max DESC, rowid DESC LIMIT 1", (rid, kid)).fetchone()
                    if row is None:
                        continue
                    try:
                        steps, vals = np.frombuffer(row[0], dtype="<i8"), np.frombuffer(row[1], dtype="<f8")
                        out[run.id] = float(vals[np.flatnonzero(steps == row[2])[-1]])
                    except (ValueError, TypeError, IndexError) as exc:
                        raise DamagedRun(run.id, f"a metric chunk: {exc}") from None
                    break
        return out

    def cursor(self, run: RunInfo) -> Cursor:
        with self.store.reading():
            rid = self.store.rid(run.id)
            m = self.conn.execute("SELECT coalesce(max(rowid), 0), coalesce(sum(n), 0) FROM metrics "
                                  "WHERE run = ?", (rid,)).fetchone()
            s = self.conn.execute("SELECT count(*), max(time) FROM system_metrics WHERE run = ?", (rid,)).fetchone()
            e = self.conn.execute("SELECT count(*) FROM events WHERE run = ?", (rid,)).fetchone()
            a = self.conn.execute("SELECT count(*) FROM artifacts WHERE run = ?", (rid,)).fetchone()
            media = self._media_count(rid)
        return Cursor(metric_chunk=m[0], points=m[1], system=s[0], system_time=s[1], events=e[0],
                      artifacts=a[0], media=media)

    def _media_count(self, rid: int) -> int:
        if not self._has_table("media"):
            return 0
        return int(self.conn.execute("SELECT count(*) FROM media WHERE run = ?", (rid,)).fetchone()[0])

    def _has_table(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (name,)).fetchone() is not None

    # -- media --------------------------------------------------------------------------------

    def media_keys(self, run: RunInfo) -> list[MediaKey]:
        """The run's media keys with their kind, how many items and their step range."""
        with self.store.reading():
            if not self._has_table("media"):
                return []
            return [MediaKey(str(k), str(kind), int(n), int(lo), int(hi)) for k, kind, n, lo, hi in self.conn.execute(
                "SELECT key, kind, count(*), min(step), max(step) FROM media WHERE run = ? "
                "GROUP BY key, kind ORDER BY key", (self.store.rid(run.id),))]

    def media(self, run: RunInfo, key: str | None = None, kind: str | None = None,
              limit: int | None = None) -> tuple[list[Any], bool]:
        """The run's media items (``Store.media``: key then step order) and whether ``limit``
        cut them (the latest steps of each key are kept)."""
        with self.store.reading():
            if not self._has_table("media"):
                return [], False
        items = self.store.media(run, key=key, kind=kind)
        if limit is None or len(items) <= limit:
            return items, False
        keep = sorted(range(len(items)), key=lambda i: (-items[i].step, i))[:limit]
        return [items[i] for i in sorted(keep)], True

    # -- system -------------------------------------------------------------------------------

    def system_keys(self, run: RunInfo) -> list[str]:
        """The run's system series names, ``device/key`` (``/rankN`` past rank 0), sorted."""
        with self.store.reading():
            return sorted(str(r[0]) for r in self.conn.execute(
                "SELECT DISTINCT device || '/' || key || CASE WHEN rank THEN '/rank' || rank ELSE '' END "
                "FROM system_metrics WHERE run = ?", (self.store.rid(run.id),)))

    def system_series(self, run: RunInfo) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{"device/key[/rankN]": (times, values)} for the run's system samples."""
        groups: dict[str, tuple[list[float], list[float]]] = {}
        for s in self.store.system(run):
            name = f"{s.device}/{s.key}" + (f"/rank{s.rank}" if s.rank else "")
            ts, vs = groups.setdefault(name, ([], []))
            ts.append(s.time)
            vs.append(float("nan") if s.value is None else s.value)
        return {k: (np.asarray(ts, dtype=float), np.asarray(vs, dtype=float)) for k, (ts, vs) in groups.items()}

    # -- lineage ------------------------------------------------------------------------------

    def lineage(self, run: RunInfo) -> Lineage:
        """The run's parent (when it is a fork), its forks, and its resumes."""
        parent = None
        if run.parent_id:
            try:
                p = self.store.get_run(run.parent_id)
                parent = Fork(p.id, p.name, live_status(p), fork_step(run), p.start_time, _child_kind(run))
            except DamagedRun:
                raise
            except Exception:  # the parent was deleted: keep its id
                parent = Fork(run.parent_id, run.parent_id, "deleted", fork_step(run), 0.0, _child_kind(run))
        return Lineage(run.id, parent, self.forks(run), self.resumes(run))

    def forks(self, run: RunInfo) -> list[Fork]:
        """Runs forked from ``run`` (and variants compressed from it), oldest first."""
        return [Fork(child.id, child.name, live_status(child), fork_step(child), child.start_time, _child_kind(child))
                for child in self.store.forks(run)]

    def resumes(self, run: RunInfo) -> list[Resume]:
        """Each time the run was resumed (its ``resume`` events), oldest first."""
        out = []
        for e in self.store.resumes(run):
            step, dropped = e.data.get("step"), e.data.get("dropped", 0)
            out.append(Resume(e.time, step if isinstance(step, int) else None,
                              dropped if isinstance(dropped, int) else 0))
        return out


def _child_kind(run: RunInfo) -> str:
    return "compressed" if COMPRESS_TAG in run.tags else "fork"


def _last_value(vals: Any) -> float:
    """The last value of a stored chunk; NaN for a chunk that is not whole (a damaged row)."""
    if not isinstance(vals, bytes) or not vals or len(vals) % 8:
        return float("nan")
    return float(np.frombuffer(vals, dtype="<f8")[-1])


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
