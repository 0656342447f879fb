"""Metric points as chunks: the arrays of one series from one flush in one ``tmon_chunks`` row.

``encode`` cuts a series' new points into rows; ``decode`` turns the rows a reader selected
back into step-ordered arrays. Both are numpy end to end; nothing here loops per point.
"""

from __future__ import annotations

import numpy as np

from .schema import CHUNK_POINTS

__all__ = ["CHUNK_POINTS", "READ_COLUMNS", "decode", "encode"]

STEP = np.dtype("<i8")
FLOAT = np.dtype("<f8")

#: the columns a reader selects, in the order ``decode`` expects them
READ_COLUMNS = "first_step, n, steps, vals, walls"


def encode(
    series_id: int, steps: np.ndarray, values: np.ndarray, walls: np.ndarray, memo: dict | None = None
) -> list[tuple]:
    """Rows ``(series_id, n, first_step, last_step, first_wall, last_wall, steps, vals, walls)``.

    ``memo`` (a dict kept for one flush): series that share their steps and wall-time arrays (the
    keys logged together in one call share them) reuse the bounds and bytes computed for the first."""
    values = np.ascontiguousarray(values, dtype=FLOAT)
    if memo is None:
        memo = {}
    key = (id(steps), id(walls))
    cuts = memo.get(key)
    if cuts is None or cuts[0] is not steps or cuts[1] is not walls:  # (ids are only unique while alive)
        cuts = memo[key] = (
            steps,
            walls,
            _cuts(np.ascontiguousarray(steps, dtype=STEP), np.ascontiguousarray(walls, dtype=FLOAT)),
        )
    return [
        (series_id, n, *bounds, s_bytes, values[i : i + n].tobytes(), w_bytes)
        for i, n, bounds, s_bytes, w_bytes in cuts[2]
    ]


def _cuts(steps: np.ndarray, walls: np.ndarray) -> list[tuple]:
    """Per chunk of at most ``CHUNK_POINTS``: (offset, n, bounds, steps bytes, walls bytes)."""
    out = []
    for i in range(0, len(steps), CHUNK_POINTS):
        s, w = steps[i : i + CHUNK_POINTS], walls[i : i + CHUNK_POINTS]
        if len(s) <= 64:  # python's min/max beat numpy's per-call cost on a few points
            sl, wl = s.tolist(), w.tolist()
            bounds = min(sl), max(sl), min(wl), max(wl)
        else:
            bounds = int(s.min()), int(s.max()), float(w.min()), float(w.max())
        n = len(s)
        # consecutive steps (one value per step, the usual case) are implied by first_step and n
        implied = (
            n > 1
            and bounds[1] - bounds[0] == n - 1
            and int(s[0]) == bounds[0]
            and bool((np.diff(s) == 1).all())
        )
        out.append((i, n, bounds, b"" if implied else s.tobytes(), w.tobytes()))
    return out


def decode(rows, lo: int | None = None, hi: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, values, walls)`` from rows of ``READ_COLUMNS`` given in write order (chunk id),
    restricted to ``lo <= step <= hi`` and ordered by step, then by write order."""
    rows = list(rows)
    if not rows:
        return np.empty(0, STEP), np.empty(0, FLOAT), np.empty(0, FLOAT)
    steps = np.concatenate(
        [np.frombuffer(r[2], STEP) if len(r[2]) else np.arange(r[0], r[0] + r[1], dtype=STEP) for r in rows]
    )
    values = np.concatenate([np.frombuffer(r[3], FLOAT) for r in rows])
    walls = np.concatenate([np.frombuffer(r[4], FLOAT) for r in rows])
    if lo is not None or hi is not None:
        keep = np.ones(len(steps), dtype=bool)
        if lo is not None:
            keep &= steps >= lo
        if hi is not None:
            keep &= steps <= hi
        if not keep.all():
            steps, values, walls = steps[keep], values[keep], walls[keep]
    if len(steps) > 1 and (np.diff(steps) < 0).any():  # a rollback re-logged earlier steps
        order = np.argsort(steps, kind="stable")
        steps, values, walls = steps[order], values[order], walls[order]
    return steps, values, walls
