"""Multi-resolution min/max summaries of a metric series, computed with numpy at flush time.

Level 0 buckets ``SUMMARY_BASE`` consecutive steps; each level above merges ``SUMMARY_FACTOR``
buckets of the level below. Every bucket keeps its point count, its NaN count, and the
(value, step, wall time) of its smallest and of its largest value, so a downsampled chart
shows real points and never hides a spike.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from .schema import SUMMARY_BASE, SUMMARY_FACTOR, SUMMARY_LEVELS


@dataclass
class Buckets:
    series: np.ndarray
    bucket: np.ndarray
    n: np.ndarray
    n_nan: np.ndarray
    min_v: np.ndarray
    min_s: np.ndarray
    min_w: np.ndarray
    max_v: np.ndarray
    max_s: np.ndarray
    max_w: np.ndarray

    def coarser(self, bucket: np.ndarray) -> Buckets:
        """The same rows under other bucket numbers (a level where each series has one bucket)."""
        return Buckets(
            self.series,
            bucket,
            self.n,
            self.n_nan,
            self.min_v,
            self.min_s,
            self.min_w,
            self.max_v,
            self.max_s,
            self.max_w,
        )

    def rows(self, level: int) -> list[tuple]:
        """``(series_id, level, bucket, n, n_nan, min (value, step, wall), max (value, step, wall))``;
        a NaN min/max (every point of the bucket was NaN) becomes NULL."""
        lo, hi = self.min_v.tolist(), self.max_v.tolist()
        if np.isnan(self.min_v).any() or np.isnan(self.max_v).any():
            lo = [None if x != x else x for x in lo]
            hi = [None if x != x else x for x in hi]
        return list(
            zip(
                self.series.tolist(),
                itertools.repeat(level),
                self.bucket.tolist(),
                self.n.tolist(),
                self.n_nan.tolist(),
                lo,
                self.min_s.tolist(),
                self.min_w.tolist(),
                hi,
                self.max_s.tolist(),
                self.max_w.tolist(),
            )
        )


def _pick(
    values: np.ndarray, is_nan: np.ndarray, best: np.ndarray, real: np.ndarray, group: np.ndarray, last: bool
) -> np.ndarray:
    """Per group, the index of the first (or ``last``) value equal to the group's ``best``,
    preferring a real value over a NaN placeholder of the same value (a real +inf wins)."""
    hit = np.flatnonzero((values == best[group]) & ~(is_nan & real[group]))
    g = group[hit]
    if last:
        return hit[np.append(g[1:] != g[:-1], True)]
    return hit[np.append(True, g[1:] != g[:-1])]


def merge(keys: np.ndarray, src: Buckets) -> Buckets:
    """Group ``src`` rows by (series, ``keys``), both already sorted ascending, into one bucket each:
    O(n) reductions, no sort. Ties keep the first minimum and the last maximum."""
    change = (keys[1:] != keys[:-1]) | (src.series[1:] != src.series[:-1])
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))  # np.r_ is 4x slower here
    group = np.zeros(len(keys), dtype=np.int64)
    group[starts[1:]] = 1
    np.cumsum(group, out=group)
    n = np.add.reduceat(src.n, starts)
    n_nan = np.add.reduceat(src.n_nan, starts)
    real = n_nan < n
    lo_nan = np.isnan(src.min_v)
    lo = np.where(lo_nan, np.inf, src.min_v)
    first = _pick(lo, lo_nan, np.minimum.reduceat(lo, starts), real, group, last=False)
    hi_nan = np.isnan(src.max_v)
    hi = np.where(hi_nan, -np.inf, src.max_v)
    last = _pick(hi, hi_nan, np.maximum.reduceat(hi, starts), real, group, last=True)
    return Buckets(
        series=src.series[starts],
        bucket=keys[starts],
        n=n,
        n_nan=n_nan,
        min_v=src.min_v[first],
        min_s=src.min_s[first],
        min_w=src.min_w[first],
        max_v=src.max_v[last],
        max_s=src.max_s[last],
        max_w=src.max_w[last],
    )


def summarize(parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> list[tuple]:
    """Summary rows of every level for one flush: ``parts`` is ``(series_id, steps, values, walls)``
    per series. All series go through one numpy pipeline (a flush of 12 series costs about what
    one did when each had its own)."""
    parts = sorted((p for p in parts if len(p[1])), key=lambda p: p[0])  # (stable: a series' parts in order)
    if not parts:
        return []
    series = np.concatenate([np.full(len(s), sid, dtype=np.int64) for sid, s, _, _ in parts])
    steps = np.concatenate([s for _, s, _, _ in parts]).astype(np.int64, copy=False)
    values = np.concatenate([v for _, _, v, _ in parts]).astype(np.float64, copy=False)
    walls = np.concatenate([w for _, _, _, w in parts]).astype(np.float64, copy=False)
    d_series, d_steps = np.diff(series), np.diff(steps)
    if not ((d_series > 0) | ((d_series == 0) & (d_steps >= 0))).all():  # not already in order (a rollback)
        order = np.lexsort((steps, series))  # stable: equal steps keep their logged order
        series, steps, values, walls = series[order], steps[order], values[order], walls[order]
    raw = Buckets(
        series=series,
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
    level = merge(steps // SUMMARY_BASE, raw)
    rows = level.rows(0)
    for lv in range(1, SUMMARY_LEVELS):
        if len(level.bucket) == len(parts):
            # one bucket per series already: every coarser level holds the same rows under its own
            # bucket numbers (most levels of a typical flush; ~15 numpy calls saved per level)
            level = level.coarser(level.bucket // SUMMARY_FACTOR)
        else:
            level = merge(level.bucket // SUMMARY_FACTOR, level)
        rows += level.rows(lv)
    return rows


def with_points(
    rows: list[tuple], steps: np.ndarray, values: np.ndarray, walls: np.ndarray, width: int
) -> list[tuple]:
    """Stored summary rows ``(bucket, min (value, step, wall), max (value, step, wall))`` of one
    series and level, with points the summaries do not hold yet (the chunks written since they
    were last brought up to date): the rows those points would have made, buckets they add
    included, ordered by bucket. An all-NaN bucket has None extremes, as stored."""
    if not len(steps):
        return rows
    k = len(rows)
    # (an all-NaN bucket stores NULL extremes but the step and wall time of one of its NaN points)
    stored = np.array([[math.nan if x is None else x for x in r] for r in rows], dtype=np.float64).reshape(
        k, 7
    )
    steps = np.asarray(steps, dtype=np.int64)
    keys = np.concatenate((stored[:, 0].astype(np.int64), steps // width))
    order = np.argsort(keys, kind="stable")  # a stored row before the new points of its bucket
    nan = np.concatenate((np.isnan(stored[:, 1]), np.isnan(values))).astype(np.int64)
    src = Buckets(
        series=np.zeros(len(keys), dtype=np.int64),
        bucket=keys,
        n=np.ones(len(keys), dtype=np.int64),
        n_nan=nan,
        min_v=np.concatenate((stored[:, 1], values)),
        min_s=np.concatenate((stored[:, 2].astype(np.int64), steps)),
        min_w=np.concatenate((stored[:, 3], walls)),
        max_v=np.concatenate((stored[:, 4], values)),
        max_s=np.concatenate((stored[:, 5].astype(np.int64), steps)),
        max_w=np.concatenate((stored[:, 6], walls)),
    )
    src = Buckets(
        *(
            a[order]
            for a in (
                src.series,
                src.bucket,
                src.n,
                src.n_nan,
                src.min_v,
                src.min_s,
                src.min_w,
                src.max_v,
                src.max_s,
                src.max_w,
            )
        )
    )
    out = merge(src.bucket, src)
    return [
        (b, None if nn == n else lv, ls, lw, None if nn == n else hv, hs, hw)
        for b, n, nn, lv, ls, lw, hv, hs, hw in zip(
            out.bucket.tolist(),
            out.n.tolist(),
            out.n_nan.tolist(),
            out.min_v.tolist(),
            out.min_s.tolist(),
            out.min_w.tolist(),
            out.max_v.tolist(),
            out.max_s.tolist(),
            out.max_w.tolist(),
        )
    ]


SUMMARY_INSERT = (
    "INSERT INTO tmon_summaries (series_id, level, bucket, n, n_nan, min_value, min_step, min_wall, "
    "max_value, max_step, max_wall)"
)
SUMMARY_WIDTH = 11


def upsert_clause() -> str:
    """What makes an INSERT of summary rows merge into existing buckets: counts add up; the
    smaller minimum and the larger maximum win (NULL, an all-NaN bucket, loses to any value)."""
    t = "tmon_summaries"
    better_lo = f"({t}.min_value IS NULL OR excluded.min_value < {t}.min_value)"
    better_hi = f"({t}.max_value IS NULL OR excluded.max_value > {t}.max_value)"
    return (
        f" ON CONFLICT (series_id, level, bucket) DO UPDATE SET "
        f"n = {t}.n + excluded.n, n_nan = {t}.n_nan + excluded.n_nan, "
        + ", ".join(
            f"{c} = CASE WHEN {better_lo} THEN excluded.{c} ELSE {t}.{c} END"
            for c in ("min_value", "min_step", "min_wall")
        )
        + ", "
        + ", ".join(
            f"{c} = CASE WHEN {better_hi} THEN excluded.{c} ELSE {t}.{c} END"
            for c in ("max_value", "max_step", "max_wall")
        )
    )
