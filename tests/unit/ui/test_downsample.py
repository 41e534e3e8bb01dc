"""Shape-preserving downsampling: bounds, extremes kept, ends kept, non-finite values flagged."""

import itertools

import numpy as np
import pytest

from lmdev.ui.downsample import select, series


def test_short_series_are_returned_whole():
    v = np.arange(10.0)
    assert select(v, 100).tolist() == list(range(10))
    s = series(np.arange(10), np.arange(10.0), v, points=100)
    assert s["value"] == v.tolist() and not s["downsampled"] and s["returned"] == 10


@pytest.mark.parametrize("n", [1001, 10_000, 123_457, 1_000_000])
@pytest.mark.parametrize("points", [4, 100, 2000])
def test_bounds_and_order(n, points):
    rng = np.random.default_rng(n)
    v = np.cumsum(rng.normal(size=n))
    idx = select(v, points)
    assert len(idx) <= points
    assert np.all(np.diff(idx) > 0)  # sorted and unique
    assert idx[0] == 0 and idx[-1] == n - 1  # the ends of the curve


def test_extremes_survive():
    rng = np.random.default_rng(0)
    v = rng.normal(size=100_000)
    v[12_345] = 50.0  # one spike up
    v[77_777] = -60.0  # one spike down
    idx = select(v, 400)
    assert 12_345 in idx and 77_777 in idx
    # every bucket's min and max are kept: the downsampled envelope equals the original's
    kept = v[idx]
    assert kept.max() == v.max() and kept.min() == v.min()


def test_min_max_per_bucket_with_uneven_buckets():
    v = np.sin(np.linspace(0, 20, 1003))
    idx = select(v, 40)  # 10 buckets over 1003 points: not all the same size
    edges = np.linspace(0, 1003, 11).astype(int)
    for a, b in itertools.pairwise(edges):
        seg = v[a:b]
        inside = idx[(idx >= a) & (idx < b)]
        assert a + int(np.argmin(seg)) in inside and a + int(np.argmax(seg)) in inside


def test_nonfinite_points_are_kept_as_flagged_gaps():
    n = 50_000
    v = np.linspace(1, 2, n)
    v[100] = np.nan
    v[30_000] = np.inf
    v[30_001] = -np.inf
    s = series(np.arange(n), np.arange(n, dtype=float), v, points=200)
    assert s["returned"] <= 200 + 50  # at most one non-finite point per bucket on top
    flags = {s["step"][i]: f for i, f in s["flags"]}
    assert flags[100] == "nan" and flags.get(30_000) == "inf"
    for i, _ in s["flags"]:
        assert s["value"][i] is None  # a gap in the line
    assert s["nonfinite"] == 3 and s["count"] == n
    finite = [x for x in s["value"] if x is not None]
    assert min(finite) == 1.0 and max(finite) == 2.0  # NaN/Inf never become the min or max


def test_all_nonfinite_series():
    v = np.full(5000, np.nan)
    s = series(np.arange(5000), np.arange(5000.0), v, points=100)
    assert all(x is None for x in s["value"]) and s["nonfinite"] == 5000
