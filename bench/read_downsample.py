"""How fast does a chart get a million-point metric out of the store, and does downsampling keep
its extremes?

One metric of 1,000,000 points (a noisy random walk with one spike up and one dip down) is written
into a fresh SQLite store through the Recorder (``close()`` waits until it is all stored). Then,
median of several repetitions each:

* ``Run.metrics(key)``: every point, as a DataFrame;
* ``Run.metrics(key, max_points=2000)``: the whole run downsampled (target <= 100 ms);
* ``Run.metrics(key, max_points=2000, start=..., end=...)``: a 10 % zoom window (target <= 20 ms);

next to plain SQL (``sqlite3``, no tmon code) on the same points stored one row per point (the
long format tmon used up to schema 2): all points into numpy, and a
``GROUP BY`` min/max downsample to 2000 buckets (whole run and the 10 % window), and numpy min/max
per bucket over points already in memory. Checks: the downsampled frames hold the global min and
max value of the series (of the window, for the zoom), and no more rows than ``max_points``.

    .venv/bin/python bench/read_downsample.py [--quick] [--points N]
"""

from __future__ import annotations

import math
import os
import sqlite3
import sys
import tempfile
import time
import warnings

import numpy as np
from _util import header, median, num, ok, parse_args, ratio, table

from tmon_core import Recorder, Store

KEY = "train/loss"
MAX_POINTS = 2000
BUCKETS = 2000


def make_series(n: int) -> tuple[np.ndarray, int, int]:
    """A noisy random walk with one spike (global max) and one dip (global min) at known steps."""
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.normal(0, 1e-3, n)) + rng.normal(0, 1e-2, n) + 2.0
    spike, dip = int(n * 0.3137), int(n * 0.7071)
    values[spike] = values.max() + 5.0
    values[dip] = values.min() - 5.0
    return values, spike, dip


def write(path: str, values: np.ndarray) -> tuple[str, float, float]:
    rec = Recorder(path, run_name="bench-read", flush_interval=0.5)
    log = rec.log
    t0 = time.perf_counter()
    for step, v in enumerate(values.tolist()):
        log({KEY: v}, step)
    t_log = time.perf_counter() - t0
    rec.close()
    return rec.run_id, t_log, time.perf_counter() - t0


def timed(fn, reps: int) -> tuple[list[float], object]:
    out = None
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return ts, out


def main() -> int:
    def extra(p):
        p.add_argument("--points", type=int, default=None, help="points in the series (default 1,000,000)")
        p.add_argument(
            "--reps", type=int, default=None, help="repetitions per query (default 7, 3 with --quick)"
        )

    args = parse_args(__doc__.split("\n\n")[0], extra)
    header("bench/read_downsample.py: reading and downsampling a 1M-point series", args.quick)
    warnings.simplefilter("default")
    n = args.points or (300_000 if args.quick else 1_000_000)
    reps = args.reps or (3 if args.quick else 7)
    values, spike, dip = make_series(n)
    lo_step, hi_step = int(n * 0.45), int(n * 0.55) - 1  # the 10 % zoom window

    with tempfile.TemporaryDirectory(prefix="tmon-bench-read-") as tmp:
        path = os.path.join(tmp, "read.db")
        run_id, t_log, t_write = write(path, values)
        print(
            f"wrote {n:,} points through Recorder.log + close(): {t_write:.2f} s "
            f"({n / t_write / 1e3:,.0f}k points/s; log loop {t_log:.2f} s) -> {os.path.getsize(path) / 1e6:,.0f} MB "
            f"(+ WAL {os.path.getsize(path + '-wal') / 1e6 if os.path.exists(path + '-wal') else 0:,.0f} MB)"
        )

        store = Store(path)
        run = store.run(run_id)
        stored = run.count_points()
        # the peer: the same points one row per point (ARCHITECTURE.md's long format, clustered by
        # series and step, as tmon stored them up to schema 2), in its own file; filling it is not timed
        raw = sqlite3.connect(os.path.join(tmp, "long.db"))
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute(
            "CREATE TABLE tmon_points (series_id INTEGER NOT NULL, step BIGINT NOT NULL, seq BIGINT NOT NULL, "
            "value FLOAT, wall_time FLOAT NOT NULL, PRIMARY KEY (series_id, step, seq)) WITHOUT ROWID"
        )
        sid = 1
        full = run.metrics(KEY)
        raw.executemany(
            "INSERT INTO tmon_points VALUES (?, ?, ?, ?, ?)",
            zip(
                [sid] * len(full),
                full.step.tolist(),
                range(len(full)),
                [None if v != v else v for v in full.value.tolist()],
                full.wall_time.tolist(),
            ),
        )
        raw.commit()
        width = -(-n // BUCKETS)
        wwidth = -(-(hi_step - lo_step + 1) // BUCKETS)

        def sql_all():
            rows = raw.execute(
                "SELECT step, value, wall_time FROM tmon_points WHERE series_id = ? ORDER BY step", (sid,)
            ).fetchall()
            return np.array(rows, dtype=np.float64)

        def sql_group(lo, hi, w):
            return raw.execute(
                "SELECT step / ? AS b, MIN(value), MAX(value) FROM tmon_points "
                "WHERE series_id = ? AND step BETWEEN ? AND ? GROUP BY b ORDER BY b",
                (w, sid, lo, hi),
            ).fetchall()

        mem = values.copy()

        def numpy_minmax():
            pad = (-len(mem)) % width
            a = np.concatenate([mem, np.full(pad, np.nan)]).reshape(-1, width)
            return np.nanmin(a, axis=1), np.nanmax(a, axis=1)

        cases = [
            ("tmon Run.metrics(key): all points", lambda: run.metrics(KEY), None),
            ("plain SQL: all points -> numpy", sql_all, "tmon Run.metrics(key): all points"),
            (
                f"tmon Run.metrics(key, max_points={MAX_POINTS})",
                lambda: run.metrics(KEY, max_points=MAX_POINTS),
                None,
            ),
            (
                f"plain SQL GROUP BY min/max, {BUCKETS} buckets",
                lambda: sql_group(0, n - 1, width),
                f"tmon Run.metrics(key, max_points={MAX_POINTS})",
            ),
            (
                f"tmon Run.metrics(key, max_points={MAX_POINTS}, 10 % window)",
                lambda: run.metrics(KEY, max_points=MAX_POINTS, start=lo_step, end=hi_step),
                None,
            ),
            (
                f"plain SQL GROUP BY min/max, 10 % window, {BUCKETS} buckets",
                lambda: sql_group(lo_step, hi_step, wwidth),
                f"tmon Run.metrics(key, max_points={MAX_POINTS}, 10 % window)",
            ),
            (
                f"numpy min/max per bucket, data in memory, {BUCKETS} buckets",
                numpy_minmax,
                f"tmon Run.metrics(key, max_points={MAX_POINTS})",
            ),
        ]
        targets = {
            f"tmon Run.metrics(key, max_points={MAX_POINTS})": 0.100,
            f"tmon Run.metrics(key, max_points={MAX_POINTS}, 10 % window)": 0.020,
        }
        res: dict[str, tuple[list[float], object]] = {}
        for name, fn, _peer in cases:
            fn()  # warm the page cache and statement caches once
            res[name] = timed(fn, reps)
        raw_len = {
            name: len(out) if not isinstance(out, tuple) else len(out[0]) for name, (_, out) in res.items()
        }
        rows = []
        for name, _fn, peer in cases:
            ts = res[name][0]
            med = median(ts)
            tgt = targets.get(name)
            rows.append(
                [
                    name,
                    f"{raw_len[name]:,}",
                    num(med * 1e3, "{:,.1f}"),
                    num(min(ts) * 1e3, "{:,.1f}"),
                    ratio(median(res[peer][0]), med) if peer else "",
                    f"{ok(med <= tgt)} (<= {tgt * 1e3:.0f} ms)" if tgt else "",
                ]
            )
        table(
            ["query", "rows", "ms median", "ms min", "tmon time / this time", "target"],
            rows,
            title=f"reads of one {n:,}-point series from SQLite, {reps} repetitions each (after one warm-up call)",
        )

        full = res["tmon Run.metrics(key): all points"][1]
        ds = res[f"tmon Run.metrics(key, max_points={MAX_POINTS})"][1]
        zoom = res[f"tmon Run.metrics(key, max_points={MAX_POINTS}, 10 % window)"][1]
        win = values[lo_step : hi_step + 1]
        checks = [
            (
                "all points: row count == points written == count_points()",
                len(full) == n == stored,
                f"{len(full):,} / {n:,} / {stored:,}",
            ),
            (
                "all points: values equal what was logged",
                bool(np.array_equal(full.value.to_numpy(), values)),
                "",
            ),
            (
                "downsampled: keeps the global max (the spike)",
                float(ds.value.max()) == float(values.max()) and spike in set(ds.step.tolist()),
                f"max {ds.value.max():.4f} vs {values.max():.4f}",
            ),
            (
                "downsampled: keeps the global min (the dip)",
                float(ds.value.min()) == float(values.min()) and dip in set(ds.step.tolist()),
                f"min {ds.value.min():.4f} vs {values.min():.4f}",
            ),
            (f"downsampled: rows <= max_points ({MAX_POINTS})", len(ds) <= MAX_POINTS, f"{len(ds):,} rows"),
            ("downsampled: steps sorted", bool(np.all(np.diff(ds.step.to_numpy()) > 0)), ""),
            (
                "zoom: keeps the window's min and max",
                math.isclose(float(zoom.value.min()), float(win.min()))
                and math.isclose(float(zoom.value.max()), float(win.max())),
                f"[{zoom.value.min():.4f}, {zoom.value.max():.4f}] vs [{win.min():.4f}, {win.max():.4f}]",
            ),
            (
                "zoom: steps inside the window",
                bool(zoom.step.min() >= lo_step and zoom.step.max() <= hi_step),
                f"{zoom.step.min():,}..{zoom.step.max():,} in {lo_step:,}..{hi_step:,}",
            ),
            (f"zoom: rows <= max_points ({MAX_POINTS})", len(zoom) <= MAX_POINTS, f"{len(zoom):,} rows"),
        ]
        for what, good, detail in checks:
            print(f"check {what}: {ok(good)}" + (f" ({detail})" if detail else ""))
        raw.close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
