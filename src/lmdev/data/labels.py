"""The sampled checks: label errors by confident learning on out-of-fold predictions of a quick
model, and leakage (one feature that predicts the label almost alone).

Confident learning (Northcutt et al., 2021): fit a model on k-1 folds, predict the held-out fold,
so every row gets probabilities from a model that never saw it. Per class j, the threshold t_j is
the mean predicted probability of j over the rows labelled j. A row is counted as "really" class
j* = the most probable of the classes whose probability reaches their threshold; a row whose j*
differs from its label is a likely label error. Rows are ranked by the probability the model
gives their own label (lowest first)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmdev.data.types import Finding

FOLDS = 5
LEAK_SCORE = 0.95  # classification: a feature alone recovers 95% of the way from chance to perfect
LEAK_R2 = 0.98  # regression: a feature alone explains 98% of the label's variance
MAX_BINS = 256  # per feature; fewer for small samples (about 20 rows a bin)


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.where(np.isfinite(x), x, np.nan)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(x, 0), np.nanstd(x, 0)
    mean, std = np.nan_to_num(mean), np.nan_to_num(std)
    return np.nan_to_num((x - mean) / np.where(std > 0, std, 1.0))


def out_of_fold_probs(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """float [n, n_classes]: each row's class probabilities from a model fitted on the other
    folds. The quick model is linear discriminant analysis (class means, one shared covariance,
    slightly shrunk): closed form, one pass over the rows, no iterations to converge."""
    xs = _standardise(x)
    fold = np.random.default_rng(seed).permutation(len(y)) % FOLDS
    probs = np.zeros((len(y), n_classes))
    for k in range(FOLDS):
        fit_rows, held = fold != k, fold == k
        w, b = _lda(xs[fit_rows], y[fit_rows], n_classes)
        logits = xs[held] @ w + b
        logits -= logits.max(1, keepdims=True)
        e = np.exp(logits)
        probs[held] = e / e.sum(1, keepdims=True)
    return probs


def _lda(x: np.ndarray, y: np.ndarray, n_classes: int, shrink: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The weights [features, classes] and biases of linear discriminant analysis."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, y, x)
    means = sums / np.maximum(counts, 1)[:, None]
    centred = x - means[y]
    cov = centred.T @ centred / max(1, len(y) - n_classes)
    cov = (1 - shrink) * cov + shrink * np.eye(len(cov)) * max(float(np.trace(cov)) / max(len(cov), 1), 1e-6)
    w = np.linalg.solve(cov, means.T)
    with np.errstate(divide="ignore"):
        b = -0.5 * np.einsum("kf,fk->k", means, w) + np.log(counts / counts.sum())
    return w, b  # an absent class has bias -inf: probability 0


def confident_errors(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Positions of likely label errors, most likely first (confident joint, off-diagonal)."""
    k = probs.shape[1]
    thresholds = np.full(k, np.inf)
    for j in range(k):
        mine = labels == j
        if mine.any():
            thresholds[j] = probs[mine, j].mean()
    above = probs >= thresholds - 1e-12
    masked = np.where(above, probs, -1.0)
    confident = masked.argmax(1)
    has = above.any(1)
    flagged = np.flatnonzero(has & (confident != labels))
    self_conf = probs[flagged, labels[flagged]]
    return flagged[np.argsort(self_conf, kind="stable")]


@dataclass
class LabelErrors:
    rows: np.ndarray  # row indices in the split, most likely first
    accuracy: float  # out-of-fold accuracy of the quick model
    sample: int


def find_label_errors(x: np.ndarray, y: np.ndarray, rows: np.ndarray, seed: int = 0) -> LabelErrors | None:
    """Label errors among sampled rows (``rows`` are their indices in the split); None when the
    labels are not usable classes."""
    ok = np.isfinite(y)
    x, y, rows = x[ok], y[ok].astype(np.int64), rows[ok]
    if len(y) < 2 * FOLDS or y.min() < 0 or len(np.unique(y)) < 2:
        return None
    probs = out_of_fold_probs(x, y, int(y.max()) + 1, seed)
    found = confident_errors(y, probs)
    return LabelErrors(rows[found], float((probs.argmax(1) == y).mean()), len(y))


def label_error_finding(split: str, found: LabelErrors) -> Finding | None:
    if not len(found.rows):
        return None
    share = len(found.rows) / found.sample
    return Finding(
        "label.errors", "warn",
        f"{len(found.rows):,} of {found.sample:,} sampled rows of {split} ({share:.2%}) look mislabelled: a "
        f"model that never saw them confidently predicts another class (out-of-fold accuracy "
        f"{found.accuracy:.1%})",
        "review those rows, most suspicious first, and correct or drop the wrong labels", split,
        len(found.rows), found.rows.tolist(), data={"sample": found.sample, "share": share,
                                                   "model_accuracy": found.accuracy})


# --------------------------------------------------------------------------- leakage


def _bins(train_col: np.ndarray, col: np.ndarray, bins: int) -> tuple[np.ndarray, int]:
    """Bin indices of ``col`` on edges from ``train_col`` (its distinct values, or quantiles)."""
    finite = train_col[np.isfinite(train_col)]
    values = np.unique(finite)
    few = len(values) <= bins
    edges = values if few else _gap_edges(np.sort(finite), bins)
    idx = np.searchsorted(edges, np.where(np.isfinite(col), col, np.inf), side="left" if few else "right")
    return idx, len(edges) + 1


def _gap_edges(ordered: np.ndarray, bins: int) -> np.ndarray:
    """About ``bins`` equal-count bins, each edge moved to the widest gap between neighbouring
    values near its quantile: an edge falls between two clusters rather than across one."""
    n = len(ordered)
    half = max(1, n // (2 * bins))
    gaps = np.diff(ordered)
    edges = []
    for i in range(1, bins):
        lo, hi = max(0, i * n // bins - half), min(n - 1, i * n // bins + half)
        if hi > lo:
            j = lo + int(np.argmax(gaps[lo:hi]))
            edges.append((ordered[j] + ordered[j + 1]) / 2)
    return np.unique(edges)


def feature_scores(x: np.ndarray, y: np.ndarray, classification: bool, seed: int = 0) -> np.ndarray:
    """How well each feature alone predicts the label, on held-out rows: for classes, the gain
    over always guessing the majority class, as a share of the way to perfect (0 chance, 1
    perfect); for a number, the R² of the per-bin mean. Bins are fitted on one half of the
    sample and scored on the other."""
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    half = np.random.default_rng(seed).permutation(len(y)) < len(y) // 2
    scores = np.zeros(x.shape[1])
    if half.sum() < 10 or (~half).sum() < 10:
        return scores
    ya, yb = y[half], y[~half]
    if classification:
        classes, ya_i = np.unique(ya, return_inverse=True)
        base = np.bincount(np.searchsorted(classes, yb).clip(0, len(classes) - 1)).max() / len(yb)
    bins = int(min(MAX_BINS, max(16, half.sum() // 20)))
    for j in range(x.shape[1]):
        ia, nb = _bins(x[half, j], x[half, j], bins)
        ib, _ = _bins(x[half, j], x[~half, j], bins)
        if classification:
            counts = np.zeros((nb, len(classes)))
            np.add.at(counts, (ia, ya_i), 1)
            pred = classes[counts.argmax(1)]
            acc = float((pred[ib] == yb).mean())
            scores[j] = (acc - base) / (1 - base) if base < 1 else 0.0
        else:
            sums, cnt = np.bincount(ia, ya, nb), np.bincount(ia, None, nb)
            means = np.where(cnt > 0, sums / np.maximum(cnt, 1), ya.mean())
            var = yb.var()
            scores[j] = 1 - ((means[ib] - yb) ** 2).mean() / var if var > 0 else 0.0
    return scores


def leak_finding(split: str, columns: list[str], scores: np.ndarray, classification: bool, sample: int) -> Finding | None:
    limit = LEAK_SCORE if classification else LEAK_R2
    leaks = [i for i in np.argsort(-scores) if scores[i] >= limit]
    top = {columns[i] if i < len(columns) else f"f{i}": float(scores[i]) for i in np.argsort(-scores)[:5]}
    if not leaks:
        return None
    names = [columns[i] if i < len(columns) else f"f{i}" for i in leaks]
    what = "of the way from chance to perfect accuracy" if classification else "R²"
    return Finding(
        "feature.leak", "severe",
        f"{len(leaks)} feature(s) of {split} predict the label almost alone: "
        + ", ".join(f"{n} ({scores[i]:.3f} {what})" for n, i in zip(names[:5], leaks[:5])),
        "check how each is made: a column computed from the label (or recorded after it) must be dropped; "
        "a model would score well here and fail on real data", split, len(leaks), columns=names,
        data={"scores": top, "sample": sample})
