"""How long does a Prometheus scrape of ``tmon exporter`` take with 100 live runs × 50 keys and
their hardware samples, and what does the exporter's reading cost the store?

Builds a SQLite store of R running runs with K keys each (S steps logged) and H hardware samples
each (a host sample and one per GPU, G GPUs: 8 by default, an 8-GPU node sampled each second),
starts the exporter's HTTP server on a free port, then measures:

  scrape                  GET /metrics over HTTP (what Prometheus pays): median and p95 of 50
  poll: first             the first read of the store (every run's latest points and samples)
  poll: nothing moved     a poll when no run logged anything since the last (the run list and an
                          empty read of the samples)
  poll: 10% moved         a poll after 10% of the runs logged one more step and one more sample
  poll: all moved         a poll after every run logged one more step and sample (the worst case)
  samples: first read,    ``latest_samples`` alone (the hardware part of the polls above): the
  samples: all moved      newest sample of every run, node and GPU; the rows of one more sample
                          of every run
  rendering /metrics      the text of a snapshot, made once per poll on the poller's thread

A scrape serves the text rendered from the last poll, so its time does not depend on the store; polls run
on the exporter's own thread every ``--interval`` seconds. Target (issue 21): a scrape of 100
live runs × 50 keys in <= 100 ms.

    .venv/bin/python bench/exporter_scrape.py [--quick] [--runs 100] [--keys 50] [--steps 200] [--gpus 8] [--samples 300]
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _util import header, median, num, parse_args, pct, table  # noqa: E402


def sample(rec, t: float, gpus: int) -> None:
    """One hardware sample as the sampler writes it on an ``gpus``-GPU node."""
    host = {
        "wall_time": t,
        "host": "node-0",
        "node_rank": 0,
        "cpu_percent": 42.0,
        "ram_total": 2 << 40,
        "ram_used": 500 << 30,
        "ram_available": 1 << 40,
        "swap_used": 0,
        "proc_rss": 30 << 30,
        "children_rss": 40 << 30,
        "children_count": 8,
    }
    rows = [
        {
            "wall_time": t,
            "host": "node-0",
            "node_rank": 0,
            "gpu": g,
            "name": "NVIDIA H200",
            "mem_used": 120 << 30,
            "mem_total": 141 << 30,
            "util_percent": 97.0,
            "power_watts": 650.0,
            "temperature_c": 60.0,
            "torch_allocated": 100 << 30,
            "torch_reserved": 110 << 30,
            "torch_max_allocated": 105 << 30,
        }
        for g in range(gpus)
    ]
    rec.sample(host, rows)


def build(url: str, runs: int, keys: int, steps: int, gpus: int, samples: int) -> list:
    from tmon_core import Recorder

    recs = []
    t0 = time.time() - samples
    for r in range(runs):
        rec = Recorder(
            url, run_name=f"run-{r}", framework="lightning", flush_interval=0.5, heartbeat_timeout=3600
        )
        names = [f"metric_{k:02d}" for k in range(keys - 3)] + ["loss", "lr", "step_time"]
        for s in range(steps):
            rec.log({n: (s + k) * 0.001 for k, n in enumerate(names)}, s)
        for i in range(samples):  # a sample a second for the last `samples` seconds
            sample(rec, t0 + i, gpus)
        rec.flush(120)
        recs.append((rec, names))
    return recs


def step_more(recs, frac: float, gpus: int) -> None:
    n = max(1, int(len(recs) * frac))
    for rec, names in recs[:n]:
        s = rec.next_step
        rec.log({k: s * 0.5 for k in names}, s)
        sample(rec, time.time(), gpus)
    for rec, _ in recs[:n]:
        rec.flush(120)


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument("--runs", type=int, default=100),
            p.add_argument("--keys", type=int, default=50),
            p.add_argument("--steps", type=int, default=200),
            p.add_argument("--gpus", type=int, default=8),
            p.add_argument("--samples", type=int, default=300),
        ),
    )
    runs, keys, steps, gpus, samples = (
        (10, 50, 50, 2, 30) if args.quick else (args.runs, args.keys, args.steps, args.gpus, args.samples)
    )
    header(
        f"exporter: scrape and poll with {runs} live runs x {keys} keys, {samples} samples of {gpus} GPUs each",
        args.quick,
    )
    from tmon_core.interop.exporter import Exporter, serve
    from tmon_core.store.samples_query import latest_samples

    work = tempfile.mkdtemp(prefix="tmon-exporter-")
    url = f"sqlite:///{work}/tmon.db"
    try:
        t = time.perf_counter()
        recs = build(url, runs, keys, steps, gpus, samples)
        print(
            f"store: {runs} runs x {keys} keys x {steps} steps, x {samples} host samples and "
            f"{samples * gpus} GPU samples, written in {time.perf_counter() - t:.1f} s"
        )
        ex = Exporter(url, interval=3600)  # polls driven by hand below
        polls = {}
        polls["poll: first"] = ex.poll().duration
        polls["poll: nothing moved"] = median([ex.poll().duration for _ in range(5)])
        moved10, moved_all = [], []
        for _ in range(3):
            step_more(recs, 0.1, gpus)
            moved10.append(ex.poll().duration)
            step_more(recs, 1.0, gpus)
            moved_all.append(ex.poll().duration)
        polls["poll: 10% moved"] = median(moved10)
        polls["poll: all moved"] = median(moved_all)
        store, ids = ex._open(), [rec.run_id for rec, _ in recs]
        first, more = [], []
        for _ in range(3):
            t = time.perf_counter()
            got = latest_samples(store, ids)
            first.append(time.perf_counter() - t)
            for rec, _ in recs:
                sample(rec, time.time(), gpus)
            for rec, _ in recs:
                rec.flush(120)
            t = time.perf_counter()
            latest_samples(store, ids, got.cursor)
            more.append(time.perf_counter() - t)
        assert len(got.gpus) == runs * gpus, (len(got.gpus), runs * gpus)
        polls["samples: first read"] = median(first)
        polls["samples: all moved"] = median(more)
        ex.poll()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        served, server = serve(url, port, "127.0.0.1", interval=3600)  # what `tmon exporter` runs
        t = time.perf_counter()
        ex.metrics_text()  # the hand-polled exporter's last snapshot, not rendered yet
        render = time.perf_counter() - t
        times, size = [], 0
        for _ in range(50):
            t = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                size = len(r.read())
            times.append(time.perf_counter() - t)
        server.shutdown()
        served.stop()
        times.sort()
        polls["rendering /metrics (once per poll)"] = render
        values = sum(len(st.latest) for st in ex.snapshot.runs.values())
        hw = len(ex.snapshot.host) + len(ex.snapshot.gpus)
        print(
            f"/metrics: {size / 1024:.0f} KiB, {values} metric values and the newest of {hw} hardware "
            f"samples (hosts, GPUs) of {len(ex.snapshot.runs)} runs"
        )
        rows = [
            [
                "scrape (HTTP GET /metrics)",
                num(median(times) * 1000, "{:.1f}"),
                num(pct(times, 95) * 1000, "{:.1f}"),
                "yes" if pct(times, 95) <= 0.1 else "no",
            ]
        ]
        rows += [[k, num(v * 1000, "{:.1f}"), "", ""] for k, v in polls.items()]
        table(["", "ms (median)", "ms (p95)", "<= 100 ms"], rows)
        for rec, _ in recs:
            rec.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
