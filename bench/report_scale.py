"""How long does ``tmon_core.report()`` take on a long run?

Two runs of 1,000,000 steps are written into a fresh SQLite store through the Recorder:

* ``1M points``: the loss alone (a decaying noisy curve with a few spikes and a NaN stretch near
  the end, so the stability rules have work to do) — the issue's "1,000,000-point run";
* ``adapter keys``: what an adapter writes at every step of such a run — ``loss``, ``lr``,
  ``step_time``, ``data_time``, ``grad_norm``, ``epoch`` (6M points) — plus a validation loss every
  10,000 steps, 3,600 host samples and 200 log records.

Then, median of several repetitions each: ``report(run, save=False)``, next to the floor of
reading the whole loss (``Run.metrics("loss")``, which the NaN and spike rules need) and a
``max_points=20000`` read of one other series. Target (issue 6): a report on a 1,000,000-point
run in <= 2 s.

    .venv/bin/python bench/report_scale.py [--quick] [--steps N] [--reps R]
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
import warnings

import numpy as np
from _util import header, median, num, ok, parse_args, table

import tmon_core
from tmon_core import Recorder, Store


def loss_curve(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.arange(n)
    v = 0.3 + 2.0 * np.exp(-x / (n / 8)) + 0.02 * rng.standard_normal(n)
    for s in (n // 5, n // 3, n // 2):
        v[s] *= 8
    v[int(n * 0.97) : int(n * 0.97) + 50] = np.nan
    return v


def write(url: str, n: int, full: bool) -> tuple[str, float]:
    rec = Recorder(
        url,
        run_name=f"bench-report-{'full' if full else 'loss'}",
        framework="lightning",
        config={
            "batch_size": 32,
            "num_workers": 4,
            "precision": "32-true",
            "accumulate_grad_batches": 1,
            "optimizers": [{"class": "AdamW", "defaults": {"lr": 1e-3, "weight_decay": 0.01}}],
        },
        flush_interval=0.5,
    )
    loss = loss_curve(n).tolist()
    t0 = time.perf_counter()
    log = rec.log
    if not full:
        for s, v in enumerate(loss):
            log({"loss": v}, s)
    else:
        rng = np.random.default_rng(1)
        st = (0.05 + 0.005 * rng.standard_normal(n)).tolist()
        dt = (0.004 + 0.001 * rng.random(n)).tolist()
        gn = (1.0 + 0.1 * rng.standard_normal(n)).tolist()
        host = socket.gethostname()
        for s in range(n):
            log(
                {
                    "loss": loss[s],
                    "lr": 1e-3,
                    "step_time": st[s],
                    "data_time": dt[s],
                    "grad_norm": gn[s],
                    "epoch": float(s // 100_000),
                },
                s,
            )
            if s % 10_000 == 9_999:  # a whole validation set: smooth
                log({"val_loss": 1.1 * (0.3 + 2.0 * np.exp(-s / (n / 8)))}, s)
            if s % (n // 3600 or 1) == 0:
                rec.sample(
                    {
                        "wall_time": time.time(),
                        "host": host,
                        "node_rank": 0,
                        "step": s,
                        "cpu_percent": 60.0,
                        "ram_total": 64 << 30,
                        "ram_used": 20 << 30,
                        "ram_available": 44 << 30,
                        "swap_used": 0,
                        "proc_rss": 8 << 30,
                        "children_rss": 4 << 30,
                        "children_count": 4,
                    }
                )
            if s % (n // 200 or 1) == 0:
                rec.log_record("WARNING", f"slow shard {s}", logger="data", step=s)
    rec.close()
    return rec.run_id, time.perf_counter() - t0


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument("--steps", type=int, default=None),
            p.add_argument("--reps", type=int, default=None),
        ),
    )
    n = args.steps or (100_000 if args.quick else 1_000_000)
    reps = args.reps or (2 if args.quick else 5)
    header(f"report() on a {n:,}-step run", args.quick)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'report.db')}"
        rows = []
        results = {}
        for full in (False, True):
            rid, t_write = write(url, n, full)
            store = Store(url)
            run = store.run(rid)
            points = run.count_points()
            t_report, t_loss, t_down = [], [], []
            r = None
            for _ in range(reps):
                t0 = time.perf_counter()
                r = tmon_core.report(run, save=False)
                t_report.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                run.metrics("loss")
                t_loss.append(time.perf_counter() - t0)
                key = "step_time" if full else "loss"
                t0 = time.perf_counter()
                run.metrics(key, max_points=20_000)
                t_down.append(time.perf_counter() - t0)
            store.close()
            name = "adapter keys" if full else "1M points" if n == 1_000_000 else f"{n:,} points"
            results[name] = median(t_report)
            rows.append(
                [
                    name,
                    f"{points:,}",
                    num(t_write, "{:.1f}"),
                    num(median(t_report), "{:.3f}"),
                    num(median(t_loss), "{:.3f}"),
                    num(median(t_down), "{:.3f}"),
                    r.health,
                    ", ".join(sorted({f.rule for f in r.findings})),
                ]
            )
        table(
            ["run", "points", "write s", "report() s", "read loss s", "20k read s", "health", "findings"],
            rows,
            title=f"[1] report() on {n:,} steps, median of {reps} (report not saved; 'read loss' = Run.metrics('loss'), "
            "the floor the NaN/spike rules need)",
        )
        first = next(iter(results.values()))
        print(
            f"target: report on a 1,000,000-point run <= 2 s: {num(first, '{:.3f}')} s -> "
            f"{ok(first <= 2.0) if n == 1_000_000 else 'n/a (not 1M steps)'}"
        )


if __name__ == "__main__":
    sys.exit(main())
