"""Server-side downsampling that keeps a curve's shape: first, min, max and last per bucket.

A chart a thousand pixels wide cannot show more than a few thousand points; sending a million
costs seconds. Each bucket of consecutive points keeps its first and last point (so lines join
where they should) and its smallest and largest value (so spikes survive), the "M4" reduction.
Non-finite values (NaN, +Inf, -Inf) are never averaged away: the first non-finite point of each
bucket is kept, sent as ``null`` (a gap in the line) and named in ``flags``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_POINTS = 2000
MAX_POINTS = 20000


def select(values: np.ndarray, points: int = DEFAULT_POINTS) -> np.ndarray:
    """Indices (sorted, unique) of the points to keep out of ``values``.

    At most ``points`` finite points are kept (plus at most one non-finite point per bucket).
    """
    n = int(values.shape[0])
    points = max(4, int(points))
    if n <= points:
        return np.arange(n)
    buckets = max(1, points // 4)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    starts, ends = edges[:-1], edges[1:]
    keep = [starts, ends - 1]
    finite = np.isfinite(values)
    # min / max over the finite values of each bucket (non-finite ones masked out)
    lo = np.where(finite, values, np.inf)
    hi = np.where(finite, values, -np.inf)
    keep.append(starts + _segment_arg(lo, starts, ends, np.minimum, np.argmin))
    keep.append(starts + _segment_arg(hi, starts, ends, np.maximum, np.argmax))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        # the first non-finite point of every bucket that has one
        bucket_of = np.searchsorted(ends, bad, side="right")
        _, first = np.unique(bucket_of, return_index=True)
        keep.append(bad[first])
    return np.unique(np.concatenate(keep))


def _segment_arg(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, reduce: Any, arg: Any) -> np.ndarray:
    """Position (within its bucket) of each bucket's min or max."""
    sizes = ends - starts
    if np.all(sizes == sizes[0]):  # equal buckets: one reshape, no Python loop
        size = int(sizes[0])
        return np.asarray(arg(values[starts[0]: starts[0] + size * len(starts)].reshape(len(starts), size), axis=1))
    best = reduce.reduceat(values, starts)
    # first index in each bucket equal to its extreme
    bucket = np.repeat(np.arange(len(starts)), sizes)
    hit = np.flatnonzero(values == best[bucket])
    hit_bucket = bucket[hit]
    found, first = np.unique(hit_bucket, return_index=True)
    out = np.zeros(len(starts), dtype=np.int64)
    out[found] = hit[first] - starts[found]
    return out


def flag_of(value: float) -> str | None:
    if value != value:
        return "nan"
    if value == float("inf"):
        return "inf"
    if value == float("-inf"):
        return "-inf"
    return None


def series(steps: np.ndarray, times: np.ndarray, values: np.ndarray, points: int = DEFAULT_POINTS) -> dict[str, Any]:
    """A JSON-ready series: steps, times, values (``None`` where not finite) and their flags."""
    total = int(values.shape[0])
    idx = select(values, points)
    s, t, v = steps[idx], times[idx], values[idx]
    finite = np.isfinite(v)
    out_vals: list[float | None] = v.tolist()
    flags: list[list[Any]] = []
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            flags.append([i, flag_of(float(v[i]))])
            out_vals[i] = None
    nonfinite = int(total - np.count_nonzero(np.isfinite(values))) if total else 0
    return {
        "step": s.tolist(),
        "time": t.tolist(),
        "value": out_vals,
        "flags": flags,  # [index into this series, "nan" | "inf" | "-inf"]
        "count": total,  # points stored
        "returned": len(idx),
        "nonfinite": nonfinite,  # non-finite points stored
        "downsampled": len(idx) < total,
    }
