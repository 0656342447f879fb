"""What does the Monitor widget cost a Lightning fit, and what does one refresh cost?

[1] In a real kernel (jupyter_client; this script drains iopub as a browser would), the Lightning
    benchmark model of ``lightning_overhead.py`` (TinyRegressor, 5 scalars ``self.log``-ged per step,
    ``log_every_n_steps=1``, ~3000 steps, one epoch) is fitted with ``TMonCallback``:
      - no widget;
      - Monitor displayed at train start by ``tmon_widgets.auto.maybe_display`` (what the adapters
        do in a notebook), ``fit()`` blocking the cell;
      - ``fit_in_background`` (the fit in a thread, its Monitor displayed, the cell waiting on it).
    Fits run interleaved in rounds, rotating the order. Per step = wall time from the start of step
    50 to the start of the last step / steps in between; median over rounds; ratio vs no widget.
    Also: the widget updates the kernel sent per second of fit, and the share of the fit's wall
    time the Monitor's refresh thread spent refreshing.
[2] One refresh in-process, for runs of 10k, 100k and 1M points per metric, written a flush per 100
    steps (run still open: the Monitor reads 50 new points per tick, as at 100 steps/s and 0.5 s
    ticks): the first load, a plain tick (charts) and a slow tick (also events, latest values, the
    hardware samples' and run list's turns, every 2 s).

    .venv/bin/python bench/widget_overhead.py [--quick] [--steps N] [--rounds R]
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time

from _util import header, median, num, parse_args, table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["no widget", "Monitor, fit blocks the cell", "fit_in_background + Monitor"]

KERNEL_SETUP = r"""
import gc, json, logging, os, sys, time, warnings
sys.path.insert(0, os.path.join({root!r}, "bench"))
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
import lightning.pytorch as pl
from lightning_overhead import build_classes, _quiet
_quiet()
pl, FiveScalars, SyntheticData, StepTimer, NullLogger, Probe = build_classes()
from tmon_callbacks.lightning import TMonCallback
from tmon_widgets.auto import maybe_display
from tmon_widgets import fit_in_background
import tmon_widgets.monitor as _mm

class Show(pl.Callback):
    def __init__(self, tmon):
        self.tmon, self.mon = tmon, None
    def on_train_start(self, trainer, module):
        self.mon = maybe_display(self.tmon.run_id, self.tmon.options.store)

def bench_fit(config, steps, tag):
    store = os.path.join({tmp!r}, f"tmon_{{tag}}.db")
    tmon = TMonCallback(store=store, run_name=f"bench-{{tag}}")
    timer = StepTimer(steps - 1)
    cbs = [tmon, timer]
    show = Show(tmon) if config == "Monitor, fit blocks the cell" else None
    if show is not None:
        cbs.append(show)
    n = int(steps * 16 / 0.75) + 64  # SyntheticData trains on 75 % of n
    trainer = pl.Trainer(max_epochs=1, max_steps=steps, callbacks=cbs, logger=NullLogger(), log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         num_sanity_val_steps=0, limit_val_batches=0, default_root_dir={tmp!r})
    gc.collect()
    c0 = time.process_time()
    if config == "fit_in_background + Monitor":
        fit = fit_in_background(trainer.fit, FiveScalars(), SyntheticData(n=n, batch_size=16))
        fit.wait()
        mon = fit.monitor
    else:
        trainer.fit(FiveScalars(), SyntheticData(n=n, batch_size=16))
        mon = show.mon if show is not None else None
    cpu = time.process_time() - c0
    per_step = (timer.t1 - timer.t0) / (steps - 1 - 50) * 1e6
    out = {{"per_step_us": per_step, "fit_s": timer.t1 - timer.t0, "cpu_s": cpu,
            "refresh_s": mon.refresh_total_s if mon is not None else 0.0,
            "refresh_cpu_s": mon.refresh_cpu_s if mon is not None else 0.0,
            "refreshes": mon.refresh_count if mon is not None else 0}}
    if mon is not None:
        mon.close()
    print("RESULT " + json.dumps(out))
"""


class Kernel:
    """A kernel with a thread draining iopub (as a browser would), counting widget updates."""

    def __init__(self, env):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env)
        self.msgs: queue.Queue = queue.Queue()
        self.updates: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()

    def _drain(self):
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except Exception:
                continue
            if msg["msg_type"] == "comm_msg" and msg["content"]["data"].get("method") == "update":
                self.updates.append(time.monotonic())
            self.msgs.put(msg)

    def run(self, code: str, timeout: float = 900) -> str:
        mid = self.kc.execute(code)
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.msgs.get(timeout=0.5)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != mid:
                continue
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                out.append(c["text"])
            elif t == "error":
                raise RuntimeError("\n".join(c["traceback"]))
            elif t == "status" and c["execution_state"] == "idle":
                return "".join(out)
        raise TimeoutError(code[:80])

    def close(self):
        self._stop.set()
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def part1(args, tmp) -> None:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1"
    )
    k = Kernel(env)
    try:
        k.run(KERNEL_SETUP.format(root=ROOT, tmp=tmp))
        results: dict[str, list[dict]] = {c: [] for c in CONFIGS}
        k.run("bench_fit('no widget', 120, 'warmup')")
        for r in range(args.rounds):
            order = CONFIGS[r % 3 :] + CONFIGS[: r % 3]
            for config in order:
                n0 = len(k.updates)
                out = k.run(f"bench_fit({config!r}, {args.steps}, 'r{r}-{CONFIGS.index(config)}')")
                res = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
                res["updates"] = len(k.updates) - n0
                results[config].append(res)
                print(
                    f"  round {r + 1}/{args.rounds} {config:30s} {res['per_step_us']:8.1f} us/step, "
                    f"{res['updates']} widget updates",
                    flush=True,
                )
    finally:
        k.close()
    base = median([x["per_step_us"] for x in results["no widget"]])
    rows = []
    for config in CONFIGS:
        xs = results[config]
        us = median([x["per_step_us"] for x in xs])
        fit_s = median([x["fit_s"] for x in xs])
        ups = median([x["updates"] / x["fit_s"] for x in xs])
        share = median([x["refresh_cpu_s"] / x["fit_s"] for x in xs])
        per_refresh = (
            median([x["refresh_s"] / x["refreshes"] * 1e3 for x in xs if x["refreshes"]])
            if any(x["refreshes"] for x in xs)
            else float("nan")
        )
        cpu_refresh = (
            median([x["refresh_cpu_s"] / x["refreshes"] * 1e3 for x in xs if x["refreshes"]])
            if any(x["refreshes"] for x in xs)
            else float("nan")
        )
        rows.append(
            [
                config,
                num(us, "{:,.0f}"),
                num(us / base, "{:.3f}x"),
                num(us - base, "{:+,.0f}"),
                num(fit_s, "{:.1f}"),
                num(ups, "{:.1f}"),
                num(100 * share, "{:.1f}%"),
                num(cpu_refresh, "{:.1f}"),
                num(per_refresh, "{:.1f}"),
            ]
        )
    print()
    table(
        [
            "[1] Lightning fit in a kernel",
            "us/step",
            "vs no widget",
            "delta us",
            "fit s",
            "widget updates/s",
            "refresh CPU / fit",
            "CPU ms / refresh",
            "wall ms / refresh",
        ],
        rows,
        title=f"median of {args.rounds} rounds, {args.steps} steps per fit",
    )
    spread = [x["per_step_us"] for x in results["no widget"]]
    if len(spread) > 1:
        print(
            f"no-widget fits vary by {100 * (max(spread) - min(spread)) / base:.1f}% between rounds (noise floor)"
        )


def part2(args, tmp) -> None:
    sys.path.insert(0, ROOT)
    from tmon_core import Recorder
    from tmon_widgets import Monitor

    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = []
    for n in sizes:
        url = f"sqlite:///{tmp}/refresh_{n}.db"
        rec = Recorder(url, run_name=f"refresh-{n}", flush_interval=1.0, max_buffer=max(1_000_000, 2 * n))
        step = 0
        # one flush per 100 steps, as a run at 100 steps/s and the default 1 s flush writes them: the
        # store holds one chunk per flush and key, what a reader that scans a series' index pays for
        chunk = 100
        while step < n:
            for s in range(step, min(n, step + chunk)):
                rec.log({"loss": 1.0 / (1 + s) + (s % 97) * 1e-4, "lr": 1e-3}, s)
            step = min(n, step + chunk)
            rec.flush(timeout=120)
        t0 = time.perf_counter()
        mon = Monitor(rec.run_id, store=url, interval=None, metrics=["loss", "lr"])
        first = time.perf_counter() - t0
        fast, slow = [], []
        for tick in range(20):
            for s in range(step, step + 50):
                rec.log({"loss": 1.0 / (1 + s), "lr": 1e-3}, s)
            step += 50
            rec.flush()
            t0 = time.perf_counter()
            mon.refresh(slow=tick % 4 == 3)
            (slow if tick % 4 == 3 else fast).append(time.perf_counter() - t0)
        sent = max(len(s) for s in mon.metrics.series.values())
        rows.append(
            [
                f"{n:,}",
                num(first * 1e3, "{:.1f}"),
                num(median(fast) * 1e3, "{:.2f}"),
                num(median(slow) * 1e3, "{:.2f}"),
                f"{sent:,}",
            ]
        )
        mon.close()
        rec.close()
    print()
    table(
        ["[2] points per metric", "first load ms", "tick ms", "slow tick ms", "points per line"],
        rows,
        title="one Monitor refresh, 2 metrics shown, 50 new points per metric per tick (median of 15 / 5)",
    )


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument("--steps", type=int, default=None),
            p.add_argument("--rounds", type=int, default=None),
            p.add_argument("--part", choices=("1", "2", "both"), default="both"),
        ),
    )
    args.steps = args.steps or (600 if args.quick else 3000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    header("Monitor widget overhead", args.quick)
    tmp = tempfile.mkdtemp(prefix="tmon-widget-bench-")
    try:
        if args.part in ("1", "both"):
            part1(args, tmp)
        if args.part in ("2", "both"):
            part2(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
