"""How long does a Prometheus scrape of ``tmon exporter`` take with 100 live runs × 50 keys, and
what does the exporter's reading cost the store?

Builds a SQLite store of R running runs with K keys each (S steps logged), starts the exporter's
HTTP server on a free port, then measures:

  scrape                  GET /metrics over HTTP (what Prometheus pays): median and p95 of 50
  poll: first             the first read of the store (every run's latest points)
  poll: nothing moved     a poll when no run logged anything since the last (the run list only)
  poll: 10% moved         a poll after 10% of the runs logged one more step
  poll: all moved         a poll after every run logged one more step (the worst case)
  rendering /metrics      the text of a snapshot, made once per poll on the poller's thread

A scrape serves the text rendered from the last poll, so its time does not depend on the store; polls run
on the exporter's own thread every ``--interval`` seconds. Target (issue 21): a scrape of 100
live runs × 50 keys in <= 100 ms.

    .venv/bin/python bench/exporter_scrape.py [--quick] [--runs 100] [--keys 50] [--steps 200]
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


def build(url: str, runs: int, keys: int, steps: int) -> list:
    from tmon_core import Recorder

    recs = []
    for r in range(runs):
        rec = Recorder(
            url, run_name=f"run-{r}", framework="lightning", flush_interval=0.5, heartbeat_timeout=3600
        )
        names = [f"metric_{k:02d}" for k in range(keys - 3)] + ["loss", "lr", "step_time"]
        for s in range(steps):
            rec.log({n: (s + k) * 0.001 for k, n in enumerate(names)}, s)
        rec.flush(120)
        recs.append((rec, names))
    return recs


def step_more(recs, frac: float) -> None:
    n = max(1, int(len(recs) * frac))
    for rec, names in recs[:n]:
        s = rec.next_step
        rec.log({k: s * 0.5 for k in names}, s)
    for rec, _ in recs[:n]:
        rec.flush(120)


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument("--runs", type=int, default=100),
            p.add_argument("--keys", type=int, default=50),
            p.add_argument("--steps", type=int, default=200),
        ),
    )
    runs, keys, steps = (10, 50, 50) if args.quick else (args.runs, args.keys, args.steps)
    header(f"exporter: scrape and poll with {runs} live runs x {keys} keys", args.quick)
    from tmon_core.interop.exporter import Exporter, serve

    work = tempfile.mkdtemp(prefix="tmon-exporter-")
    url = f"sqlite:///{work}/tmon.db"
    try:
        t = time.perf_counter()
        recs = build(url, runs, keys, steps)
        print(f"store: {runs} runs x {keys} keys x {steps} steps written in {time.perf_counter() - t:.1f} s")
        ex = Exporter(url, interval=3600)  # polls driven by hand below
        polls = {}
        polls["poll: first"] = ex.poll().duration
        polls["poll: nothing moved"] = median([ex.poll().duration for _ in range(5)])
        moved10, moved_all = [], []
        for _ in range(3):
            step_more(recs, 0.1)
            moved10.append(ex.poll().duration)
            step_more(recs, 1.0)
            moved_all.append(ex.poll().duration)
        polls["poll: 10% moved"] = median(moved10)
        polls["poll: all moved"] = median(moved_all)
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
        samples = sum(len(st.latest) for st in ex.snapshot.runs.values())
        print(f"/metrics: {size / 1024:.0f} KiB, {samples} metric values of {len(ex.snapshot.runs)} runs")
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
