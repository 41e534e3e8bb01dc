"""`lmdev data check` on generated tables with planted problems: precision and recall of each
check, and its speed per million rows beside the anchors, pandas' ``DataFrame.duplicated()``
and cleanlab's ``find_label_issues``, on the same data in the same run.

Quality: tables of --quality-rows rows (the label-error check then sees every row) with planted
duplicates (2%), flipped labels (3%), validation rows copied from train (5%), a column that is
the label in disguise and a constant column; averaged over --seeds seeds.

Speed: one table of --rows rows written as csv.
  * exact duplicates in memory: lmdev's row hashing + sort vs pandas duplicated()
  * from the file: the whole `lmdev data check --fast` (streaming parse, every table check but
    label errors) vs pandas read_csv + duplicated() (one check, whole file in memory)
  * label errors on the 20,000-row sample: lmdev (out-of-fold LDA + its confident learning)
    vs scikit-learn's LogisticRegression out-of-fold + cleanlab.find_label_issues; and the
    confident-learning step alone on the same probabilities.

    .venv/bin/python benchmarks/data_check.py [--rows 1000000] [--quality-rows 20000] [--seeds 3]
Needs the bench extra: pip install 'lmdev[bench]' (pandas, cleanlab, scikit-learn).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lmdev.data import CheckOptions, check, hashing, labels
from lmdev.data.planted import make_table, write_csv


def rows_of(f) -> set[int]:  # type: ignore[no-untyped-def]
    if f.rows_file:
        return {int(r) for r in Path(f.rows_file).read_text().split()}
    return set(f.rows)


def pr(found: set[int], truth: set[int]) -> tuple[float, float]:
    hit = len(found & truth)
    return (hit / len(found) if found else 1.0), (hit / len(truth) if truth else 1.0)


def quality(n: int, seed: int, tmp: Path, separation: float) -> dict[str, tuple[float, float]]:
    p = make_table(n, seed=seed, separation=separation)
    write_csv(tmp / "q.csv", p.x, p.y)
    write_csv(tmp / "qv.csv", p.val_x, p.val_y)
    report = check(tmp / "q.csv", CheckOptions(val=str(tmp / "qv.csv"), out_dir=tmp / f"q{seed}", sample_size=n))
    found = {(f.id, f.split): f for f in report.findings}

    def rows(key: tuple[str, str]) -> set[int]:
        return rows_of(found[key]) if key in found else set()

    def cols(key: str) -> set[str]:
        f = found.get((key, "train"))
        return set(f.columns) if f else set()

    return {
        "exact duplicates": pr(rows(("rows.duplicate", "train")), p.duplicates),
        "train/val overlap": pr(rows(("split.overlap", "val")), p.leaked),
        "label errors (flipped)": pr(rows(("label.errors", "train")), p.flipped),
        "leaking column": pr(cols("feature.leak"), {f"f{p.leak_column}"}),
        "constant column": pr(cols("column.constant"), {f"f{p.constant_column}"}),
    }


def timed(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def speed(n: int, tmp: Path) -> None:
    import pandas as pd

    p = make_table(n, seed=7, val_rows=1000)
    table = np.column_stack([p.x, p.y])
    df = pd.DataFrame(table)
    per_m = 1e6 / n
    ours = timed(lambda: hashing.duplicate_rows(hashing.row_hashes(table)))
    theirs = timed(lambda: df.duplicated())
    assert set(np.flatnonzero(df.duplicated().to_numpy()).tolist()) == set(hashing.duplicate_rows(hashing.row_hashes(table))[0].tolist())
    print(f"\nspeed on {n:,} rows x {table.shape[1]} columns (seconds per million rows, best of 3)")
    print(f"  exact duplicates in memory   lmdev {ours * per_m:7.3f}   pandas duplicated() {theirs * per_m:7.3f}"
          f"   ratio lmdev/pandas {ours / theirs:.2f}x")
    path = write_csv(tmp / "big.csv", p.x, p.y)
    mb = path.stat().st_size / 1e6
    ours = timed(lambda: check(path, CheckOptions(fast=True)), repeat=1)
    theirs = timed(lambda: pd.read_csv(path).duplicated(), repeat=1)
    print(f"  from the csv ({mb:,.0f} MB)     lmdev data check --fast {ours * per_m:7.2f}   pandas read_csv+duplicated "
          f"{theirs * per_m:7.2f}   ratio {ours / theirs:.2f}x")
    label_errors()


def label_errors() -> None:
    """On 20,000 rows of overlapping classes (harder than the speed table's blobs)."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    m = 20_000
    p = make_table(m, seed=0, separation=1.0)  # the first overlapping table of the quality run
    x, y = p.x[:, :-2], p.y  # without the leaking and constant columns, as the check drops the leak
    flipped = {r for r in p.flipped if r < m}
    t0 = time.perf_counter()
    probs = labels.out_of_fold_probs(x, y, int(y.max()) + 1)
    t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = set(labels.confident_errors(y, probs).tolist())
    t_cl = time.perf_counter() - t0
    t0 = time.perf_counter()
    lr_probs = cross_val_predict(LogisticRegression(max_iter=300), x, y, cv=5, method="predict_proba")
    t_lr = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = set(np.flatnonzero(find_label_issues(y, lr_probs)).tolist())
    t_cleanlab = time.perf_counter() - t0
    t0 = time.perf_counter()
    same_probs = set(np.flatnonzero(find_label_issues(y, probs)).tolist())
    t_cleanlab_same = time.perf_counter() - t0
    print(f"  label errors on {m:,} rows of overlapping classes (seconds; precision / recall of the 3% flipped)")
    for name, secs, found in (("lmdev: LDA out-of-fold + confident learning", t_model + t_cl, ours),
                              ("sklearn LogisticRegression out-of-fold + cleanlab", t_lr + t_cleanlab, theirs),
                              ("cleanlab on lmdev's probabilities", t_model + t_cleanlab_same, same_probs)):
        pre, rec = pr(found, flipped)
        print(f"    {name:<52} {secs:7.3f} s   {pre:.3f} / {rec:.3f}")
    print(f"    confident-learning step alone: lmdev {t_cl * 1000:.1f} ms, cleanlab {t_cleanlab_same * 1000:.1f} ms "
          f"(ratio {t_cl / t_cleanlab_same:.2f}x); whole pipeline ratio {(t_model + t_cl) / (t_lr + t_cleanlab):.3f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quality-rows", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    try:
        import cleanlab  # noqa: F401
        import pandas  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        print(f"{exc.name} is not installed: pip install 'lmdev[bench]'", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        print(f"quality on {args.quality_rows:,}-row tables, mean of {args.seeds} seeds (precision / recall)")
        print(f"  {'check':<24} {'separated classes':>18} {'overlapping classes':>20}")
        easy = [quality(args.quality_rows, seed, Path(tmp), 3.0) for seed in range(args.seeds)]
        hard = [quality(args.quality_rows, seed, Path(tmp), 1.0) for seed in range(args.seeds)]
        for check_name in easy[0]:
            cells = []
            for results in (easy, hard):
                pre = statistics.mean(r[check_name][0] for r in results)
                rec = statistics.mean(r[check_name][1] for r in results)
                cells.append(f"{pre:.3f} / {rec:.3f}")
            print(f"  {check_name:<24} {cells[0]:>18} {cells[1]:>20}")
        speed(args.rows, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
