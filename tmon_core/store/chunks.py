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
READ_COLUMNS = "steps, vals, walls"


def encode(series_id: int, steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> list[tuple]:
    """Rows ``(series_id, n, first_step, last_step, first_wall, last_wall, steps, vals, walls)``."""
    steps = np.ascontiguousarray(steps, dtype=STEP)
    values = np.ascontiguousarray(values, dtype=FLOAT)
    walls = np.ascontiguousarray(walls, dtype=FLOAT)
    rows = []
    for i in range(0, len(steps), CHUNK_POINTS):
        s, v, w = steps[i:i + CHUNK_POINTS], values[i:i + CHUNK_POINTS], walls[i:i + CHUNK_POINTS]
        rows.append((series_id, len(s), int(s.min()), int(s.max()), float(w.min()), float(w.max()),
                     s.tobytes(), v.tobytes(), w.tobytes()))
    return rows


def decode(rows, lo: int | None = None, hi: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, values, walls)`` from rows of ``READ_COLUMNS`` given in write order (chunk id),
    restricted to ``lo <= step <= hi`` and ordered by step, then by write order."""
    rows = list(rows)
    if not rows:
        return np.empty(0, STEP), np.empty(0, FLOAT), np.empty(0, FLOAT)
    steps = np.concatenate([np.frombuffer(r[0], STEP) for r in rows])
    values = np.concatenate([np.frombuffer(r[1], FLOAT) for r in rows])
    walls = np.concatenate([np.frombuffer(r[2], FLOAT) for r in rows])
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
