"""Alerts raised live: NaN/inf loss, memory above the warning threshold, an OOM, a failed step, a
rejected request, a store outage, a lost run. Each is raised once (per run and kind of cause)."""

from __future__ import annotations

import math
import time

from tmon_core.events import ALERT, EXCEPTION, INTERRUPT, OOM, REQUEST_REJECTED, STORE_GAP


def _memory_thresholds() -> tuple[float, float]:
    """The report's memory thresholds (``tmon_core.analysis.Thresholds``), so the widget and the report agree."""
    try:
        from tmon_core.analysis import Thresholds

        t = Thresholds()
        return float(t.memory_warning), float(t.memory_critical)
    except Exception:
        return 0.85, 0.95


#: host RAM and GPU memory, as a fraction of the total: drawn on the Hardware tab, alerted above warning
RAM_WARNING, RAM_CRITICAL = _memory_thresholds()
GPU_MEM_WARNING, GPU_MEM_CRITICAL = RAM_WARNING, RAM_CRITICAL
#: GPU temperature (°C)
GPU_TEMP_WARNING, GPU_TEMP_CRITICAL = 83.0, 90.0

#: event types that raise an alert, with its level
EVENT_ALERTS = {
    OOM: "critical",
    EXCEPTION: "critical",
    REQUEST_REJECTED: "warning",
    STORE_GAP: "warning",
    INTERRUPT: "warning",
}
#: what an alert of each of those event types says before the event's message
EVENT_LABELS = {
    OOM: "out of memory",
    EXCEPTION: "training failed",
    REQUEST_REJECTED: "request rejected",
    STORE_GAP: "store outage",
    INTERRUPT: "interrupted",
}


#: the alerts the Monitor raises itself that a recorded alert of these rules (``tmon_core.alerts``) says
#: already: where the run records its alerts, the header shows the rule's alert with its evidence, once
COVERED_BY = {
    "nan_loss": ("nonfinite",),
    "memory": ("memory.host", "memory.gpu"),
    OOM: ("oom",),
    EXCEPTION: ("failed",),
    INTERRUPT: ("interrupted",),
}
#: severity order of alert levels, most severe last
LEVEL_ORDER = ("info", "warning", "critical")


def severity(level: str | None) -> int:
    return LEVEL_ORDER.index(level) if level in LEVEL_ORDER else 1


def is_loss_key(key: str) -> bool:
    return "loss" in key.lower()


class Alerts:
    """The alerts of the runs a Monitor shows, oldest first."""

    def __init__(self):
        self.items: list[dict] = []
        self._seen: set = set()
        self._seen_events: set = set()

    def add(
        self,
        run_id: str,
        kind: str,
        message: str,
        *,
        level: str = "warning",
        step=None,
        dedupe=None,
        title: str | None = None,
        at: float | None = None,
        recorded: bool = False,
    ) -> bool:
        key = (run_id, kind, dedupe if dedupe is not None else message)
        if key in self._seen:
            return False
        self._seen.add(key)
        self.items.append(
            {
                "run_id": run_id,
                "kind": kind,
                "level": level,
                "title": title,
                "message": message,
                "step": step,
                "time": time.time() if at is None else at,
                "recorded": recorded,
            }
        )
        return True

    def from_recorded(self, run_id: str, events) -> bool:
        """The alerts the run recorded (its live rules, ``tmon watch``): the ``alert`` rows of a
        ``Run.events()`` frame (what ``Run.alerts()`` reads), each once. True when one was new."""
        if events is None or not len(events):
            return False
        new = False
        for row in events[events.type == ALERT].itertuples(index=False):
            d = row.data if isinstance(row.data, dict) else {}
            step = None if row.step is None or str(row.step) == "<NA>" else int(row.step)
            text = row.message if isinstance(row.message, str) else ""
            rule = str(d.get("rule") or "alert")
            title = d.get("title") if isinstance(d.get("title"), str) and d.get("title") else rule
            new |= self.add(
                run_id,
                rule,
                text or title,
                level=d["level"] if d.get("level") in LEVEL_ORDER else "warning",
                step=step,
                dedupe=("uid", d.get("uid") or (row.wall_time, text)),
                title=title,
                at=float(row.wall_time),
                recorded=True,
            )
        return new

    def shown(self, run_id: str) -> list[dict]:
        """The run's alerts as the header lists them, oldest first: an alert the Monitor raised itself
        is left out where the run recorded the same finding (its rule says it with the evidence)."""
        mine = self.for_run(run_id)
        rules = {a["kind"] for a in mine if a["recorded"]}
        return [
            a for a in mine if a["recorded"] or not any(r in rules for r in COVERED_BY.get(a["kind"], ()))
        ]

    @staticmethod
    def headline(items: list[dict]) -> dict | None:
        """The alert a person should see first: the most severe, the latest of those."""
        if not items:
            return None
        return max(enumerate(items), key=lambda ia: (severity(ia[1]["level"]), ia[1]["time"], ia[0]))[1]

    def nonfinite(self, run_id: str, key: str, step, value) -> None:
        if is_loss_key(key):
            what = "NaN" if isinstance(value, float) and math.isnan(value) else "inf"
            self.add(
                run_id, "nan_loss", f"{key} is {what} at step {step}", level="critical", step=step, dedupe=key
            )

    def from_events(self, run_id: str, events) -> None:
        """Alerts for the run's events (a DataFrame from ``Run.events()``), each event once."""
        if events is None or not len(events):
            return
        for row in events.itertuples(index=False):
            level = EVENT_ALERTS.get(row.type)
            if level is None:
                continue
            ident = (run_id, row.type, row.wall_time, row.message)
            if ident in self._seen_events:
                continue
            self._seen_events.add(ident)
            step = None if row.step is None or str(row.step) == "<NA>" else int(row.step)
            msg = row.message if isinstance(row.message, str) and row.message else row.type
            label = EVENT_LABELS[row.type]
            self.add(run_id, row.type, f"{label}: {msg}"[:300], level=level, step=step, dedupe=ident)

    def from_sample(self, run_id: str, host: dict | None, gpus: list[dict]) -> None:
        """Alerts for the latest hardware sample of a run (host dict, list of per-GPU dicts)."""
        if host:
            used, total = host.get("ram_used"), host.get("ram_total")
            if _num(used) and _num(total) and total > 0 and used / total >= RAM_WARNING:
                self.add(
                    run_id,
                    "memory",
                    f"host RAM at {100 * used / total:.0f}% (warning at {100 * RAM_WARNING:.0f}%)",
                    dedupe="ram",
                )
        for g in gpus:
            used, total = g.get("mem_used"), g.get("mem_total")
            if _num(used) and _num(total) and total > 0 and used / total >= GPU_MEM_WARNING:
                self.add(
                    run_id,
                    "memory",
                    f"GPU {g.get('gpu')} memory at {100 * used / total:.0f}% "
                    f"(warning at {100 * GPU_MEM_WARNING:.0f}%)",
                    dedupe=f"gpu{g.get('gpu')}",
                )
            temp = g.get("temperature_c")
            if _num(temp) and temp >= GPU_TEMP_WARNING:
                self.add(
                    run_id, "temperature", f"GPU {g.get('gpu')} at {temp:.0f} °C", dedupe=f"t{g.get('gpu')}"
                )

    def for_run(self, run_id: str) -> list[dict]:
        return [a for a in self.items if a["run_id"] == run_id]


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
