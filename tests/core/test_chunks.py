"""The chunked points store against a plain model of what was logged (hypothesis).

Points go through the real ``StoreWriter`` into a real SQLite file in several flushes (several
series per flush, NaN and +-inf, steps logged again as after a rollback), ending with the run's
final write or without it (a killed process); then every reader (``metrics``, ``tail``,
``latest``, ``count_points``, downsampling from the points or from the summaries plus the chunks
they do not hold yet) and every summary row is compared with the same answer computed from the
list of points.
"""

import math
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tmon_core import open_store
from tmon_core.store import points as points_module
from tmon_core.store import writer as writer_module
from tmon_core.store.engine import create_store_engine, ensure_schema
from tmon_core.store.schema import SUMMARY_LEVELS, summary_width
from tmon_core.store.writer import Batch, StoreWriter

value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64), st.sampled_from([math.nan, 0.0, -0.0])
)
point = st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5000), value)


@st.composite
def _run_of_steps(draw):
    """Consecutive steps of one key (what training logs), values from a seeded generator with
    NaN, +-inf and a spike here and there: enough points per series to fill summary buckets."""
    key, start, n, seed = (
        draw(st.sampled_from(["a", "b", "c"])),
        draw(st.integers(0, 5000)),
        draw(st.integers(1, 700)),
        draw(st.integers(0, 2**32 - 1)),
    )
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n)
    for special in (math.nan, math.inf, -math.inf, 50.0, -50.0):
        values[rng.random(n) < 0.01] = special
    return [(key, start + i, float(v)) for i, v in enumerate(values)]


flush = st.tuples(st.lists(point, max_size=60), st.lists(_run_of_steps(), max_size=2)).map(
    lambda parts: parts[0] + [p for run in parts[1] for p in run]
)
flushes = st.lists(flush, min_size=1, max_size=5)


def _write(url, batches, closed):
    """Write ``batches`` as flushes; ``closed``: end with the run's final write (else the writer
    stops as a killed process would). Returns the logged points and how many of them (in write
    order) the summaries hold by the documented rule: all of them after every
    ``SUMMARY_EVERY_FLUSHES``-th flush that wrote points, and after the final write."""
    engine = create_store_engine(url, writer=True)
    ensure_schema(engine)
    writer = StoreWriter(
        engine,
        "r",
        {"id": "r", "name": "r", "status": "completed", "created_at": time.time(), "heartbeat_timeout": 30.0},
    )
    logged = []  # (key, step, value, wall, order) in write order
    summarized, with_points = 0, 0
    wall = 1_700_000_000.0
    for points in batches:
        batch = Batch()
        per: dict[str, list] = {}
        for key, step, v in points:
            wall += 0.25
            per.setdefault(key, []).append((step, v, wall))
        for key, rows in per.items():
            batch.points[key] = tuple(
                np.array(c, dtype=dt) for c, dt in zip(zip(*rows), (np.int64, float, float))
            )
            logged += [(key, s, v, w, len(logged) + i) for i, (s, v, w) in enumerate(rows)]
        writer.write(batch)
        with_points += bool(points)
        if with_points % writer_module.SUMMARY_EVERY_FLUSHES == 0:
            summarized = len(logged)
    if closed:
        writer.write(Batch(), final=True)
        summarized = len(logged)
    writer.close()
    engine.dispose()
    return logged, summarized


def _same(a, b):
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=flushes, n=st.integers(1, 80), closed=st.booleans(), from_summaries=st.booleans())
def test_readers_and_summaries_match_the_logged_points(tmp_path_factory, batches, n, closed, from_summaries):
    # from_summaries: every downsample reads the summaries (and the chunks they do not hold yet)
    # instead of bucketing the points themselves
    url = f"sqlite:///{tmp_path_factory.mktemp('chunks')}/s.db"
    every, raw_limit = writer_module.SUMMARY_EVERY_FLUSHES, points_module.RAW_DOWNSAMPLE_POINTS
    writer_module.SUMMARY_EVERY_FLUSHES = 2
    points_module.RAW_DOWNSAMPLE_POINTS = 0 if from_summaries else raw_limit
    try:
        _check(url, batches, n, closed)
    finally:
        writer_module.SUMMARY_EVERY_FLUSHES, points_module.RAW_DOWNSAMPLE_POINTS = every, raw_limit


def _check(url, batches, n, closed):
    logged, summarized = _write(url, batches, closed)
    store = open_store(url)
    run = store.run("r")
    assert run.count_points() == len(logged)
    latest = {}
    for key in sorted({p[0] for p in logged}):
        want = sorted(
            (p for p in logged if p[0] == key), key=lambda p: (p[1], p[4])
        )  # step, then write order
        df = run.metrics(key)
        assert df.step.tolist() == [p[1] for p in want]
        assert _same(df.value.tolist(), [p[2] for p in want]) and df.wall_time.tolist() == [
            p[3] for p in want
        ]
        tail = run.tail(key, n)
        assert tail.step.tolist() == [p[1] for p in want[-n:]] and _same(
            tail.value.tolist(), [p[2] for p in want[-n:]]
        )
        latest[key] = (want[-1][1], want[-1][2])
        lo, hi = want[0][1], want[-1][1]
        real = [p[2] for p in want if p[2] == p[2]]
        for m in (2, 7, 40):
            small = run.metrics(key, max_points=m)
            assert len(small) <= m and small.step.is_monotonic_increasing
            assert set(zip(small.step, small.wall_time)) <= {(p[1], p[3]) for p in want}  # real points only
            if real and len(want) > m:
                assert small.value.min() == min(real) and small.value.max() == max(real)
            elif len(want) <= m:
                assert small.step.tolist() == [p[1] for p in want]
            for a, b in ((0, 0.5), (0.2, 1), (0.1, 0.8)):  # windows: their own extremes, wherever they lie
                start, end = lo + (hi - lo) * a, lo + (hi - lo) * b
                inside = [p for p in want if start <= p[1] <= end]
                part = run.metrics(key, max_points=m, start=start, end=end)
                assert set(zip(part.step, part.wall_time)) <= {(p[1], p[3]) for p in inside}
                real_in = [p[2] for p in inside if p[2] == p[2]]
                if real_in:
                    assert part.value.min() == min(real_in) and part.value.max() == max(real_in), (
                        start,
                        end,
                        m,
                    )
        mid = run.metrics(key, start=(lo + hi) / 3, end=(lo + hi) / 2)
        assert mid.step.tolist() == [p[1] for p in want if (lo + hi) / 3 <= p[1] <= (lo + hi) / 2]
        with store.engine.connect() as conn:
            sid = conn.execute(text("SELECT id FROM tmon_series WHERE key = :k"), {"k": key}).scalar()
            rows = conn.execute(
                text(
                    "SELECT level, bucket, n, n_nan, min_value, min_step, min_wall, max_value, "
                    "max_step, max_wall FROM tmon_summaries WHERE series_id = :s"
                ),
                {"s": sid},
            ).all()
        got = {(r[0], r[1]): r[2:] for r in rows}
        expect = {}
        held = [p for p in want if p[4] < summarized]  # the points the summaries hold
        for level in range(SUMMARY_LEVELS):
            width = summary_width(level)
            for b in sorted({p[1] // width for p in held}):
                pts = [p for p in held if p[1] // width == b]
                real = [p[2] for p in pts if p[2] == p[2]]
                expect[(level, b)] = (
                    len(pts),
                    len(pts) - len(real),
                    min(real, default=None),
                    max(real, default=None),
                    {(p[2], p[1], p[3]) for p in pts},
                )
        assert set(got) == set(expect)
        for k, (count, nans, lo, hi, pts) in expect.items():
            g = got[k]
            assert g[:2] == (count, nans), k
            if lo is None:  # every point NaN: NULL extremes
                assert g[2] is None and g[5] is None, (k, g)
            else:  # the extremes, each a real logged point of the bucket (any one of equal values)
                assert g[2] == lo and g[5] == hi and tuple(g[2:5]) in pts and tuple(g[5:8]) in pts, (k, g)
    got_latest = run.latest()
    assert set(got_latest) == set(latest)
    assert all(got_latest[k][0] == s and _same([got_latest[k][1]], [v]) for k, (s, v) in latest.items())
