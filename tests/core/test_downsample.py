"""The one min/max downsampler (``tmon_core.store.downsample``) against the two algorithms it replaced:
the store's bucketing of raw points and the chart's folding (copied here as they were), point for point."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tmon_core.store.downsample import bucket_extremes, min_max, min_max_indices, min_max_rows
from tmon_core.store.summaries import Buckets, merge


def old_store_min_max(steps, values, walls, lo, hi, buckets):
    width = max(1, -(-(hi - lo + 1) // buckets))
    raw = Buckets(
        series=np.zeros(len(steps), dtype=np.int64),
        bucket=steps,
        n=np.ones(len(steps), dtype=np.int64),
        n_nan=np.isnan(values).astype(np.int64),
        min_v=values,
        min_s=steps,
        min_w=walls,
        max_v=values,
        max_s=steps,
        max_w=walls,
    )
    b = merge((steps - lo) // width, raw)
    first = b.min_s <= b.max_s
    one = ((b.min_s == b.max_s) & (b.min_v == b.max_v)) | np.isnan(b.min_v)
    out_s = np.stack([np.where(first, b.min_s, b.max_s), np.where(first, b.max_s, b.min_s)], axis=1)
    out_v = np.stack([np.where(first, b.min_v, b.max_v), np.where(first, b.max_v, b.min_v)], axis=1)
    out_w = np.stack([np.where(first, b.min_w, b.max_w), np.where(first, b.max_w, b.min_w)], axis=1)
    keep = np.stack([np.ones(len(one), dtype=bool), ~one], axis=1)
    s1 = np.where(one, b.min_s, out_s[:, 0])
    out_s[:, 0], out_v[:, 0], out_w[:, 0] = (
        s1,
        np.where(one, b.min_v, out_v[:, 0]),
        np.where(one, b.min_w, out_w[:, 0]),
    )
    return out_s[keep], out_v[keep], out_w[keep]


def old_chart_downsample(x, y, max_points, width=None, origin=0.0):
    n = len(x)
    if n <= max_points:
        return np.arange(n), width or 0.0
    buckets = max(1, max_points // 2)
    need = (float(x[-1] - x[0]) + 1.0) / buckets
    w = width if width and width >= need else 0.0
    if not w:
        w = 2.0 ** math.ceil(math.log2(max(need, 1e-12)))
    while True:
        b = np.floor((x - origin) / w).astype(np.int64)
        if b[-1] - b[0] + 1 <= buckets:
            break
        w *= 2
    finite = np.isfinite(y)
    key = np.where(finite, y, np.inf)
    order = np.lexsort((key, b))
    bs = b[order]
    starts = np.flatnonzero(np.r_[True, bs[1:] != bs[:-1]])
    counts = np.add.reduceat(finite[order].astype(np.int64), starts)
    lo = order[starts]
    hi = order[starts + np.maximum(counts, 1) - 1]
    return np.unique(np.concatenate([lo, hi])), w


value = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, 1.0, 2.0]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)
gaps = st.lists(st.integers(0, 3), min_size=1, max_size=300)  # 0: the step logged again (a rollback)


def series(gap_list, vals):
    steps = np.cumsum(np.array(gap_list, dtype=np.int64))
    values = np.array((vals * (len(steps) // len(vals) + 1))[: len(steps)], dtype=np.float64)
    walls = 1.7e9 + np.arange(len(steps), dtype=np.float64)
    return steps, values, walls


def same(a, b):
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a.tolist(), b.tolist()))


@settings(max_examples=300, deadline=None)
@given(gap_list=gaps, vals=st.lists(value, min_size=1, max_size=40), buckets=st.integers(1, 60))
def test_store_min_max_is_what_it_was(gap_list, vals, buckets):
    s, v, w = series(gap_list, vals)
    lo, hi = int(s[0]), int(s[-1])
    for got, want in zip(min_max(s, v, w, lo, hi, buckets), old_store_min_max(s, v, w, lo, hi, buckets)):
        assert same(got, want)


@settings(max_examples=300, deadline=None)
@given(
    gap_list=gaps,
    vals=st.lists(value, min_size=1, max_size=40),
    max_points=st.integers(2, 80),
    width=st.sampled_from([None, 0.0, 1.0, 4.0, 64.0]),
    origin=st.sampled_from([0.0, 3.0]),
)
def test_chart_indices_are_what_they_were(gap_list, vals, max_points, width, origin):
    s, v, _ = series(gap_list, vals)
    x = s.astype(np.float64)
    keep, w = min_max_indices(x, v, max_points, width, origin)
    old_keep, old_w = old_chart_downsample(x, v, max_points, width, origin)
    assert keep.tolist() == old_keep.tolist() and w == old_w


def test_bucket_extremes_ties_and_nan():
    b = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    v = np.array([2.0, 1.0, 1.0, 2.0, math.nan, math.nan, math.inf, 5.0])
    lo, hi = bucket_extremes(b, v)
    assert lo.tolist() == [1, 4, 7] and hi.tolist() == [
        3,
        4,
        6,
    ]  # first min, last max; an all-NaN bucket: its first
    lo, hi = bucket_extremes(b, v, finite_only=True)
    assert lo.tolist() == [1, 4, 7] and hi.tolist() == [3, 4, 7]  # inf is no value to a chart
    assert [a.tolist() for a in bucket_extremes(np.array([], dtype=np.int64), np.array([]))] == [[], []]
    assert min_max_rows(np.array([], dtype=np.int64), np.array([]), np.array([])) == []
