"""How the run ended, and whether tmon saw all of it.

* ``lifecycle.failed`` (critical): the exception that ended the run, at which step, with the memory then.
* ``lifecycle.lost`` (critical when the last host sample shows RAM at or above the critical
  threshold, the kernel's OOM killer being the likely cause; warning otherwise): the process
  stopped without ending the run.
* ``lifecycle.interrupted`` / ``lifecycle.running`` (info).
* ``lifecycle.store`` (warning when points were dropped, info when the store only paused):
  tmon's own store outages (``store_gap`` events, ``dropped_points``, tmon's log records).
"""

from __future__ import annotations

from ... import events as ev
from ..model import CRITICAL, INFO, WARNING, Finding
from . import fmt_bytes, fmt_seconds, pct


def check(d):
    info = d.info
    steps = d.steps_done
    total = info.get("total_steps")
    where = f"step {d.last_step}" if d.last_step is not None else "before its first step"
    progress = f" of {total}" if total else ""
    if d.status == ev.FAILED:
        err = d.failure or {}
        step = d.failed_step()
        first_line = (
            (err.get("message") or "").strip().splitlines()[0][:500]
            if (err.get("message") or "").strip()
            else ""
        )
        mem = d.memory_at(info.get("ended_at"))
        yield Finding(
            "lifecycle.failed",
            CRITICAL,
            f"The run failed at step {step}{progress}"
            if step is not None
            else "The run failed before its first step",
            f"{err.get('type', 'error')}: {first_line} (after {fmt_seconds(d.duration)}, {steps or 0} steps "
            "recorded).",
            {
                "type": err.get("type"),
                "message": (err.get("message") or "")[:2000],
                "traceback_tail": (err.get("traceback") or "")[-2000:],
                "step": step,
                "steps_recorded": steps,
                "total_steps": total,
                "memory": mem,
            },
            step=step,
            wall_time=info.get("ended_at"),
        )
    elif d.status == ev.LOST:
        yield from _lost(d, where, progress)
    elif d.status == ev.INTERRUPTED:
        err = d.failure or {}
        yield Finding(
            "lifecycle.interrupted",
            INFO,
            f"The run was interrupted at {where}{progress}",
            err.get("message") or "Stopped by the user (KeyboardInterrupt) or by the process exiting.",
            {"step": d.last_step, "total_steps": total},
            step=d.last_step,
            wall_time=info.get("ended_at"),
        )
    elif d.status == ev.RUNNING:
        yield Finding(
            "lifecycle.running",
            INFO,
            "The run is still running",
            f"This report covers what was recorded up to {where}{progress}.",
            {"step": d.last_step, "total_steps": total},
            step=d.last_step,
        )
    yield from _store(d)


def _lost(d, where, progress):
    info = d.info
    s = d.samples
    last = None if s.empty else s.iloc[-1]
    beat = info.get("heartbeat_at")
    evidence = {
        "last_heartbeat": beat,
        "step": d.last_step,
        "heartbeat_timeout": info.get("heartbeat_timeout"),
    }
    detail = (
        f"The process stopped reporting at {where}{progress} without ending the run (killed, crashed, or "
        "the machine went down); everything recorded until then is kept."
    )
    sev = WARNING
    if last is not None and last.ram_total and last.ram_used == last.ram_used:
        frac = float(last.ram_used) / float(last.ram_total)
        evidence.update(
            {
                "last_sample_time": float(last.wall_time),
                "ram_fraction": frac,
                "ram_used_bytes": float(last.ram_used),
                "ram_total_bytes": float(last.ram_total),
                "workers": int(last.children_count) if last.children_count == last.children_count else None,
            }
        )
        if frac >= d.t.memory_critical:
            sev = CRITICAL
            detail += (
                f" Host RAM was at {pct(frac)} ({fmt_bytes(last.ram_used)} of {fmt_bytes(last.ram_total)}) in "
                "the last sample: the kernel's out-of-memory killer most likely ended it (check `dmesg`)."
            )
    yield Finding(
        "lifecycle.lost",
        sev,
        f"The run was lost at {where}{progress}",
        detail,
        evidence,
        step=d.last_step,
        wall_time=beat,
    )


def _store(d):
    gaps = d.events_of(ev.STORE_GAP)
    dropped = int(d.info.get("dropped_points") or 0)
    tmon_logs = [e for e in d.log_entries if e["category"] == "tmon"]
    if gaps.empty and not dropped:
        return
    outage = 0.0
    for g in gaps.itertuples():
        data = g.data if isinstance(g.data, dict) else {}
        if isinstance(data.get("until"), (int, float)) and isinstance(data.get("since"), (int, float)):
            outage += data["until"] - data["since"]
    sev = WARNING if dropped else INFO
    detail = f"The store could not be written {len(gaps)} time{'s' * (len(gaps) != 1)} ({fmt_seconds(outage)} in all)"
    detail += (
        f"; {dropped} points could not be kept and are missing from this run."
        if dropped
        else "; tmon kept the data in memory and wrote it once the store was back: nothing is missing."
    )
    yield Finding(
        "lifecycle.store",
        sev,
        "Monitoring gaps: the store was unavailable"
        if not dropped
        else f"Monitoring gaps: {dropped} points were dropped",
        detail,
        {
            "gaps": len(gaps),
            "outage_s": outage,
            "dropped_points": dropped,
            "messages": [e["message"][:300] for e in tmon_logs[:5]],
        },
    )
