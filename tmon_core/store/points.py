"""Reading one metric series: its chunks (``tmon_chunks``) and its summaries (``tmon_summaries``).

``Run.metrics``, ``Run.tail`` and ``Run.latest`` read through these functions, each on a connection
and a series id. A downsampled read of a long range costs a few hundred summary rows plus the
chunks written since the summaries were last brought up to date; a short range is read whole and
reduced by ``downsample.min_max``.
"""

from __future__ import annotations

import math

import numpy as np

from . import chunks
from .downsample import min_max, min_max_rows, with_ends
from .schema import RAW_DOWNSAMPLE_POINTS, SUMMARY_LEVELS, summary_width
from .summaries import with_points

__all__ = ["last", "newest_chunk", "read", "since"]


def read(conn, sid: int, max_points: int | None, x: str, start: float | None, end: float | None):
    """The points of series ``sid`` between ``start`` and ``end`` (steps, or wall times with
    ``x="time"``), as step-ordered ``(steps, values, walls)``: at most ``max_points`` of them, the
    smallest and largest point of each bucket, plus the range's first and last points when there
    is room (a live chart ends at the newest value)."""
    lo, hi = _step_bounds(conn, sid, x, start, end)
    if lo is None:
        return chunks.decode([])
    count = _count_at_most(conn, sid, lo, hi) if max_points is not None else 0
    ends = max_points is not None and max_points >= 4
    budget = max_points - 2 if ends else max_points
    if count > max(RAW_DOWNSAMPLE_POINTS, max_points or 0):  # (else every point may fit)
        s, v, w = _downsample(conn, sid, lo, hi, budget)
        if ends:
            head = _raw(conn, sid, lo, min(hi, lo + 4095))
            tail = _raw(conn, sid, max(lo, hi - 4095), hi)
            s, v, w = with_ends(s, v, w, head, tail)
        return s, v, w
    s, v, w = raw = _raw(conn, sid, lo, hi)
    if max_points is not None and len(s) > max_points:
        s, v, w = min_max(s, v, w, lo, hi, max(1, budget // 2))
        if ends:
            s, v, w = with_ends(s, v, w, raw, raw)
    return s, v, w


def fetch(conn, sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of ``sql`` from the driver's own cursor: plain tuples, no Row objects, no statement
    compiled (a fifth of a ``select()``'s cost, for what a live view reads every tick). ``?`` marks
    the parameters, whatever the driver's style."""
    if params and conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute(sql, params) if params else cur.execute(sql)
        return cur.fetchall()
    finally:
        cur.close()


LAST_FIRST_CHUNKS = 16  # chunks ``last`` reads before it reads a series' whole index


def last(conn, sid: int, n: int):
    """The ``n`` points with the largest steps (the later-written first among equal steps)."""
    sql = (
        f"SELECT id, first_step, last_step, n FROM tmon_chunks WHERE series_id = {int(sid)} "
        f"ORDER BY last_step DESC, id DESC"
    )
    # the newest few chunks first (a live chart's last point: one chunk, out of one per flush of the
    # whole run); the whole index only when those do not settle it (chunks whose steps overlap)
    limit = LAST_FIRST_CHUNKS
    while True:
        index = conn.exec_driver_sql(sql + (f" LIMIT {limit}" if limit else "")).fetchall()
        take, count, floor, settled = [], 0, None, False
        for cid, first, last_step, k in index:
            if count >= n and last_step < floor:
                settled = (
                    True  # n points at or above ``floor`` are taken: this chunk and the ones after are older
                )
                break
            take.append(cid)
            count += k
            floor = first if floor is None else min(floor, first)
        if settled or not limit or len(index) < limit:
            break
        limit = None
    if not take:
        return chunks.decode([])
    s, v, w = _read_chunks(conn, f"id IN ({', '.join(str(int(c)) for c in take)})")
    return s[-n:], v[-n:], w[-n:]


def last_of_each(conn, sids) -> dict[int, tuple[int, float]]:
    """The point with the largest step of each series in ``sids`` (the later-written among equal
    steps, as :func:`last`): one query per 500 series, however many, where :func:`last` reads one
    series at a time. Only the chunks that reach each series' largest step are read and decoded."""
    out: dict[int, tuple[int, float]] = {}
    sids = [int(s) for s in sids]
    cols = ", ".join(f"c.{c.strip()}" for c in chunks.READ_COLUMNS.split(","))
    for ids in _id_lists(sids):
        rows = fetch(
            conn,
            f"SELECT c.series_id, {cols} FROM tmon_chunks c JOIN (SELECT series_id, MAX(last_step) AS top "
            f"FROM tmon_chunks WHERE series_id IN ({ids}) GROUP BY series_id) t "
            f"ON c.series_id = t.series_id AND c.last_step = t.top ORDER BY c.id",
        )
        by: dict[int, list] = {}
        for r in rows:
            by.setdefault(int(r[0]), []).append(r[1:])
        for sid, part in by.items():
            s, v, _ = chunks.decode(part)
            if len(s):
                out[sid] = (int(s[-1]), float(v[-1]))
    return out


def _id_lists(sids, size: int = 500):
    """``sids`` as SQL lists of at most ``size`` ids ("1, 2, 3"): one ``IN (...)`` each, within
    every driver's limit on a statement's length."""
    for i in range(0, len(sids), size):
        yield ", ".join(map(str, sids[i : i + size]))


def newest_chunk(conn, sids) -> int:
    """The largest chunk id among series ``sids`` (0: none yet): where a :func:`since` reader starts."""
    sids = [int(s) for s in sids]
    top = 0
    for ids in _id_lists(sids):
        got = conn.exec_driver_sql(f"SELECT MAX(id) FROM tmon_chunks WHERE series_id IN ({ids})").scalar()
        top = max(top, int(got or 0))
    return top


def since(conn, sids, after: int) -> tuple[dict[int, tuple], int]:
    """The points of series ``sids`` in chunks written after chunk id ``after``: ``({sid: (steps,
    values, walls)}, the largest chunk id read, or ``after``)``, each series step-ordered.

    What a live reader polls: the chunks' primary key picks the rows written since its last read, so
    a read costs what was written since, however long the run. A series is written by one writer
    (its run's recorder), a flush at a time, so a chunk id it has seen is never followed by a smaller
    one of the same series."""
    sids = [int(s) for s in sids]
    if not sids:
        return {}, after
    cols = ", ".join(c.strip() for c in chunks.READ_COLUMNS.split(","))
    by: dict[int, list] = {}
    top = after
    for ids in _id_lists(sids):
        # ``+series_id``: SQLite would otherwise walk the series' whole index and filter on the id
        rows = fetch(
            conn,
            f"SELECT id, series_id, {cols} FROM tmon_chunks WHERE id > {int(after)} "
            f"AND +series_id IN ({ids}) ORDER BY id",
        )
        for r in rows:
            top = max(top, int(r[0]))
            by.setdefault(int(r[1]), []).append(r[2:])
    return {sid: chunks.decode(part) for sid, part in by.items()}, top


def _read_chunks(conn, where: str, lo: int | None = None, hi: int | None = None):
    return chunks.decode(
        fetch(conn, f"SELECT {chunks.READ_COLUMNS} FROM tmon_chunks WHERE {where} ORDER BY id"), lo, hi
    )


def _step_bounds(conn, sid, x, start, end):
    if x == "time" and (start is not None or end is not None):
        # no index on wall time: the chunks' time ranges pick which to decode
        cond = [f"series_id = {int(sid)}"]
        if start is not None:
            cond.append(f"last_wall >= {float(start)!r}")
        if end is not None:
            cond.append(f"first_wall <= {float(end)!r}")
        s, _, w = _read_chunks(conn, " AND ".join(cond))
        keep = np.ones(len(s), dtype=bool)
        if start is not None:
            keep &= w >= start
        if end is not None:
            keep &= w <= end
        s = s[keep]
        return (int(s.min()), int(s.max())) if len(s) else (None, None)
    lo, hi = conn.exec_driver_sql(
        f"SELECT MIN(first_step), MAX(last_step) FROM tmon_chunks WHERE series_id = {int(sid)}"
    ).first()
    if lo is None:
        return None, None
    if x == "step":
        if start is not None:
            lo = max(lo, math.ceil(start))
        if end is not None:
            hi = min(hi, math.floor(end))
    return (lo, hi) if lo <= hi else (None, None)


def _raw(conn, sid, lo, hi):
    return _read_chunks(
        conn, f"series_id = {int(sid)} AND first_step <= {int(hi)} AND last_step >= {int(lo)}", lo, hi
    )


def _summarized(conn, sid) -> int:
    """The id of the last chunk of series ``sid`` that the summaries hold."""
    return (
        conn.exec_driver_sql(f"SELECT summarized_chunk FROM tmon_series WHERE id = {int(sid)}").scalar() or 0
    )


def _count_at_most(conn, sid, lo, hi) -> int:
    """At least the number of points in [lo, hi]: summed over the summary buckets that touch it,
    and over the chunks that touch it and are not in the summaries yet."""
    level = _level_for(hi - lo + 1, 8)
    width = summary_width(level)
    n = conn.exec_driver_sql(
        f"SELECT SUM(n) FROM tmon_summaries WHERE series_id = {int(sid)} AND level = {level} "
        f"AND bucket >= {lo // width} AND bucket <= {hi // width}"
    ).scalar()
    fresh = conn.exec_driver_sql(
        f"SELECT SUM(n) FROM tmon_chunks WHERE series_id = {int(sid)} AND id > {_summarized(conn, sid)} "
        f"AND first_step <= {int(hi)} AND last_step >= {int(lo)}"
    ).scalar()
    return (n or 0) + (fresh or 0)


def _downsample(conn, sid, lo, hi, max_points):
    """min/max per bucket of the finest summary level with at most ``max_points // 2`` buckets in
    [lo, hi]; the partial buckets at either end from the points themselves."""
    level = _level_for(hi - lo + 1, max(1, max_points // 2))
    width = summary_width(level)
    b0, b1 = -(-lo // width), (hi + 1) // width - 1  # buckets lying wholly inside [lo, hi]
    out: list[tuple] = []
    if b0 > b1:  # the range is narrower than a bucket: min/max of the raw points
        out = min_max_rows(*_raw(conn, sid, lo, hi))
    else:
        if lo < b0 * width:
            out += min_max_rows(*_raw(conn, sid, lo, b0 * width - 1))
        rows = conn.exec_driver_sql(
            "SELECT bucket, min_value, min_step, min_wall, max_value, max_step, max_wall "
            f"FROM tmon_summaries WHERE series_id = {int(sid)} AND level = {level} "
            f"AND bucket >= {b0} AND bucket <= {b1} ORDER BY bucket"
        ).fetchall()
        # the points written since the summaries were last brought up to date (a few flushes;
        # a killed run keeps them for good)
        first, last_step = b0 * width, (b1 + 1) * width - 1
        fresh = _read_chunks(
            conn,
            f"series_id = {int(sid)} AND id > {_summarized(conn, sid)} "
            f"AND first_step <= {last_step} AND last_step >= {first}",
            first,
            last_step,
        )
        rows = with_points(rows, *fresh, width)
        for bucket, lov, los, low, hiv, his, hiw in rows:
            if lov is None:  # every point of the bucket was NaN: keep one (a real one) so it shows
                out.append(
                    (bucket * width if los is None else los, math.nan, math.nan if low is None else low)
                )
            elif los == his and lov == hiv:
                out.append((los, lov, low))
            elif los < his:
                out += [(los, lov, low), (his, hiv, hiw)]
            else:
                out += [(his, hiv, hiw), (los, lov, low)]
        if (b1 + 1) * width <= hi:
            out += min_max_rows(*_raw(conn, sid, (b1 + 1) * width, hi))
    if not out:
        return chunks.decode([])
    arr = np.array(out, dtype=np.float64).reshape(-1, 3)
    return arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2]


def _level_for(span: int, buckets: int) -> int:
    """The finest summary level whose buckets cut ``span`` steps into at most ``buckets`` pieces."""
    for level in range(SUMMARY_LEVELS):
        if -(-span // summary_width(level)) + 1 <= buckets:
            return level
    return SUMMARY_LEVELS - 1
