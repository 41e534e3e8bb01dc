"""Row hashing for duplicate and overlap detection: 64-bit hashes computed column by column
with numpy (no Python loop over rows), then duplicates found by sorting the hashes. Ten million
rows are 80 MB of hashes; the rows themselves are never kept."""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_CANON_NAN = np.float64(np.nan).view(np.uint64)


def _mix(v: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    v = v ^ (v >> np.uint64(30))
    v = v * _M1
    v = v ^ (v >> np.uint64(27))
    v = v * _M2
    return v ^ (v >> np.uint64(31))


def row_hashes(table: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint64 [n]: equal rows (as float64 values; -0.0 == 0.0, every NaN alike) hash equal."""
    table = np.ascontiguousarray(table, dtype=np.float64) + 0.0  # -0.0 + 0.0 == +0.0
    bits = table.view(np.uint64)
    bits = np.where(np.isnan(table), _CANON_NAN, bits)
    with np.errstate(over="ignore"):
        h = np.full(len(table), np.uint64(seed) * _GOLDEN + np.uint64(1), dtype=np.uint64)
        for j in range(table.shape[1]):
            h = _mix(h ^ (bits[:, j] + np.uint64(j + 1) * _GOLDEN))
    return h


def combine(hashes: np.ndarray, column: np.ndarray) -> np.ndarray:
    """The hash of a row extended by one more column (the label): one pass, not a rehash."""
    extra = row_hashes(np.asarray(column, dtype=np.float64).reshape(-1, 1), seed=1)
    with np.errstate(over="ignore"):
        return _mix(hashes ^ (extra * _GOLDEN))


def quantised(table: np.ndarray, centre: np.ndarray, scale: np.ndarray, step: float) -> np.ndarray:
    """Each value rounded to ``step`` of its column's spread: near-equal rows become equal."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.floor((table - centre) / scale / step + 0.5)


def duplicate_rows(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows that repeat an earlier row, the earlier row each repeats), in row order."""
    order = np.argsort(hashes, kind="stable")
    sorted_h = hashes[order]
    same = np.flatnonzero(sorted_h[1:] == sorted_h[:-1]) + 1
    if not len(same):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # the first row of each run of equal hashes is the original
    run_start = np.maximum.accumulate(np.where(np.r_[True, sorted_h[1:] != sorted_h[:-1]], np.arange(len(hashes)), 0))
    dup, first = order[same], order[run_start[same]]
    keep = np.argsort(dup, kind="stable")
    return dup[keep].astype(np.int64), first[keep].astype(np.int64)


def present_in(hashes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Indices of ``hashes`` that also occur in ``reference``."""
    return np.flatnonzero(np.isin(hashes, reference)).astype(np.int64)
