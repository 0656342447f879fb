"""Throughput: where the time of a step goes.

* ``throughput.input_bound`` (warning) — waiting for data takes >= ``data_share`` (30 %) of the step
  time (``data_time`` / (``data_time`` + ``step_time``), steady state) and the median wait is at
  least ``data_wait_min_s`` (10 ms; shorter waits are the workers' IPC floor, not a bottleneck).
  Advice: more dataloader workers (twice as many, 4 from none; at most the cores less one when the
  report runs on the training host), persistent workers over several epochs, pinned memory with a GPU.
* ``throughput.gpu_idle`` — mean GPU utilization while training < ``gpu_util_low`` (40 %): warning
  when the CPU is saturated (>= ``cpu_saturated``, 90 %) or the run is input-bound (same advice),
  info otherwise (the model or batch is small for the GPU).
* ``throughput.stalls`` — steps taking >= ``stall_factor`` (10) × the median and >= ``stall_min_s``
  (1 s), away from validation, checkpoints and epoch boundaries: warning when 3 or more cost >= 10 %
  of the training time, info otherwise. Mostly waiting for data: a deeper prefetch (or workers).
* ``throughput.uneven`` (info) — (p90 - p10) / median step time > ``step_time_spread`` (1.0), for
  steps of at least ``min_step_s``.
"""

from __future__ import annotations

import os
import socket

import numpy as np

from ... import events as ev
from ... import keys as K
from ..detect.throughput import StepTimes
from ..model import INFO, WARNING, Finding
from . import fmt_seconds, pct, recommend

_BOUNDARY_EVENTS = (
    ev.VALIDATION_START,
    ev.VALIDATION_END,
    ev.CHECKPOINT,
    ev.EPOCH_START,
    ev.EPOCH_END,
    ev.TRAIN_START,
    ev.ROLLBACK,
    ev.SAVE_CHECKPOINT,
)


def check(d):
    bound = _input_share(d)
    yield from _input_bound(d, bound)
    yield from _gpu_idle(d, bound)
    yield from _stalls(d)
    yield from _uneven(d)


def _step_times(d) -> StepTimes:
    t = d.t
    return StepTimes(
        stall_factor=t.stall_factor,
        stall_min_s=t.stall_min_s,
        data_share=t.data_share,
        data_wait_min_s=t.data_wait_min_s,
    )


def _input_share(d) -> dict | None:
    tm = d.timing
    if tm is None:
        return None
    times = _step_times(d)
    times.update(tm["step"], tm["step_time"], tm["data_time"])
    return times.input_share()


def _cores(d) -> int | None:
    """CPU cores of the training host, when this report runs there."""
    return os.cpu_count() if d.info.get("host") == socket.gethostname() else None


def loader_advice(d, rule: str, sev: str, evidence: dict, share: float | None):
    t = d.terms
    workers = d.num_workers
    setting = t.num_workers()
    cores = _cores(d)
    gain = f"up to {pct(share)} less time per step" if share else "data preparation overlaps with compute"
    new_workers = None
    if setting.path and workers is not None:
        want = 4 if workers == 0 else 2 * workers
        if cores:
            want = min(want, max(1, cores - 1))
        if want > workers:
            new_workers = want
            yield recommend(
                rule,
                sev,
                f"{want} dataloader worker{'s' if want != 1 else ''}",
                setting,
                want,
                f"batches are prepared in parallel with the training step: {gain}"
                + (f" ({cores} cores on this host)" if cores else ""),
                evidence=evidence,
                priority=10,
            )
    elif setting.path and workers is None and d.framework == "keras":
        want = 4 if not cores else min(4, max(1, cores - 1))
        new_workers = want
        yield recommend(
            rule,
            sev,
            f"{want} data-loading workers",
            setting,
            want,
            f"batches are prepared in parallel with the training step: {gain}",
            evidence=evidence,
            priority=10,
        )
    epochs = len(d.events_of(ev.EPOCH_START))
    pw = t.persistent_workers()
    if pw.path and (workers or new_workers) and pw.current is False and epochs > 1:
        yield recommend(
            rule,
            sev,
            "Persistent dataloader workers",
            pw,
            True,
            f"workers are started once, not at each of the {epochs} epochs (each start re-imports "
            "the dataset and refills the prefetch queue)",
            evidence=evidence,
            priority=15,
        )
    pin = t.pin_memory()
    if pin.path and d.gpu_peaks and pin.current is False:
        yield recommend(
            rule,
            sev,
            "Pinned host memory",
            pin,
            True,
            "batches are copied to the GPU asynchronously from page-locked memory",
            evidence=evidence,
            priority=20,
        )


def _input_bound(d, bound):
    if not bound or not bound["bound"]:
        return
    share = bound["data_share"]
    evidence = {**bound, "num_workers": d.num_workers}
    yield Finding(
        "throughput.input_bound",
        WARNING,
        f"Input-bound: {pct(share)} of each step waits for data",
        f"The median step waits {fmt_seconds(bound['median_data_s'])} for its batch and computes for "
        f"{fmt_seconds(bound['median_step_s'])} (over {bound['steps']} steps, "
        f"{d.num_workers if d.num_workers is not None else 'unknown'} dataloader workers).",
        evidence,
    )
    yield from loader_advice(d, "throughput.input_bound", WARNING, evidence, share)


def _training_window(d) -> tuple[float, float] | None:
    loss = d.loss
    if loss is None or len(loss) < 2:
        tm = d.timing
        if tm is None or len(tm["wall"]) < 2:
            return None
        return float(tm["wall"][0]), float(tm["wall"][-1])
    return float(loss.walls[0]), float(loss.walls[-1])


def _gpu_idle(d, bound):
    g = d.gpu
    if g.empty or not g.util_percent.notna().any():
        return
    window = _training_window(d)
    if window is not None:
        g = g[(g.wall_time >= window[0]) & (g.wall_time <= window[1])]
    g = g[g.util_percent.notna()]
    if len(g) < d.t.min_samples:
        return
    util = float(g.util_percent.astype(float).mean())
    if util >= d.t.gpu_util_low:
        return
    s = d.samples
    if window is not None and not s.empty:
        s = s[(s.wall_time >= window[0]) & (s.wall_time <= window[1])]
    cpu = float(s.cpu_percent.astype(float).mean()) if not s.empty and s.cpu_percent.notna().any() else None
    saturated = cpu is not None and cpu >= d.t.cpu_saturated
    input_bound = bool(bound and bound["bound"])
    evidence = {
        "gpu_util_mean_percent": util,
        "cpu_mean_percent": cpu,
        "samples": len(g),
        "data_share": bound["data_share"] if bound else None,
        "num_workers": d.num_workers,
    }
    if saturated or input_bound:
        why = (
            (f"the host CPU is saturated ({cpu:.0f} % mean)" if saturated else "")
            + (" and " if saturated and input_bound else "")
            + (f"steps wait for data ({pct(bound['data_share'])} of the time)" if input_bound else "")
        )
        yield Finding(
            "throughput.gpu_idle",
            WARNING,
            f"The GPU idles ({util:.0f} % mean utilization)",
            f"GPU utilization averaged {util:.0f} % while training: {why}. The GPU waits for the host.",
            evidence,
        )
        if not input_bound:  # input-bound advice is given once, by that rule
            yield from loader_advice(
                d, "throughput.gpu_idle", WARNING, evidence, bound["data_share"] if bound else None
            )
    else:
        yield Finding(
            "throughput.gpu_idle",
            INFO,
            f"The GPU is underused ({util:.0f} % mean utilization)",
            f"GPU utilization averaged {util:.0f} % while training, with the CPU at "
            f"{'-' if cpu is None else f'{cpu:.0f} %'} and little waiting for data: the work per step is "
            "small for this GPU (a larger batch, see memory headroom, or a smaller GPU).",
            evidence,
        )


def _stalls(d):
    st = d.series(K.STEP_TIME)
    if st is None or len(st) < 20:
        return
    dt = d.series(K.DATA_TIME)
    data = np.full(len(st), np.nan)
    if dt is not None and len(dt):
        idx = np.clip(np.searchsorted(dt.steps, st.steps), 0, len(dt) - 1)
        hit = dt.steps[idx] == st.steps
        data[hit] = dt.values[idx[hit]]
    times = _step_times(d)
    times.update(st.steps, st.values, data, st.walls)
    e = d.events_of(*_BOUNDARY_EVENTS)
    found = times.stalls([] if e.empty else e.step.dropna().astype(int).tolist())
    if found is None:
        return
    evidence = dict(found.evidence)
    count, lost, share = evidence["count"], evidence["stall_time_s"], evidence["share_of_training"]
    limit, median = evidence["limit_s"], evidence["median_step_s"]
    longest_step, longest_s, data_part = (
        evidence["longest_step"],
        evidence["longest_s"],
        evidence["data_share_of_stalls"],
    )
    wall = evidence.pop("longest_wall_time")
    evidence["memory_at_longest"] = d.memory_at(wall)
    # one hiccup is not a pattern: a warning takes 3 stalls costing 10 % of the time
    sev = WARNING if count >= 3 and share is not None and share >= 0.10 else INFO
    cause = (
        "mostly waiting for data"
        if data_part >= 0.5
        else "mostly inside the step (garbage collection, swapping, other processes, synchronous I/O)"
    )
    yield Finding(
        "throughput.stalls",
        sev,
        f"{count} stall{'s' * (count != 1)} ({fmt_seconds(lost)} lost)",
        f"{count} steps took over {fmt_seconds(limit)} against a median of {fmt_seconds(median)}; "
        f"the longest, step {longest_step}, {fmt_seconds(longest_s)}: {cause}.",
        evidence,
        step=longest_step,
        wall_time=wall,
    )
    if data_part >= 0.5 and sev == WARNING:
        workers = d.num_workers
        if workers:
            pf = d.terms.prefetch_factor()
            current = pf.current if isinstance(pf.current, int) else 2
            if pf.path:
                yield recommend(
                    "throughput.stalls",
                    sev,
                    "Prefetch more batches",
                    pf,
                    current * 2,
                    "a deeper queue of ready batches absorbs slow ones (an occasional slow file or "
                    "sample), at the cost of host memory",
                    evidence=evidence,
                    current=current,
                    priority=20,
                )
        else:
            yield from loader_advice(d, "throughput.stalls", sev, evidence, None)


def _uneven(d):
    tm = d.timing
    if tm is None:
        return
    st = tm["step_time"][np.isfinite(tm["step_time"])]
    if len(st) < 50:
        return
    median = float(np.median(st))
    if median < d.t.min_step_s:
        return
    st = st[st <= max(d.t.stall_factor * median, d.t.stall_min_s)]
    p10, p90 = np.percentile(st, [10, 90])
    spread = float((p90 - p10) / median)
    if spread <= d.t.step_time_spread:
        return
    yield Finding(
        "throughput.uneven",
        INFO,
        "Uneven step times",
        f"Step times (stalls left out) range from {fmt_seconds(float(p10))} (p10) to "
        f"{fmt_seconds(float(p90))} (p90) around a median of {fmt_seconds(median)}: variable-length "
        "inputs, dynamic shapes, or competition for the CPU/GPU.",
        {"p10_s": float(p10), "p90_s": float(p90), "median_s": median, "spread": spread, "steps": len(st)},
    )
