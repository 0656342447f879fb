"""What does tmon's HardwareSampler cost, as a share of one CPU core, at its 1 s default interval?

The sampler counts the CPU time its thread spends sampling (``cpu_seconds``, ``samples_taken``).
Here ``sample_once()`` is driven N times and its per-sample CPU is compared with what a naive
sampler would call: ``psutil.Process().children(recursive=True)`` (scans every process on the
machine) and a plain host sample (``cpu_percent``, ``virtual_memory``, ``swap_memory``), each per
call. Run with 0 and with 4 live child processes (sleeping multiprocessing workers), so the
children scan has something to find, and with 4 children started from a non-main thread (the case
the periodic full scan exists for). Then the real sampler thread runs at 1 s for a few seconds.
Target: <= 0.3 % of one core.

    .venv/bin/python bench/sampler_cost.py [--quick]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import warnings

import psutil
from _util import header, median, num, ok, parse_args, pct, table

from tmon_core import Recorder
from tmon_core.sampler import HardwareSampler

TARGET_PCT = 0.3


def _sleeper(seconds: float) -> None:
    time.sleep(seconds)


def start_children(n: int, from_thread: bool) -> tuple[list, threading.Event]:
    """``n`` sleeping child processes, forked from the main thread or from a thread that stays
    alive until the returned event is set (a thread's children are reparented to the main thread
    when it exits, so the forking thread must outlive the measurement)."""
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_sleeper, args=(600,), daemon=True) for _ in range(n)]
    release = threading.Event()

    def go():
        for p in procs:
            p.start()
        release.wait()

    if from_thread:
        threading.Thread(target=go, daemon=True).start()
    else:
        for p in procs:
            p.start()
    deadline = time.time() + 10
    me = psutil.Process()
    while len(me.children()) < n and time.time() < deadline:
        time.sleep(0.05)
    return procs, release


def stop_children(procs: list, release: threading.Event) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(5)
    release.set()


def per_call(fn, n: int) -> tuple[list[float], list[float]]:
    """CPU (thread_time) and wall (perf_counter) seconds of each of ``n`` calls."""
    cpu, wall = [], []
    tt, pc = time.thread_time, time.perf_counter
    for _ in range(n):
        c0, w0 = tt(), pc()
        fn()
        wall.append(pc() - w0)
        cpu.append(tt() - c0)
    return cpu, wall


def host_sample() -> None:
    psutil.cpu_percent(interval=None)
    psutil.virtual_memory()
    psutil.swap_memory()


def measure_variant(label: str, n: int, tmp: str) -> tuple[list[list], dict]:
    """Rows for one children set-up: tmon's sample_once and the two psutil peers, per call."""
    rec = Recorder(os.path.join(tmp, f"s_{abs(hash(label))}.db"), run_name="bench-sampler")
    # a huge interval: the sampler thread takes its first sample and then waits; we drive sample_once
    sampler = HardwareSampler(rec, interval=3600.0)
    sampler.start()
    time.sleep(0.2)  # let the thread's first sample finish
    per_sample_cpu, per_sample_wall = [], []
    counts = []
    proc_col = next((c for c in sampler.active if c.name == "process"), None)
    orig_collect = proc_col.collect if proc_col is not None else None
    if proc_col is not None:

        def collect_and_count():
            out = orig_collect()
            counts.append(out.get("children_count"))
            return out

        proc_col.collect = collect_and_count
    cpu0, taken0 = sampler.cpu_seconds, sampler.samples_taken
    for _ in range(n):
        c = sampler.cpu_seconds
        w = time.perf_counter()
        sampler.sample_once()
        per_sample_wall.append(time.perf_counter() - w)
        per_sample_cpu.append(sampler.cpu_seconds - c)
    mean_cpu = (sampler.cpu_seconds - cpu0) / (sampler.samples_taken - taken0)
    sampler.stop()
    rec.close()
    me = psutil.Process()
    kids_cpu, kids_wall = per_call(lambda: me.children(recursive=True), max(20, n // 3))
    host_cpu, host_wall = per_call(host_sample, n)

    host_mean = sum(host_cpu) / len(host_cpu)

    def row(name, cpu, wall, mean=None):
        cs = sorted(cpu)
        m = mean if mean is not None else sum(cpu) / len(cpu)
        return [
            f"{label}: {name}",
            f"{len(cpu):,}",
            num(median(cs) * 1e6, "{:,.0f}"),
            num(pct(cs, 99) * 1e6, "{:,.0f}"),
            num(m * 1e6, "{:,.0f}"),
            num(median(sorted(wall)) * 1e6, "{:,.0f}"),
            f"{m / host_mean:.2f}x",
            num(m * 100, "{:.3f}"),
            f"{ok(m * 100 <= TARGET_PCT)} (<= {TARGET_PCT} %)" if name.startswith("tmon") else "",
        ]

    rows = [
        row("tmon HardwareSampler.sample_once()", per_sample_cpu, per_sample_wall, mean_cpu),
        row("psutil Process().children(recursive)", kids_cpu, kids_wall),
        row("plain host sample (cpu%, vmem, swap)", host_cpu, host_wall),
    ]
    info = {
        "children_count_min": min(counts) if counts else None,
        "children_count_max": max(counts) if counts else None,
        "children_count_zero_share": (sum(1 for c in counts if not c) / len(counts)) if counts else None,
        "mean_cpu": mean_cpu,
        "collectors": [c.name for c in sampler.active],
        "unavailable": sampler.unavailable,
    }
    return rows, info


def live(seconds: float, tmp: str) -> dict:
    """The real sampler thread at its 1 s default for ``seconds``."""
    rec = Recorder(os.path.join(tmp, "live.db"), run_name="bench-sampler-live")
    sampler = rec.start_sampler(interval=1.0)
    t0 = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    out = {"samples": sampler.samples_taken, "cpu": sampler.cpu_seconds, "elapsed": elapsed}
    rec.close()
    return out


def main() -> int:
    args = parse_args(__doc__.split("\n\n")[0])
    header("bench/sampler_cost.py: hardware sampler CPU cost", args.quick)
    warnings.simplefilter("ignore")
    n = 90 if args.quick else 600  # sample_once calls per variant (the full scan runs every 30th)
    live_s = 3.0 if args.quick else 10.0
    print(
        f"psutil {psutil.__version__} | {len(psutil.pids())} processes on this machine | "
        f"/proc/<pid>/task/<tid>/children readable: {os.path.exists(f'/proc/{os.getpid()}/task/{os.getpid()}/children')}"
    )
    rows: list[list] = []
    checks = []
    with tempfile.TemporaryDirectory(prefix="tmon-bench-sampler-") as tmp:
        for label, kids, from_thread in (
            ("0 children", 0, False),
            ("4 children", 4, False),
            ("4 children forked by a live thread", 4, True),
        ):
            procs, release = start_children(kids, from_thread)
            try:
                r, info = measure_variant(label, n, tmp)
            finally:
                stop_children(procs, release)
            rows += r
            seen = (
                f"children_count over {n} samples: {info['children_count_min']}..{info['children_count_max']}"
            )
            good = info["children_count_min"] == kids and info["children_count_max"] == kids
            zero = info["children_count_zero_share"]
            extra = "" if good or zero is None else f" ({zero:.0%} of samples report 0)"
            checks.append(f"{label}: {seen}, expected {kids}{extra}: {ok(good)}")
        lv = live(live_s, tmp)
    collectors = ", ".join(info["collectors"])
    missing = "; ".join(f"{k}: {v}" for k, v in info["unavailable"].items()) or "none"
    table(
        [
            "what (per call)",
            "calls",
            "CPU us median",
            "CPU us p99",
            "CPU us mean",
            "wall us median",
            "mean / host sample",
            "% of a core at 1 s",
            "target",
        ],
        rows,
        title=f"per-call CPU (thread_time) of one sample; '% of a core at 1 s' = mean CPU per call / 1 s "
        f"(tmon's mean includes its full children scan every 30th sample)\n"
        f"sampler collectors active: {collectors}; unavailable: {missing}",
    )
    for line in checks:
        print("check " + line)
    live_pct = lv["cpu"] / lv["elapsed"] * 100
    print(
        f"live sampler thread at 1 s for {lv['elapsed']:.1f} s: {lv['samples']} samples, "
        f"{lv['cpu'] * 1e3:.2f} ms CPU = {live_pct:.3f} % of one core: {ok(live_pct <= TARGET_PCT)} (<= {TARGET_PCT} %)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
