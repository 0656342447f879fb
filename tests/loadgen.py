"""Many writer processes, one reader: the load generator behind the load test and bench/load_many_writers.py.

Each writer process records a run with 5 metrics per step at ``rate`` steps/s for ``seconds``;
the reader polls the latest point of every run every ``poll`` seconds and times each poll.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time

WRITER = r"""
import json, sys, time
from tmon_core import Recorder
url, name, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rec = Recorder(url, run_name=name, flush_interval=0.5)
n, t0 = 0, time.perf_counter()
while True:
    now = time.perf_counter() - t0
    if now >= seconds:
        break
    due = int(now * rate) + 1
    while n < due:
        rec.log({"loss": 1.0 / (n + 1), "acc": n % 100 / 100, "lr": 1e-3, "step_time": 0.001, "gnorm": 1.0}, step=n)
        n += 1
    time.sleep(max(0.0, (n / rate) - (time.perf_counter() - t0)))
rec.close()
print(json.dumps({"run_id": rec.run_id, "steps": n, "problems": rec.problems, "dropped": rec.dropped}))
"""


def run_load(
    url: str,
    procs: int = 8,
    rate: float = 1000.0,
    seconds: float = 60.0,
    poll: float = 0.5,
    prefix: str = "load",
) -> dict:
    from tmon_core import open_store

    open_store(url).close()  # create the schema once, before the writers race for it
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"{prefix}-{i}", str(rate), str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    latencies: list[float] = []
    reader_errors: list[str] = []
    stop = threading.Event()

    def reader():
        store = open_store(url)
        while not stop.wait(poll):
            t = time.perf_counter()
            try:
                runs = store.runs()
                for rid in runs.id[runs.name.str.startswith(prefix)]:
                    run = store.run(rid)
                    if "loss" in run.metric_keys():  # a run that has not logged yet has no series
                        run.tail("loss", 100)  # the latest points, as a live chart polls them
            except Exception as exc:
                reader_errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - t)
        store.close()

    th = threading.Thread(target=reader, daemon=True)
    t0 = time.perf_counter()
    th.start()
    outs = [w.communicate(timeout=seconds + 300) for w in workers]
    elapsed = time.perf_counter() - t0
    stop.set()
    th.join(10)
    results, errors = [], []
    for w, (out, err) in zip(workers, outs):
        if w.returncode != 0:
            errors.append(err[-1000:])
            continue
        results.append(json.loads(out.strip().splitlines()[-1]))
    store = open_store(url)
    expected = sum(5 * r["steps"] for r in results)
    stored = sum(store.run(r["run_id"]).count_points() for r in results)
    problems = [p for r in results for p in r["problems"]]
    lat = sorted(latencies) or [float("nan")]
    return {
        "writers": procs,
        "rate": rate,
        "seconds": seconds,
        "elapsed": elapsed,
        "points_expected": expected,
        "points_stored": stored,
        "points_lost": expected - stored,
        "points_per_s": stored / elapsed,
        "lock_errors": sum("locked" in p for p in problems) + sum("locked" in e for e in reader_errors),
        "problems": problems,
        "reader_errors": reader_errors,
        "process_errors": errors,
        "reads": len(latencies),
        "read_p50_ms": 1000 * statistics.median(lat),
        "read_p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }
