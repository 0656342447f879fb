"""Memory: how close the run came to running out, and what to change when it did.

Rules and thresholds (``Thresholds``):

* ``memory.oom`` — an out-of-memory error (an ``oom`` event, the run's error, a log line). Critical
  when it ended the run, warning when the run went on (e.g. HF ``auto_find_batch_size``). Advice:
  the batch size that fits (below), gradient accumulation that keeps the effective batch,
  activation checkpointing, mixed precision.
* ``memory.gpu`` — peak GPU memory (NVML, per GPU) >= ``memory_warning`` (85 %) warning,
  >= ``memory_critical`` (95 %) critical; info when only the allocator's cache is that high
  (torch's own peak allocation stays below the warning level). Same advice as an OOM.
* ``memory.host`` — peak host RAM >= 85 % / 95 % of the machine's. Advice: fewer dataloader
  workers, with the memory that frees.
* ``memory.swap`` — swap grew by >= ``swap_growth_bytes`` (256 MiB) during the run (warning).
* ``memory.workers`` — dataloader workers hold most of the training's RAM (info, with their share;
  advice only under memory pressure, above).
* ``memory.headroom`` — peak GPU memory < ``memory_headroom`` (50 %) in a run that did not run out
  (info): a larger batch size (estimated), or activation checkpointing switched off for speed.

The batch size that fits: memory ≈ fixed + per_sample × batch, where ``fixed`` is the CUDA context
(~0.5 GiB) plus weights, gradients and optimizer state (from the parameter count, dtype and
optimizer) and ``per_sample`` comes from the memory seen at the run's batch size (for an OOM, the
memory in use plus the allocation that failed, read from PyTorch's message, or the samples). The
estimate aims at ``memory_target`` (80 %) of capacity and prefers a divisor of the effective batch
so that gradient accumulation keeps it exactly.
"""

from __future__ import annotations

import math
import re

from ... import events as ev
from ..model import CRITICAL, INFO, WARNING, Finding
from . import fmt_bytes, pct, recommend

CONTEXT_BYTES = 0.5 * 2**30  # CUDA context and allocator slack: there before any tensor
_UNITS = {
    "B": 1,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "float8_e4m3fn": 1}
# GPUs that have tensor cores but no bf16 (Volta, Turing): mixed precision there means fp16
_NO_BF16 = re.compile(r"V100|T4\b|Titan V|RTX 20\d\d|Quadro RTX|GTX 16", re.I)


def _bytes(number: str, unit: str) -> float:
    return float(number) * _UNITS.get(unit.upper(), 1)


def parse_oom_message(message: str) -> dict:
    """Numbers in PyTorch's CUDA OOM message: tried (the allocation that failed), capacity, in_use, free."""
    out = {}
    for key, pattern in (
        ("tried", r"Tried to allocate ([\d.]+) ?([KMGT]i?B|B)"),
        ("capacity", r"total capacity of ([\d.]+) ?([KMGT]i?B|B)"),
        ("in_use", r"this process has ([\d.]+) ?([KMGT]i?B|B) memory in use"),
        ("free", r"([\d.]+) ?([KMGT]i?B|B) is free"),
    ):
        m = re.search(pattern, message or "")
        if m:
            out[key] = _bytes(m.group(1), m.group(2))
    m = re.search(r"GPU (\d+)", message or "")
    if m:
        out["gpu"] = int(m.group(1))
    return out


def fixed_bytes(d) -> float:
    """Memory that does not grow with the batch: weights, gradients, optimizer state (+ CUDA context)."""
    n = d.num_parameters
    if not n:
        return CONTEXT_BYTES
    dtypes = d.config.get("param_dtypes") or ["float32"]
    pbytes = max((_DTYPE_BYTES.get(str(t), 4) for t in dtypes), default=4)
    opt = (d.terms.optimizer_class() or "").lower()
    if "lion" in opt:
        state = 4  # one fp32 moment
    elif "adam" in opt or "lamb" in opt:
        state = 8  # two fp32 moments
    elif "sgd" in opt:
        state = 4 if d.terms.optimizer_value("momentum") else 0
    else:
        state = 8
    return CONTEXT_BYTES + n * (2 * pbytes + state)


def round_batch(n: float) -> int:
    """A batch size at most ``n``: a multiple of 8 from 16 up, a power of two below."""
    n = int(math.floor(n))
    if n >= 16:
        return n - n % 8
    return 2 ** int(math.log2(n)) if n >= 1 else 0


def fitting_batch(batch: int, used: float, capacity: float, fixed: float, target: float) -> int | None:
    """The largest batch whose estimated memory stays under ``target`` × capacity."""
    if not batch or not capacity or used is None or used <= 0:
        return None
    if fixed >= used:  # the parameter estimate overshoots (sharding, offload): assume it all scales
        fixed = 0.0
    per_sample = (used - fixed) / batch
    if per_sample <= 0:
        return None
    return int(math.floor((target * capacity - fixed) / per_sample))


def smaller_batch(effective: int, fits: int) -> int:
    """The batch to use when ``fits`` is the most that fits: a divisor of the effective batch when one is
    close enough (gradient accumulation then keeps the effective batch exactly)."""
    fits = max(1, fits)
    divisors = [k for k in range(1, min(fits, effective) + 1) if effective % k == 0]
    best = divisors[-1] if divisors else 1
    return best if best * 2 > fits or best >= 8 else max(1, round_batch(fits))


def _target_precision(d) -> str:
    names = [p["name"] or "" for p in d.gpu_peaks]
    return "16-mixed" if names and all(_NO_BF16.search(n) for n in names) else "bf16-mixed"


def _checkpointing_on(d) -> bool:
    return bool(d.config.get("gradient_checkpointing") or d.config.get("activation_checkpointing"))


def _relief(d, rule, sev, *, batch_to: int | None, evidence: dict, why: str):
    """The advice for memory that ran out (or nearly): batch size + accumulation, checkpointing, precision."""
    t = d.terms
    batch, acc = d.batch_size, d.accumulation
    if batch_to is not None and batch and batch_to < batch:
        effective = batch * acc
        new_acc = math.ceil(effective / batch_to)
        yield recommend(
            rule,
            sev,
            f"Batch size {batch_to}",
            t.batch_size(),
            batch_to,
            f"{why}; estimated to fit below {pct(d.t.memory_target)} of memory",
            evidence={**evidence, "effective_batch": effective},
            priority=10,
            action=f"Set {t.batch_size().code(batch_to)} (now {batch}) and "
            f"{t.accumulation().code(new_acc)} (now {acc})",
        )
        if new_acc != acc:
            yield recommend(
                rule,
                sev,
                f"Gradient accumulation {new_acc}",
                t.accumulation(),
                new_acc,
                f"keeps the effective batch at {batch_to * new_acc} (was {effective}) with batch size "
                f"{batch_to}, so the optimization behaves as before",
                evidence=evidence,
                priority=11,
            )
    if not _checkpointing_on(d):
        yield recommend(
            rule,
            sev,
            "Activation checkpointing",
            t.checkpointing(),
            True,
            "activations are recomputed in the backward pass instead of stored: typically a large cut "
            "in activation memory for ~20-30 % more compute per step",
            evidence=evidence,
            priority=20,
            current=t.checkpointing().current if d.framework == "hf" else None,
            value_for_code=True if d.framework != "keras" else "full",
        )
    if d.full_precision:
        target = _target_precision(d)
        value = t.precision_value(target)
        yield recommend(
            rule,
            sev,
            f"Mixed precision ({'bf16' if target.startswith('bf16') else 'fp16'})",
            t.precision(target),
            value,
            "activations in 16 bits take half the memory of fp32 (and tensor cores run faster)",
            evidence={**evidence, "precision": d.precision},
            priority=30,
        )


# ---------------------------------------------------------------------------- rules
def check(d):
    yield from _oom(d)
    yield from _gpu(d)
    yield from _host(d)
    yield from _headroom(d)


def _oom(d):
    ooms = d.ooms
    if not ooms:
        return
    first = ooms[0]
    failed_by_oom = d.status in (ev.FAILED, ev.LOST) and any(e["source"] == "exception" for e in ooms)
    sev = CRITICAL if failed_by_oom or d.status == ev.FAILED else WARNING
    parsed: dict = {}
    for e in ooms:
        parsed = parse_oom_message(e["message"]) or parsed
        if parsed.get("tried"):
            break
    mem = first.get("memory") or {}
    text = " ".join(e["message"] for e in ooms)
    if re.search(r"\bMemoryError\b|Cannot allocate memory|DefaultCPUAllocator", text) and not parsed:
        device = "host"
    elif parsed or re.search(r"cuda|gpu|device", text, re.I) or d.gpu_peaks:
        device = "GPU"
    else:
        device = "host"
    capacity = parsed.get("capacity")
    used = None
    if parsed.get("in_use") is not None:
        used = parsed["in_use"] + parsed.get("tried", 0.0)
    if device == "GPU" and (capacity is None or used is None):
        g = d.gpu_peak
        if g is not None:
            capacity = capacity or g["mem_total_bytes"]
            used = used or (g["peak_mem_bytes"] or 0) + parsed.get("tried", 0.0)
    batch = d.batch_size
    fits = None
    basis = "halving"
    if batch and capacity and used:
        est = fitting_batch(batch, used, capacity, fixed_bytes(d), d.t.memory_target)
        if est is not None and est >= 1:
            fits, basis = min(est, batch - 1), "estimate"
    if fits is None and batch and batch > 1:
        fits = batch // 2
    batch_to = smaller_batch(batch * d.accumulation, fits) if fits and batch else None
    if batch_to is not None and batch and batch_to >= batch:
        batch_to = max(1, batch // 2)
    evidence = {
        "device": device,
        "count": sum(e["count"] for e in ooms),
        "message": first["message"][:1000],
        "step": first["step"],
        "wall_time": first["wall_time"],
        "batch_size": batch,
        "accumulation": d.accumulation,
        "needed_bytes": used,
        "capacity_bytes": capacity,
        "tried_bytes": parsed.get("tried"),
        "estimate": basis,
        "memory": mem or None,
    }
    recovered = d.status == ev.COMPLETED
    where = f"at step {first['step']}" if first["step"] is not None else "before the first step"
    detail = f"{device} out of memory {where}: {first['message'].strip().splitlines()[0][:300]}"
    if used and capacity:
        detail += f" — about {fmt_bytes(used)} needed of {fmt_bytes(capacity)}"
    if batch:
        detail += f"; batch size {batch}" + (
            f" × accumulation {d.accumulation}" if d.accumulation > 1 else ""
        )
    if recovered:
        detail += ". The run went on and completed."
    yield Finding(
        "memory.oom",
        sev,
        f"Out of memory ({device}) {where}",
        detail + ".",
        evidence,
        step=first["step"],
        wall_time=first["wall_time"],
    )
    hf_found = d.config.get("train_batch_size")
    if recovered and d.framework == "hf" and isinstance(hf_found, int) and batch and hf_found < batch:
        batch_to = hf_found  # auto_find_batch_size settled on this one: start there next time
    why = (
        f"the memory recorded at batch size {batch} puts the batch that fits at about {fits}"
        if basis == "estimate"
        else "no memory figures of the device that ran out: halving is the first step"
    )
    yield from _relief(d, "memory.oom", sev, batch_to=batch_to, evidence=evidence, why=why)


def _gpu(d):
    g = d.gpu_peak
    if g is None or d.ooms or g["samples"] < d.t.min_samples or g["peak_fraction"] is None:
        return
    frac = g["peak_fraction"]
    t = d.t
    if frac < t.memory_warning:
        return
    sev = CRITICAL if frac >= t.memory_critical else WARNING
    alloc = g["torch_peak_allocated_bytes"]
    total = g["mem_total_bytes"]
    alloc_frac = alloc / total if alloc and total else None
    evidence = {
        "gpu": g["gpu"],
        "name": g["name"],
        "peak_mem_bytes": g["peak_mem_bytes"],
        "mem_total_bytes": total,
        "peak_fraction": frac,
        "torch_peak_allocated_bytes": alloc,
        "peak_at": g["peak_at"],
    }
    detail = (
        f"GPU {g['gpu']} ({g['name'] or 'unknown'}) memory peaked at {fmt_bytes(g['peak_mem_bytes'])} of "
        f"{fmt_bytes(total)} ({pct(frac)})"
    )
    if alloc_frac is not None and alloc_frac < t.memory_warning:
        yield Finding(
            "memory.gpu",
            INFO,
            f"GPU memory {pct(frac)} full, mostly allocator cache",
            detail + f"; PyTorch's tensors peaked at {fmt_bytes(alloc)} ({pct(alloc_frac)}): the rest is "
            "its caching allocator holding freed blocks, available to the run.",
            evidence,
        )
        return
    yield Finding(
        "memory.gpu",
        sev,
        f"GPU memory at {pct(frac)} of capacity",
        detail + ": one larger batch or longer sequence away from running out.",
        evidence,
        wall_time=g["peak_at"],
    )
    batch_to = None
    if d.batch_size and d.batch_size > 1 and frac >= t.memory_target:
        est = fitting_batch(d.batch_size, g["peak_mem_bytes"], total, fixed_bytes(d), t.memory_target)
        if est is not None and 1 <= est < d.batch_size:
            batch_to = smaller_batch(d.batch_size * d.accumulation, est)
    yield from _relief(
        d,
        "memory.gpu",
        sev,
        batch_to=batch_to,
        evidence=evidence,
        why=f"memory peaked at {pct(frac)} with batch size {d.batch_size}",
    )


def _host(d):
    h = d.host_peak
    if h is None or h["samples"] < d.t.min_samples:
        return
    t = d.t
    frac = h["fraction"]
    swap_growth = None
    if h["swap_peak_bytes"] is not None and h["swap_start_bytes"] is not None:
        swap_growth = h["swap_peak_bytes"] - h["swap_start_bytes"]
    # the workers as they were at their largest (the RAM peak may fall between epochs, with none alive)
    workers = h["max_workers"] or 0
    per_worker = h["per_worker_rss_bytes"]
    workers_rss = h["peak_workers_rss_bytes"] or 0
    training = (h["peak_proc_rss_bytes"] or 0) + workers_rss
    evidence = {**h, "swap_growth_bytes": swap_growth}
    pressure = None
    if frac >= t.memory_warning:
        pressure = CRITICAL if frac >= t.memory_critical else WARNING
        share = f"; this training used {fmt_bytes(training)}" if training else ""
        if workers:
            share += f" (its {workers} dataloader workers {fmt_bytes(workers_rss)})"
        yield Finding(
            "memory.host",
            pressure,
            f"Host RAM at {pct(frac)}",
            f"Host RAM peaked at {fmt_bytes(h['ram_used_bytes'])} of {fmt_bytes(h['ram_total_bytes'])} "
            f"({pct(frac)}){' at step ' + str(h['step']) if h['step'] is not None else ''}{share}.",
            evidence,
            step=h["step"],
            wall_time=h["wall_time"],
        )
    if swap_growth is not None and swap_growth >= t.swap_growth_bytes:
        pressure = pressure or WARNING
        yield Finding(
            "memory.swap",
            WARNING,
            f"The host swapped {fmt_bytes(swap_growth)} during the run",
            f"Swap use grew from {fmt_bytes(h['swap_start_bytes'])} to {fmt_bytes(h['swap_peak_bytes'])}: "
            "RAM ran short and pages went to disk, which stalls whatever touches them.",
            evidence,
        )
    if workers and training and workers_rss / training >= 0.5:
        yield Finding(
            "memory.workers",
            INFO,
            f"Dataloader workers hold {pct(workers_rss / training)} of the training's RAM",
            f"{workers} workers, about {fmt_bytes(per_worker)} RSS each (RSS counts pages a worker shares "
            "with the main process once per worker, so the real figure can be lower).",
            evidence,
        )
    if pressure and workers and per_worker and d.terms.num_workers().path:
        need = h["ram_used_bytes"] - t.memory_target * h["ram_total_bytes"]
        if swap_growth and swap_growth >= t.swap_growth_bytes:
            need = max(need, swap_growth)
        drop = min(workers, max(1, math.ceil(need / per_worker)))
        new = workers - drop
        saved = drop * per_worker
        yield recommend(
            "memory.host",
            pressure,
            f"{new} dataloader worker{'s' * (new != 1)}",
            d.terms.num_workers(),
            new,
            f"frees up to {fmt_bytes(saved)} of host RAM (~{fmt_bytes(per_worker)} per worker; shared "
            "pages are counted per worker, so the real saving can be smaller); fewer workers may "
            "slow data loading",
            evidence={
                "workers": workers,
                "per_worker_rss_bytes": per_worker,
                "ram_fraction": frac,
                "swap_growth_bytes": swap_growth,
            },
            current=workers,
            priority=10,
        )


def _headroom(d):
    if d.ooms or d.status in (ev.FAILED, ev.LOST) or not d.gpu_peaks:
        return
    peaks = [p for p in d.gpu_peaks if p["peak_fraction"] is not None]
    if not peaks or min(p["samples"] for p in peaks) < d.t.min_samples:
        return
    g = max(peaks, key=lambda p: p["peak_fraction"])
    frac = g["peak_fraction"]
    if frac >= d.t.memory_headroom:
        return
    total = g["mem_total_bytes"]
    evidence = {
        "gpu": g["gpu"],
        "name": g["name"],
        "peak_mem_bytes": g["peak_mem_bytes"],
        "mem_total_bytes": total,
        "peak_fraction": frac,
        "batch_size": d.batch_size,
    }
    yield Finding(
        "memory.headroom",
        INFO,
        f"GPU memory peaked at {pct(frac)}",
        f"GPU {g['gpu']} used at most {fmt_bytes(g['peak_mem_bytes'])} of {fmt_bytes(total)}: there is "
        "room for more work per step.",
        evidence,
        wall_time=g["peak_at"],
    )
    t = d.terms
    if _checkpointing_on(d) and t.checkpointing().path:
        yield recommend(
            "memory.headroom",
            INFO,
            "Switch activation checkpointing off",
            t.checkpointing(),
            False,
            f"steps skip recomputing activations (typically 20-30 % faster); memory was at {pct(frac)}, "
            "so the stored activations should fit — check the peak on the next run",
            evidence=evidence,
            priority=20,
        )
        return
    batch = d.batch_size
    if not batch:
        return
    est = fitting_batch(batch, g["peak_mem_bytes"], total, fixed_bytes(d), d.t.memory_target)
    if est is None:
        return
    bigger = min(round_batch(est), 8 * batch)
    if bigger < 1.5 * batch:
        return
    yield recommend(
        "memory.headroom",
        INFO,
        f"Batch size {bigger}",
        t.batch_size(),
        bigger,
        f"estimated to use about {pct(d.t.memory_target)} of GPU memory (now {pct(frac)}): more samples "
        "per step, usually higher throughput; scale the learning rate with it (or keep the effective "
        "batch by lowering gradient accumulation)",
        evidence={**evidence, "estimated_fit": est},
        current=batch,
        priority=30,
    )
