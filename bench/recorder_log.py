"""What does ``Recorder.log`` cost on the training hot path, and how many points per second does
the recorder get into SQLite?

(a) per-call cost of ``Recorder.log`` with 5 metrics (python floats, and 0-d CPU tensors), timed
    call by call with ``perf_counter_ns``, next to the floor (a plain ``list.append`` of a dict copy).
    Target: median <= 5 us.
(b) sustained throughput: log N points as fast as possible (flush_interval 0.5 s), ``close()``, and
    count points / time until everything is in the store (checked with ``Run.count_points()``),
    next to raw ``sqlite3.executemany`` into a similar table. Target: >= 500k points/s.
(c) the writer thread's CPU per flush at training-like cadences (12 and 100 metrics per step; 10,
    170 and 1000 steps per 0.5 s flush): what the background writer costs a real run.

    .venv/bin/python bench/recorder_log.py [--quick]
"""

from __future__ import annotations

import gc
import os
import sqlite3
import sys
import tempfile
import time
import warnings

from _util import header, median, num, ok, parse_args, pct, ratio, table

from tmon_core import Recorder, Store
from tmon_core.store.writer import StoreWriter

KEYS = ("loss", "acc", "lr", "grad_norm", "step_time")


def float_metrics() -> dict:
    return {"loss": 0.6931, "acc": 0.51, "lr": 1e-3, "grad_norm": 3.2, "step_time": 0.0123}


def tensor_metrics() -> dict:
    import torch

    return {k: torch.tensor(v) for k, v in float_metrics().items()}


# ---------------------------------------------------------------------------- (a) per-call cost
# Each path has its own loop (no lambda in between) so that all of them pay the same timer cost.


def t_empty(n: int) -> list[int]:
    pc = time.perf_counter_ns
    ts = [0] * n
    for i in range(n):
        t0 = pc()
        ts[i] = pc() - t0
    return ts


def t_floor(m: dict, n: int) -> list[int]:
    buf: list = []
    app = buf.append
    pc = time.perf_counter_ns
    ts = [0] * n
    for i in range(n):
        t0 = pc()
        app(m.copy())
        ts[i] = pc() - t0
    return ts


def t_floor_stamped(m: dict, n: int) -> list[int]:
    buf: list = []
    app = buf.append
    now = time.time
    pc = time.perf_counter_ns
    ts = [0] * n
    for i in range(n):
        t0 = pc()
        app((i, now(), m.copy()))
        ts[i] = pc() - t0
    return ts


def t_floor_detach(m: dict, n: int) -> list[int]:
    buf: list = []
    app = buf.append
    now = time.time
    pc = time.perf_counter_ns
    ts = [0] * n
    for i in range(n):
        t0 = pc()
        app((i, now(), {k: v.detach() for k, v in m.items()}))
        ts[i] = pc() - t0
    return ts


def t_recorder(rec: Recorder, m: dict, n: int, first_step: int) -> list[int]:
    log = rec.log
    pc = time.perf_counter_ns
    ts = [0] * n
    for i in range(n):
        t0 = pc()
        log(m, first_step + i)
        ts[i] = pc() - t0
    return ts


def bulk_recorder(rec: Recorder, m: dict, n: int, first_step: int) -> float:
    """Mean ns per call of a loop without per-call timers."""
    log = rec.log
    t0 = time.perf_counter_ns()
    for i in range(first_step, first_step + n):
        log(m, i)
    return (time.perf_counter_ns() - t0) / n


def bulk_floor(m: dict, n: int) -> float:
    buf: list = []
    app = buf.append
    t0 = time.perf_counter_ns()
    for _ in range(n):
        app(m.copy())
    return (time.perf_counter_ns() - t0) / n


def part_a(tmp: str, n: int, rounds: int, with_tensors: bool) -> None:
    fm = float_metrics()
    tm = tensor_metrics() if with_tensors else None
    paths = [
        "timer only (empty body)",
        "floor: list.append(dict copy)",
        "floor: append((step, time(), dict copy))",
        "Recorder.log, 5 floats",
    ]
    if with_tensors:
        paths += ["floor: append((step, time(), {k: t.detach()}))", "Recorder.log, 5 0-d CPU tensors"]
    samples: dict[str, list[int]] = {p: [] for p in paths}
    means: dict[str, list[float]] = {p: [] for p in paths}

    for r in range(rounds):
        # rotate the order each round so that drift on a shared machine hits every path alike
        order = paths[r % len(paths) :] + paths[: r % len(paths)]
        for p in order:
            gc.collect()
            if p.startswith("timer"):
                samples[p] += t_empty(n)
            elif p == "floor: list.append(dict copy)":
                samples[p] += t_floor(fm, n)
                means[p].append(bulk_floor(fm, n))
            elif p.startswith("floor: append((step, time(), dict"):
                samples[p] += t_floor_stamped(fm, n)
            elif p.startswith("floor: append((step, time(), {k"):
                samples[p] += t_floor_detach(tm, n)
            else:
                m = tm if "tensors" in p else fm
                # a fresh recorder each time: its writer thread drains at 0.5 s, as in training
                rec = Recorder(
                    os.path.join(tmp, f"a_{r}_{len(samples[p])}.db"), run_name="bench-log", flush_interval=0.5
                )
                samples[p] += t_recorder(rec, m, n, 0)
                means[p].append(bulk_recorder(rec, m, n, n))
                rec.close()
                if rec.dropped or rec.problems:
                    print(f"  warning: {p}: dropped={rec.dropped} problems={rec.problems[:2]}")

    floor_med = median(samples["floor: list.append(dict copy)"]) / 1000
    rows = []
    for p in paths:
        s = sorted(samples[p])
        med, p99, p999 = median(s) / 1000, pct(s, 99) / 1000, pct(s, 99.9) / 1000
        mean_untimed = median(means[p]) / 1000 if means[p] else None
        target = ""
        if p.startswith("Recorder.log"):
            target = f"{ok(med <= 5.0)} (<= 5 us)"
        rows.append(
            [
                p,
                num(med),
                num(p99),
                num(p999),
                num(mean_untimed),
                ratio(med, floor_med) if not p.startswith("timer") else "",
                target,
            ]
        )
    table(
        [
            "path (5 metrics per call)",
            "median us",
            "p99 us",
            "p99.9 us",
            "mean us (no timer)",
            "median / floor",
            "target",
        ],
        rows,
        title=f"(a) cost per call: {rounds} rounds x {n:,} calls per path, per-call perf_counter_ns "
        f"(includes ~{median(samples[paths[0]]) / 1000:.2f} us timer cost; 'mean us (no timer)' is a "
        f"loop without it)",
    )


def part_a2(tmp: str, n: int) -> None:
    """Where the mean goes: the same bulk loop with the garbage collector on/off and with the writer
    thread draining every 0.5 s or idle (flush_interval=60), so the hot path's own cost, the GC
    pauses caused by a large buffer of tracked objects, and GIL contention with the writer separate."""
    import torch  # noqa: F401  (already imported by tensor_metrics)

    rows = []
    for label, m in (("5 floats", float_metrics()), ("5 0-d CPU tensors", tensor_metrics())):
        res = {}
        for writer in ("0.5 s", "idle"):
            for use_gc in (True, False):
                fi, hb = (0.5, 30.0) if writer == "0.5 s" else (60.0, 120.0)
                rec = Recorder(
                    os.path.join(tmp, f"a2_{len(rows)}_{writer[:2]}_{use_gc}.db"),
                    flush_interval=fi,
                    heartbeat_timeout=hb,
                )
                gc.collect()
                if not use_gc:
                    gc.disable()
                try:
                    res[(writer, use_gc)] = bulk_recorder(rec, m, n, 0) / 1000
                finally:
                    gc.enable()
                rec.close()
        base = res[("idle", False)]
        rows.append(
            [
                f"Recorder.log, {label}",
                num(res[("0.5 s", True)]),
                num(res[("0.5 s", False)]),
                num(res[("idle", True)]),
                num(base),
                ratio(res[("0.5 s", True)], base),
            ]
        )
    table(
        [
            "path",
            "writer 0.5 s, gc on",
            "writer 0.5 s, gc off",
            "writer idle, gc on",
            "writer idle, gc off",
            "(0.5 s, gc on) / (idle, gc off)",
        ],
        rows,
        title=f"(a2) mean us per call, loops of {n:,} calls without per-call timers: "
        f"what GC pauses and the writer thread add to the hot path's own cost",
    )


# ---------------------------------------------------------------------------- (b) sustained throughput


class _Clock:
    """Wall and thread CPU time spent inside a wrapped method (the writer thread's work)."""

    def __init__(self):
        self.wall = 0.0
        self.cpu = 0.0
        self.calls = 0

    def wrap(self, fn):
        clock = self

        def wrapper(*a, **kw):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                clock.wall += time.perf_counter() - t0
                clock.cpu += time.thread_time() - c0
                clock.calls += 1

        return wrapper


def tmon_throughput(path: str, steps: int) -> dict:
    import tmon_core.store.writer as writer_mod

    drain, write, summ, pts, sums = _Clock(), _Clock(), _Clock(), _Clock(), _Clock()
    orig_drain, orig_write, orig_insert = Recorder._drain, StoreWriter.write, writer_mod.insert_rows
    orig_summarize = getattr(writer_mod, "summarize", None)

    def insert_timed(conn, head, *a, **kw):  # splits the writer's SQL time into points / summaries
        clock = pts if "INTO tmon_chunks" in head else sums if "INTO tmon_summaries" in head else None
        if clock is None:
            return orig_insert(conn, head, *a, **kw)
        return clock.wrap(orig_insert)(conn, head, *a, **kw)

    # measurement only: the wrapped functions run unchanged
    Recorder._drain = drain.wrap(orig_drain)
    StoreWriter.write = write.wrap(orig_write)
    writer_mod.insert_rows = insert_timed
    if orig_summarize is not None:
        writer_mod.summarize = summ.wrap(orig_summarize)
    try:
        m = float_metrics()
        gc.collect()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        rec = Recorder(path, run_name="bench-throughput", flush_interval=0.5)
        t_open = time.perf_counter()
        log = rec.log
        for i in range(steps):
            log(m, i)
        t_logged = time.perf_counter()
        rec.close()
        t_end = time.perf_counter()
        cpu = time.process_time() - cpu0
    finally:
        Recorder._drain, StoreWriter.write, writer_mod.insert_rows = orig_drain, orig_write, orig_insert
        if orig_summarize is not None:
            writer_mod.summarize = orig_summarize
    n = steps * len(m)
    with Store(path) as store:
        stored = store.run(rec.run_id).count_points()
    return {
        "points": n,
        "stored": stored,
        "dropped": rec.dropped,
        "open": t_open - t0,
        "log": t_logged - t_open,
        "close": t_end - t_logged,
        "total": t_end - t_open,
        "cpu": cpu,
        "drain_wall": drain.wall,
        "write_wall": write.wall,
        "flushes": write.calls,
        "summarize_wall": summ.wall,
        "points_sql_wall": pts.wall,
        "summaries_sql_wall": sums.wall,
    }


_FIELDS = ("series_id", "step", "seq", "value", "wall_time")

# the peer: one row per point, the long format of ARCHITECTURE.md (tmon's own layout up to schema 2,
# clustered by series and step); tmon now writes chunks of arrays instead (see store/schema.py)
_LONG_DDL = [
    "CREATE TABLE tmon_points (series_id INTEGER NOT NULL, step BIGINT NOT NULL, seq BIGINT NOT NULL, "
    "value FLOAT, wall_time FLOAT NOT NULL, PRIMARY KEY (series_id, step, seq)) WITHOUT ROWID"
]


def _raw_layout():
    """DDL and INSERT for the plain-sqlite3 long-format peer, and how to order a row's fields."""
    insert = f"INSERT INTO tmon_points ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})"
    return _LONG_DDL, insert, None


def _raw_conn(path: str, ddl: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for stmt in ddl:
        conn.execute(stmt)
    return conn


def raw_prebuilt(path: str, steps: int, chunk: int) -> dict:
    """executemany of rows built beforehand (not timed), one transaction per ``chunk`` rows."""
    ddl, insert, pick = _raw_layout()
    m = float_metrics()
    sids = {k: i + 1 for i, k in enumerate(m)}
    wall = time.time()
    rows = [(sids[k], i, j, v, wall) for i in range(steps) for j, (k, v) in enumerate(m.items())]
    if pick is not None:
        rows = [tuple(r[x] for x in pick) for r in rows]
    gc.collect()
    t0 = time.perf_counter()
    conn = _raw_conn(path, ddl)
    for j in range(0, len(rows), chunk):
        conn.execute("BEGIN")
        conn.executemany(insert, rows[j : j + chunk])
        conn.execute("COMMIT")
    conn.close()
    total = time.perf_counter() - t0
    return {"points": len(rows), "total": total}


def raw_loop(path: str, steps: int, flush_steps: int) -> dict:
    """The same producer loop as the recorder (a dict per step), single-threaded: append tuples,
    executemany + commit every ``flush_steps`` steps. No summaries, no NaN handling."""
    ddl, insert, pick = _raw_layout()
    m = float_metrics()
    sids = {k: i + 1 for i, k in enumerate(m)}
    gc.collect()
    t0 = time.perf_counter()
    conn = _raw_conn(path, ddl)
    buf: list = []
    app = buf.append
    now = time.time
    seq = 0
    for i in range(steps):
        w = now()
        for k, v in m.items():
            app((sids[k], i, seq, v, w))
            seq += 1
        if (i + 1) % flush_steps == 0:
            conn.execute("BEGIN")
            conn.executemany(insert, buf if pick is None else [tuple(r[x] for x in pick) for r in buf])
            conn.execute("COMMIT")
            buf.clear()
    if buf:
        conn.execute("BEGIN")
        conn.executemany(insert, buf if pick is None else [tuple(r[x] for x in pick) for r in buf])
        conn.execute("COMMIT")
    conn.close()
    total = time.perf_counter() - t0
    return {"points": steps * len(m), "total": total}


def part_b(tmp: str, steps: int, rounds: int) -> None:
    res: dict[str, list[dict]] = {"tmon": [], "prebuilt": [], "loop": []}
    for r in range(rounds):
        order = ["tmon", "prebuilt", "loop"]
        order = order[r % 3 :] + order[: r % 3]
        for what in order:
            path = os.path.join(tmp, f"b_{what}_{r}.db")
            if what == "tmon":
                res[what].append(tmon_throughput(path, steps))
            elif what == "prebuilt":
                res[what].append(raw_prebuilt(path, steps, chunk=100_000))
            else:
                res[what].append(raw_loop(path, steps, flush_steps=20_000))

    def rate(d):
        return d["points"] / d["total"]

    tm = sorted(res["tmon"], key=rate)[len(res["tmon"]) // 2]  # the median round
    raw_rate = median([rate(d) for d in res["prebuilt"]])
    loop_rate = median([rate(d) for d in res["loop"]])
    tm_rate = rate(tm)
    count_ok = all(d["stored"] == d["points"] and d["dropped"] == 0 for d in res["tmon"])
    n = tm["points"]
    rows = [
        [
            "tmon Recorder.log + close (flush 0.5 s)",
            f"{n:,}",
            num(tm["total"], "{:.2f}"),
            num(tm_rate / 1e3, "{:,.0f}"),
            ratio(tm_rate, raw_rate),
            f"{ok(tm_rate >= 500_000)} (>= 500k/s)",
        ],
        [
            "raw sqlite3 executemany, prebuilt rows, 100k rows/txn",
            f"{n:,}",
            num(n / raw_rate, "{:.2f}"),
            num(raw_rate / 1e3, "{:,.0f}"),
            "1.00x",
            "",
        ],
        [
            "raw sqlite3: dict loop + executemany/20k steps, 1 thread",
            f"{n:,}",
            num(n / loop_rate, "{:.2f}"),
            num(loop_rate / 1e3, "{:,.0f}"),
            ratio(loop_rate, raw_rate),
            "",
        ],
    ]
    table(
        ["writer", "points", "seconds", "k points/s", "vs raw prebuilt", "target"],
        rows,
        title=f"(b) sustained write throughput: {steps:,} steps x 5 metrics, median of {rounds} rounds; raw sqlite3 "
        f"writes one row per point (long format, clustered by series and step; WAL, synchronous=NORMAL), "
        f"no summaries; tmon writes chunks of arrays plus summaries",
    )
    rows = [
        [
            "log() loop (main thread)",
            num(tm["log"], "{:.2f}"),
            num(tm["log"] / n * 1e6, "{:.2f}") + " us/point",
        ],
        ["close() until all written", num(tm["close"], "{:.2f}"), ""],
        [
            "writer: _drain (buffer -> batch, tensors)",
            num(tm["drain_wall"], "{:.2f}"),
            num(tm["drain_wall"] / n * 1e6, "{:.2f}") + " us/point",
        ],
        [
            "writer: StoreWriter.write (SQL + summaries)",
            num(tm["write_wall"], "{:.2f}"),
            num(tm["write_wall"] / n * 1e6, "{:.2f}") + " us/point",
        ],
        [
            "  of which INSERT INTO tmon_chunks",
            num(tm["points_sql_wall"], "{:.2f}"),
            num(tm["points_sql_wall"] / n * 1e6, "{:.2f}") + " us/point",
        ],
        [
            "  of which summarize() (numpy)",
            num(tm["summarize_wall"], "{:.2f}"),
            num(tm["summarize_wall"] / n * 1e6, "{:.2f}") + " us/point",
        ],
        [
            "  of which INSERT/UPSERT tmon_summaries",
            num(tm["summaries_sql_wall"], "{:.2f}"),
            num(tm["summaries_sql_wall"] / n * 1e6, "{:.2f}") + " us/point",
        ],
        [
            "process CPU (all threads)",
            num(tm["cpu"], "{:.2f}"),
            num(tm["cpu"] / n * 1e6, "{:.2f}") + " us/point",
        ],
        ["Recorder() open (schema)", num(tm["open"], "{:.3f}"), "not in the rate"],
    ]
    table(
        ["tmon breakdown (median round; wall time in each part)", "seconds", "per point"],
        rows,
        title=f"    writer flushes: {tm['flushes']}; count_points() == points logged, nothing dropped, "
        f"every round: {ok(count_ok)}",
    )


def part_c(tmp: str, reps: int) -> None:
    """The writer thread's CPU per flush at training-like cadences: a flush every 0.5 s carries
    (steps per 0.5 s) x (metrics per step) points. Public API only: log, then ``flush()`` (the
    writer thread does the work while this thread waits; its CPU = process CPU - this thread's)."""
    rows = []
    for n_series in (12, 100):
        keys = [f"metric_{i:03d}" for i in range(n_series)]
        for steps in (10, 170, 1000):
            rec = Recorder(
                os.path.join(tmp, f"c_{n_series}_{steps}.db"),
                run_name="bench-flush",
                flush_interval=60.0,
                heartbeat_timeout=120.0,
            )
            state = {"step": 0}

            def log_steps(k, rec=rec, keys=keys, state=state):
                step = state["step"]
                for _ in range(k):
                    rec.log({key: 0.5 + (step % 7) * 0.01 for key in keys}, step)
                    step += 1
                state["step"] = step

            log_steps(steps)
            rec.flush()  # first flush creates the run and the series rows: not timed
            cpus = []
            for _ in range(reps):
                log_steps(steps)
                gc.collect()
                c0, m0 = time.process_time(), time.thread_time()
                rec.flush()
                cpus.append((time.process_time() - c0) - (time.thread_time() - m0))
            rec.close()
            cpu = median(cpus)
            pts = steps * n_series
            rows.append(
                [
                    f"{n_series}",
                    f"{steps:,}",
                    f"{pts:,}",
                    num(cpu * 1e3, "{:.2f}"),
                    num(cpu / pts * 1e6, "{:.2f}"),
                    num(cpu / steps * 1e6, "{:,.0f}"),
                    num(cpu / 0.5 * 100, "{:.2f}"),
                ]
            )
    table(
        [
            "metrics/step",
            "steps/flush",
            "points/flush",
            "writer CPU ms/flush",
            "us/point",
            "us/step",
            "% of a core at 1 flush / 0.5 s",
        ],
        rows,
        title=f"(c) writer thread CPU per flush (median of {reps}): 170 steps/flush = a ~3 ms step (the Lightning "
        f"bench), 10 = a 50 ms step, 1000 = a 0.5 ms step; the fixed part per flush (summaries for every "
        f"series at every level, the transaction, the heartbeat) dominates at small batches",
    )


def main() -> int:
    args = parse_args(__doc__.split("\n\n")[0])
    header("bench/recorder_log.py: Recorder.log hot path and write throughput", args.quick)
    warnings.simplefilter("default")
    n = 20_000 if args.quick else 200_000
    rounds = 2 if args.quick else 3
    steps = 60_000 if args.quick else 400_000
    with tempfile.TemporaryDirectory(prefix="tmon-bench-") as tmp:
        part_a(tmp, n, rounds, with_tensors=True)
        part_a2(tmp, n // 2)
        part_b(tmp, steps, 1 if args.quick else 3)
        part_c(tmp, 3 if args.quick else 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
