"""Build runs for the report tests through the real Recorder: metrics, hardware samples, events and log
records a CPU machine cannot produce by training (a full GPU, swap, an idle GPU), written as tmon writes
them into a real store."""

from __future__ import annotations

import socket
import time

import numpy as np

from tmon_core import Recorder
from tmon_core import events as ev

GiB = 2**30


def host(
    used: float,
    total: float = 64 * GiB,
    *,
    swap: float = 0,
    rss: float = 4 * GiB,
    workers_rss: float = 0,
    workers: int = 0,
    cpu: float = 50.0,
) -> dict:
    return {
        "host": socket.gethostname(),
        "node_rank": 0,
        "cpu_percent": cpu,
        "ram_total": int(total),
        "ram_used": int(used),
        "ram_available": int(total - used),
        "swap_used": int(swap),
        "proc_rss": int(rss),
        "children_rss": int(workers_rss),
        "children_count": workers,
    }


def gpu(
    used: float,
    total: float = 80 * GiB,
    *,
    util: float = 90.0,
    name: str = "NVIDIA A100-SXM4-80GB",
    alloc: float | None = None,
    index: int = 0,
) -> dict:
    return {
        "host": socket.gethostname(),
        "node_rank": 0,
        "gpu": index,
        "name": name,
        "mem_used": int(used),
        "mem_total": int(total),
        "util_percent": util,
        "power_watts": 300.0,
        "temperature_c": 60.0,
        "torch_allocated": None if alloc is None else int(alloc),
        "torch_reserved": None,
        "torch_max_allocated": None if alloc is None else int(alloc),
    }


def build_run(
    store_url: str,
    *,
    framework: str = "lightning",
    config: dict | None = None,
    steps: int = 0,
    series: dict | None = None,
    samples: list | None = None,
    at: dict | None = None,
    status: str | None = ev.COMPLETED,
    error: dict | None = None,
    host_name: str | None = None,
    heartbeat_timeout: float = 30.0,
) -> str:
    """A run of ``steps`` steps. ``series``: key -> sequence of ``steps`` values (None skips a step) or
    dict step -> value. ``samples``: (host dict, [gpu dicts]) spread evenly over the steps, each stamped
    with the time it is recorded. ``at``: step -> callables ``f(recorder)`` run after that step is logged
    (events, log records). ``status=None`` leaves the run open (the caller closes it)."""
    rec = Recorder(
        store_url,
        framework=framework,
        config=config or {},
        flush_interval=0.05,
        heartbeat_timeout=heartbeat_timeout,
    )
    series = series or {}
    samples = list(samples or [])
    at = at or {}
    due = np.linspace(0, max(steps - 1, 0), len(samples)).astype(int).tolist() if samples else []
    for s in range(steps):
        values = {}
        for key, vals in series.items():
            v = vals.get(s) if isinstance(vals, dict) else vals[s]
            if v is not None:
                values[key] = v
        if values:
            rec.log(values, step=s)
        for fn in at.get(s, ()):
            fn(rec)
        while due and due[0] == s:
            due.pop(0)
            h, gs = samples.pop(0)
            now = time.time()
            rec.sample(
                None if h is None else {**h, "wall_time": now, "step": s},
                [{**g, "wall_time": now} for g in gs],
            )
            time.sleep(0.002)  # samples a little apart in time, as a sampler takes them
    for h, gs in samples:  # a run without steps
        now = time.time()
        rec.sample(
            None if h is None else {**h, "wall_time": now, "step": None},
            [{**g, "wall_time": now} for g in gs],
        )
        time.sleep(0.002)
    for fn in at.get(None, ()):
        fn(rec)
    if host_name:
        rec.update_run(host=host_name)
    if status is not None:
        rec.close(status, error)
    else:
        rec.flush()
    return rec.run_id if status is not None else rec


def event(type_: str, step: int | None = None, message: str | None = None, **data):
    return lambda rec: rec.event(type_, step=step, message=message, data=data or None)


def log(
    level: str, message: str, *, source: str = "logging", logger: str | None = "user", step: int | None = None
):
    return lambda rec: rec.log_record(level, message, logger=logger, source=source, step=step)


def decaying(
    steps: int, start: float = 2.0, end: float = 0.2, noise: float = 0.01, seed: int = 0
) -> list[float]:
    rng = np.random.default_rng(seed)
    x = np.arange(steps)
    v = end + (start - end) * np.exp(-x / max(steps / 5, 1)) + noise * rng.standard_normal(steps)
    return v.tolist()


def by_rule(report, rule: str):
    return [f for f in report.findings if f.rule == rule]


def rec_for(report, path_fragment: str):
    """The recommendation whose config_path contains ``path_fragment`` (exactly one)."""
    found = [r for r in report.recommendations if r.config_path and path_fragment in r.config_path]
    assert len(found) == 1, f"{path_fragment!r} in {[r.config_path for r in report.recommendations]}"
    return found[0]
