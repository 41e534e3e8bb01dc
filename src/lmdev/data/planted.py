"""Generated tables with known, planted problems: the ground truth for the tests and for
benchmarks/data_check.py (precision and recall of each check)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Planted:
    x: np.ndarray  # float64 [n, features] of the train split
    y: np.ndarray  # int labels
    val_x: np.ndarray
    val_y: np.ndarray
    duplicates: set[int] = field(default_factory=set)  # train rows that copy an earlier row
    flipped: set[int] = field(default_factory=set)  # train rows whose label was changed
    leaked: set[int] = field(default_factory=set)  # val rows copied from train
    leak_column: int | None = None  # the feature that is the label in disguise
    constant_column: int | None = None

    def columns(self) -> list[str]:
        return [f"f{i}" for i in range(self.x.shape[1])]


def make_table(n: int = 5000, features: int = 10, classes: int = 4, seed: int = 0, *, dup_share: float = 0.02,
               flip_share: float = 0.03, leak_share: float = 0.05, val_rows: int | None = None,
               leak_column: bool = True, constant_column: bool = True, separation: float = 3.0) -> Planted:
    """Gaussian class blobs (centres spread by ``separation`` standard deviations: 3 is well
    separated, 1 overlaps), then: repeats of earlier rows, flipped labels, val
    rows copied from train, a column equal to the label plus small noise, a constant column."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, separation, (classes, features))
    n_val = val_rows if val_rows is not None else n // 5
    y, vy = rng.integers(0, classes, n), rng.integers(0, classes, n_val)
    x = centres[y] + rng.normal(0, 1.0, (n, features))
    vx = centres[vy] + rng.normal(0, 1.0, (n_val, features))
    p = Planted(x, y, vx, vy)
    dups = rng.choice(np.arange(n // 2, n), int(n * dup_share), replace=False)  # copies come after sources
    sources = rng.integers(0, n // 2, len(dups))
    untouched = np.setdiff1d(np.arange(n), np.concatenate([dups, sources]))
    flips = rng.choice(untouched, int(n * flip_share), replace=False)
    y[flips] = (y[flips] + rng.integers(1, classes, len(flips))) % classes
    p.flipped = {int(f) for f in flips}
    if leak_column:  # the (given) label in disguise: label * 10 + a little noise
        p.leak_column = x.shape[1]
        x = np.column_stack([x, y * 10.0 + rng.normal(0, 0.1, n)])
        vx = np.column_stack([vx, vy * 10.0 + rng.normal(0, 0.1, n_val)])
    if constant_column:
        p.constant_column = x.shape[1]
        x, vx = np.column_stack([x, np.full(n, 7.0)]), np.column_stack([vx, np.full(n_val, 7.0)])
    x[dups], y[dups] = x[sources], y[sources]
    p.duplicates = {int(d) for d in dups}
    leaks = rng.choice(n_val, int(n_val * leak_share), replace=False)
    from_train = rng.choice(untouched, len(leaks), replace=False)
    vx[leaks], vy[leaks] = x[from_train], y[from_train]
    p.leaked = {int(v) for v in leaks}
    p.x, p.y, p.val_x, p.val_y = x, y, vx, vy
    return p


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    names = [f"f{i}" for i in range(x.shape[1])] + ["label"]
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=",".join(names), comments="", fmt="%.6g")
    return path
