"""The table checks. A :class:`TableScan` reads a split once, chunk by chunk, keeping only what
the checks need: a 64-bit hash per row (exact and rounded), per-column counts, the label counts
and a uniform random sample of rows for the slow checks (label errors, leakage)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmdev.data import hashing
from lmdev.data.read import TableChunk, TableSource
from lmdev.data.types import Finding

NEAR_STEP = 0.02  # near duplicates: equal after rounding each value to 2% of its column's spread
MAX_CLASSES = 1000  # more distinct integer labels than this: a regression target
RARE_SHARE = 0.01  # a class with less than 1% of the rows (or fewer than RARE_ROWS) is almost absent
RARE_ROWS = 10
OVERLAP_SEVERE = 0.01  # this share of a validation/test split also in train is severe
MAX_BAD_ROWS = 1_000_000  # rows with a missing / non-finite value remembered by index


@dataclass
class Sample:
    """A uniform random sample of rows (reservoir by random keys), with their row indices."""

    size: int
    rng: np.random.Generator
    keys: np.ndarray = field(default_factory=lambda: np.empty(0))
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    x: np.ndarray | None = None
    y: np.ndarray = field(default_factory=lambda: np.empty(0))

    def add(self, chunk: TableChunk) -> None:
        n = len(chunk.x)
        keys = np.concatenate([self.keys, self.rng.random(n)])
        rows = np.concatenate([self.rows, np.arange(chunk.start, chunk.start + n)])
        x = chunk.x if self.x is None else np.concatenate([self.x, chunk.x])
        y = np.concatenate([self.y, chunk.y])
        if len(keys) > self.size:
            keep = np.sort(np.argpartition(keys, self.size)[: self.size])
            keys, rows, x, y = keys[keep], rows[keep], x[keep], y[keep]
        self.keys, self.rows, self.x, self.y = keys, rows, x, y


class TableScan:
    """Everything the table checks need from one split, gathered in one streaming pass."""

    def __init__(self, src: TableSource, sample_size: int, seed: int) -> None:
        self.src = src
        self.n = 0
        self.width = 0
        self.full: list[np.ndarray] = []  # hash of features + label
        self.feat: list[np.ndarray] = []  # hash of features
        self.near: list[np.ndarray] = []  # hash of rounded features
        self.centre: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.nan = self.inf = self.bad = self.finite = np.zeros(0, np.int64)
        self.lo = self.hi = np.zeros(0)
        self.bad_rows: dict[str, list[np.ndarray]] = {"nan": [], "inf": []}
        self.labels: dict[float, int] = {}
        self.label_nan = 0
        self.label_integer = True
        self.sample = Sample(sample_size, np.random.default_rng(seed))

    def run(self) -> TableScan:
        for chunk in self.src.chunks():
            self.add(chunk)
        return self

    def add(self, c: TableChunk) -> None:
        x, y = c.x, c.y
        if self.centre is None:  # the rounding grid for near duplicates, from the first chunk
            self._start(x)
        feat = hashing.row_hashes(x)
        self.feat.append(feat)
        self.full.append(hashing.combine(feat, y))
        self.near.append(hashing.row_hashes(hashing.quantised(x, self.centre, self.scale, NEAR_STEP)))
        nan, inf = np.isnan(x), np.isinf(x)
        fin = ~(nan | inf)
        self.nan += nan.sum(0)
        self.inf += inf.sum(0)
        self.finite += fin.sum(0)
        self.bad += c.non_numeric[:-1]
        with np.errstate(invalid="ignore"):
            self.lo = np.fmin(self.lo, np.where(fin, x, np.inf).min(0, initial=np.inf))
            self.hi = np.fmax(self.hi, np.where(fin, x, -np.inf).max(0, initial=-np.inf))
        for kind, mask in (("nan", nan), ("inf", inf)):
            if mask.any() and sum(len(a) for a in self.bad_rows[kind]) < MAX_BAD_ROWS:
                r, col = np.nonzero(mask)  # (row, column) of each bad value
                self.bad_rows[kind].append(np.column_stack([c.start + r, col]))
        self._labels(y)
        self.sample.add(c)
        self.n += len(x)

    def _start(self, x: np.ndarray) -> None:
        self.width = x.shape[1]
        with np.errstate(invalid="ignore"), _quiet():
            fin = np.where(np.isfinite(x), x, np.nan)
            self.centre = np.nan_to_num(np.nanmean(fin, 0)) if len(x) else np.zeros(self.width)
            spread = np.nan_to_num(np.nanstd(fin, 0)) if len(x) else np.ones(self.width)
        self.scale = np.where(spread > 0, spread, 1.0)
        z = np.zeros(self.width, np.int64)
        self.nan, self.inf, self.bad, self.finite = z.copy(), z.copy(), z.copy(), z.copy()
        self.lo, self.hi = np.full(self.width, np.inf), np.full(self.width, -np.inf)

    def _labels(self, y: np.ndarray) -> None:
        missing = ~np.isfinite(y)
        self.label_nan += int(missing.sum())
        y = y[~missing]
        if self.label_integer and len(y) and np.any(np.mod(y, 1)):
            self.label_integer = False
        if len(self.labels) <= MAX_CLASSES:
            values, counts = np.unique(y, return_counts=True)
            for v, k in zip(values.tolist(), counts.tolist()):
                self.labels[v] = self.labels.get(v, 0) + k

    @property
    def classification(self) -> bool:
        return self.label_integer and 1 < len(self.labels) <= MAX_CLASSES

    def hashes(self, which: str) -> np.ndarray:
        parts = {"full": self.full, "feat": self.feat, "near": self.near}[which]
        return np.concatenate(parts) if parts else np.empty(0, np.uint64)


class _quiet:
    """Silence numpy's 'mean of empty slice' for all-missing columns (reported as a finding)."""

    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._w.__exit__(*exc)


# --------------------------------------------------------------------------- findings


def duplicate_findings(scan: TableScan) -> list[Finding]:
    name, out = scan.src.name, []
    full_dup, full_first = hashing.duplicate_rows(scan.hashes("full"))
    feat_dup, feat_first = hashing.duplicate_rows(scan.hashes("feat"))
    if len(full_dup):
        out.append(Finding(
            "rows.duplicate", "warn",
            f"{len(full_dup):,} rows of {name} ({len(full_dup) / scan.n:.2%}) repeat an earlier row exactly "
            f"(e.g. row {full_dup[0]} = row {full_first[0]})",
            "drop the repeats (keep the first of each); they weigh those examples twice and, under a "
            "random validation split, leak into validation", name, len(full_dup), full_dup.tolist()))
    full = scan.hashes("full")
    conflict = feat_dup[full[feat_dup] != full[feat_first]] if len(feat_dup) else feat_dup
    if len(conflict):
        out.append(Finding(
            "rows.conflicting_labels", "warn",
            f"{len(conflict):,} rows of {name} have the same features as an earlier row but another label",
            "check those labels: at most one of each pair can be right", name, len(conflict), conflict.tolist()))
    near_dup, _ = hashing.duplicate_rows(scan.hashes("near"))
    near_only = np.setdiff1d(near_dup, feat_dup)
    if len(near_only):
        out.append(Finding(
            "rows.near_duplicate", "info",
            f"{len(near_only):,} rows of {name} are near copies of an earlier row (every value within "
            f"{NEAR_STEP:.0%} of its column's spread)",
            "look at them: augmented or re-measured copies of one example act like duplicates", name,
            len(near_only), near_only.tolist()))
    return out


def overlap_findings(train: TableScan, other: TableScan) -> list[Finding]:
    """Rows of a validation/test split whose features also occur in train (exact, then near)."""
    name, out = other.src.name, []
    exact = hashing.present_in(other.hashes("feat"), train.hashes("feat"))
    if len(exact):
        share = len(exact) / max(1, other.n)
        out.append(Finding(
            "split.overlap", "severe" if share >= OVERLAP_SEVERE else "warn",
            f"{len(exact):,} rows of {name} ({share:.2%}) also occur in train: its scores are too good",
            f"remove those rows from {name} (or from train) so that {name} measures unseen data", name,
            len(exact), exact.tolist(), data={"share": share}))
    near = np.setdiff1d(hashing.present_in(other.hashes("near"), train.hashes("near")), exact)
    if len(near):
        out.append(Finding(
            "split.near_overlap", "warn",
            f"{len(near):,} rows of {name} are near copies of train rows", f"check and remove them from {name}",
            name, len(near), near.tolist()))
    return out


def column_findings(scan: TableScan) -> list[Finding]:
    name, cols, out = scan.src.name, scan.src.columns, []

    def named(mask: np.ndarray) -> list[str]:
        return [cols[i] if i < len(cols) else f"f{i}" for i in np.flatnonzero(mask)]

    empty = scan.nan + scan.bad >= scan.n
    if scan.n and empty.any():
        out.append(Finding("column.all_missing", "severe", f"{int(empty.sum())} column(s) of {name} hold no value: "
                           + ", ".join(named(empty)[:10]), "drop them", name, int(empty.sum()), columns=named(empty)))
    bad = (scan.bad > 0) & ~empty
    if bad.any():
        out.append(Finding("column.non_numeric", "severe", f"{int(bad.sum())} column(s) of {name} hold values that "
                           f"are not numbers: " + ", ".join(named(bad)[:10]),
                           "encode them as numbers (one-hot, ordinal) or drop them: training reads numbers only",
                           name, int(scan.bad[bad].sum()), columns=named(bad)))
    for kind, counts, what, fix in (
            ("missing", scan.nan - scan.bad, "missing values (NaN or empty; rows listed with unreadable ones)",
             "fill them (e.g. the column's median) or drop those rows: one NaN makes the training loss NaN"),
            ("non_finite", scan.inf, "infinite values", "clip or drop them: they overflow the loss")):
        mask = (counts > 0) & ~empty
        if mask.any():
            pairs = scan.bad_rows["nan" if kind == "missing" else "inf"]
            cells = np.concatenate(pairs) if pairs else np.empty((0, 2), np.int64)
            idx = np.unique(cells[mask[cells[:, 1]], 0])  # rows with a bad value in these columns
            out.append(Finding(f"column.{kind}", "severe", f"{int(counts[mask].sum()):,} {what} in "
                               f"{int(mask.sum())} column(s) of {name}: " + ", ".join(named(mask)[:10]),
                               fix, name, len(idx), idx.tolist(), columns=named(mask)))
    constant = (scan.finite > 0) & (scan.lo == scan.hi) & ~empty
    if constant.any():
        out.append(Finding("column.constant", "warn", f"{int(constant.sum())} column(s) of {name} hold one value "
                           "only: " + ", ".join(named(constant)[:10]),
                           "drop them: they carry no information", name, int(constant.sum()), columns=named(constant)))
    return out


def label_findings(scan: TableScan) -> list[Finding]:
    name, out = scan.src.name, []
    if scan.label_nan:
        out.append(Finding("label.missing", "severe", f"{scan.label_nan:,} rows of {name} have no label",
                           "label them or drop them", name, scan.label_nan))
    if not scan.classification or not scan.n:
        return out
    counts = {int(k): v for k, v in sorted(scan.labels.items())}
    total = sum(counts.values())
    classes = range(min(counts), max(counts) + 1)
    absent = [c for c in classes if c not in counts]
    rare = [c for c, k in counts.items() if k < max(RARE_ROWS, RARE_SHARE * total) and len(counts) > 1]
    if absent or rare:
        parts = [f"class {c}: {counts[c]} row(s) ({counts[c] / total:.2%})" for c in rare[:8]]
        parts += [f"class {c}: none" for c in absent[:8]]
        out.append(Finding(
            "label.imbalance", "warn", f"{len(rare) + len(absent)} class(es) of {name} are almost absent — "
            + "; ".join(parts),
            "collect more of them, or weight / oversample them; check the accuracy per class, not only overall",
            name, len(rare) + len(absent), data={"counts": {str(k): v for k, v in counts.items()}}))
    return out
