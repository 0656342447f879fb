"""The one min/max downsampler: each bucket of a series keeps its smallest and its largest point.

Numpy arrays in, numpy arrays out, no SQL: the store reduces the raw points of a short range
with it (a long range reads the summaries the writer kept, made by the same ``summaries.merge``),
and a chart folds the points it holds with it.

>>> steps = np.arange(10); values = np.array([3., 1., 4., 1., 5., 9., 2., 6., 5., 3.])
>>> lo, hi = bucket_extremes(steps // 5, values)      # two buckets of five steps
>>> lo.tolist(), hi.tolist()                          # the first minimum, the last maximum
([1, 6], [4, 5])

Ties keep the first minimum and the last maximum; a NaN never wins over a number, and a bucket
with no number keeps its first point (a NaN stays visible).
"""

from __future__ import annotations

import math

import numpy as np

from .summaries import Buckets, merge

__all__ = ["bucket_extremes", "min_max", "min_max_indices", "min_max_rows", "with_ends"]


def bucket_extremes(
    bucket: np.ndarray, values: np.ndarray, *, finite_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per bucket, the index of its first smallest and of its last largest value: ``(lo, hi)``, one
    entry per bucket, in bucket order.

    ``bucket`` holds each point's bucket number, ascending (points in x order). NaN loses to any
    number (with ``finite_only``, +-inf as well); in a bucket with no number both indices are
    its first point."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if not n:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    if finite_only:
        values = np.where(np.isfinite(values), values, np.nan)
    index = np.arange(n, dtype=np.int64)
    nan = np.isnan(values)
    # the points as one-point summary buckets whose "step" is their index: merged per bucket, the
    # summaries' own reduction picks the extremes (one algorithm for the store and the charts)
    raw = Buckets(
        series=np.zeros(n, dtype=np.int64),
        bucket=bucket,
        n=np.ones(n, dtype=np.int64),
        n_nan=nan.astype(np.int64),
        min_v=values,
        min_s=index,
        min_w=index,
        max_v=values,
        max_s=index,
        max_w=index,
    )
    b = merge(np.asarray(bucket, dtype=np.int64), raw)
    empty = b.n_nan == b.n
    return b.min_s, np.where(empty, b.min_s, b.max_s)


def min_max(
    steps: np.ndarray, values: np.ndarray, walls: np.ndarray, lo: int, hi: int, buckets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step-ordered points reduced to the smallest and largest point of each of ``buckets`` equal
    step ranges over [lo, hi], in step order (what the summaries hold, computed from the points).
    A bucket whose extremes are one point (same step and value), or holds only NaN, keeps one."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    walls = np.asarray(walls, dtype=np.float64)
    width = max(1, -(-(hi - lo + 1) // buckets))
    i_lo, i_hi = bucket_extremes((steps - lo) // width, values)
    min_s, min_v, min_w = steps[i_lo], values[i_lo], walls[i_lo]
    max_s, max_v, max_w = steps[i_hi], values[i_hi], walls[i_hi]
    first = min_s <= max_s
    one = ((min_s == max_s) & (min_v == max_v)) | np.isnan(min_v)
    out_s = np.stack([np.where(first, min_s, max_s), np.where(first, max_s, min_s)], axis=1)
    out_v = np.stack([np.where(first, min_v, max_v), np.where(first, max_v, min_v)], axis=1)
    out_w = np.stack([np.where(first, min_w, max_w), np.where(first, max_w, min_w)], axis=1)
    keep = np.stack([np.ones(len(one), dtype=bool), ~one], axis=1)
    # a single point is the minimum (a NaN point when all are)
    out_s[:, 0] = np.where(one, min_s, out_s[:, 0])
    out_v[:, 0] = np.where(one, min_v, out_v[:, 0])
    out_w[:, 0] = np.where(one, min_w, out_w[:, 0])
    return out_s[keep], out_v[keep], out_w[keep]


def min_max_rows(steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> list[tuple]:
    """The smallest and the largest of step-ordered points as (step, value, wall) rows, in step order."""
    if not len(steps):
        return []
    return list(zip(*min_max(steps, values, walls, int(steps[0]), int(steps[-1]), 1)))


def with_ends(steps, values, walls, head, tail):
    """Downsampled points plus the first point of ``head`` and the last of ``tail`` (raw arrays)
    where they are missing, in step order."""
    extra = []
    for arrays, i in ((head, 0), (tail, -1)):
        if len(arrays[0]):
            p = (int(arrays[0][i]), float(arrays[1][i]), float(arrays[2][i]))
            same = (steps == p[0]) & (walls == p[2])
            if not same.any() and p not in extra:
                extra.append(p)
    if not extra:
        return steps, values, walls
    s = np.concatenate([steps, [p[0] for p in extra]]).astype(np.int64)
    v = np.concatenate([values, [p[1] for p in extra]])
    w = np.concatenate([walls, [p[2] for p in extra]])
    order = np.argsort(s, kind="stable")
    return s[order], v[order], w[order]


def min_max_indices(
    x: np.ndarray, y: np.ndarray, max_points: int, width: float | None = None, origin: float = 0.0
) -> tuple[np.ndarray, float]:
    """Indices of the points to keep so that at most ``max_points`` remain, and the bucket width used
    (what a chart folds the points it holds with).

    ``x`` ascending. Buckets are ``width`` wide (a power of two times the smallest width that fits,
    or ``width`` when given and wide enough), their edges at ``origin + k * width``, so they stay
    put as a live series grows; each keeps the index of its smallest and of its largest finite
    ``y``; a bucket with no finite value keeps its first point (a NaN stays visible)."""
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
    lo, hi = bucket_extremes(b, y, finite_only=True)
    return np.unique(np.concatenate([lo, hi])), w
