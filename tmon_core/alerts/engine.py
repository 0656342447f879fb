"""Live alerts over a run's recorded stream, with the report's own detectors fed incrementally.

``AlertEngine.observe`` takes what one flush of the recorder holds (new points by key, events,
hardware samples) and returns the alerts it raises; ``tick`` looks for a stall (no step for much
longer than the run's own step time, outside validation, evaluation and checkpoint saving); ``finish``
says how the run ended. Each condition alerts once (a memory level once per level, a stall once per
stall), so a run that stays NaN does not alert every flush. The thresholds are the report's
(``tmon_core.analysis.Thresholds``), so an alert and the report agree on what they saw.

>>> import numpy as np
>>> from tmon_core.alerts import AlertEngine
>>> engine = AlertEngine()
>>> steps = np.arange(100)
>>> loss = np.where(steps < 60, 1.0 / (1 + steps), np.nan)
>>> [(a["rule"], a["level"], a["step"]) for a in engine.observe({"loss": (steps, loss, steps * 0.1)})]
[('nonfinite', 'critical', 60)]
>>> engine.observe({"loss": (steps + 100, np.full(100, np.nan), steps * 0.1 + 10)})   # said once
[]
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import events as ev
from .. import keys as K
from ..analysis.detect import GradDetector
from ..analysis.detect.hardware import HOST_COLUMNS, GpuMemory, HostMemory
from ..analysis.detect.throughput import StepTimes
from ..analysis.model import Thresholds
from ..analysis.rules.stability import loss_detector
from .rules import Alert, UserRuleState

#: the loss keys the stability rules watch, first found first (the report's order)
LOSS_KEYS = (K.LOSS, "train_loss_step", "train_loss", "loss_step")
#: the default rules, by name (``rules=`` takes any of them; True means all)
DEFAULT_RULES = ("nonfinite", "divergence", "spikes", "memory", "stall", "lifecycle")
# phases whose time is not a stall: opened by the first event, closed by the second
_PHASES = ((ev.VALIDATION_START, ev.VALIDATION_END), (ev.EVALUATION_START, ev.EVALUATION_END))
SPIKES_TO_ALERT = 3  # recurring spikes, as the report's warning: one spike is not worth a message
STALL_MIN_STEPS = 20  # the run's step time is known after this many steps; before, nothing is a stall


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


class AlertEngine:
    """The live rules of one run. ``rules``: True (every default rule), False (none) or the names
    of the default rules to keep; ``custom``: ``Alert`` rules on any metric."""

    def __init__(
        self,
        rules=True,
        custom=(),
        thresholds: Thresholds | dict | None = None,
        *,
        stall_after_s: float = 60.0,
        clock=time.time,
    ) -> None:
        if rules is True:
            names = set(DEFAULT_RULES)
        elif rules is False or rules is None:
            names = set()
        else:
            names = set(rules)
            unknown = sorted(names - set(DEFAULT_RULES))
            if unknown:
                raise ValueError(
                    f"unknown alert rule(s) {unknown}; the rules are: {', '.join(DEFAULT_RULES)}"
                )
        custom = list(custom)
        for c in custom:
            if not isinstance(c, Alert):
                raise TypeError(f"custom alert rules must be tmon_core.alerts.Alert, received {c!r}")
        t = thresholds if isinstance(thresholds, Thresholds) else Thresholds(**(thresholds or {}))
        if (
            isinstance(stall_after_s, bool)
            or not isinstance(stall_after_s, (int, float))
            or not stall_after_s > 0
        ):
            raise ValueError(f"stall_after_s must be seconds > 0, received stall_after_s={stall_after_s!r}")
        self.t = t
        self.stall_after_s = float(stall_after_s)
        self.rules = names
        self.clock = clock
        self._loss_key: str | None = None
        self._loss = loss_detector(t)
        self._grad = GradDetector(t.grad_explode_factor, t.grad_vanish_factor)
        self._times = StepTimes(stall_factor=t.stall_factor, stall_min_s=t.stall_min_s)
        self._host = HostMemory(t.memory_warning, t.memory_critical)
        self._gpus: dict[tuple, GpuMemory] = {}
        self._custom = {c.key: [] for c in custom}
        for c in custom:
            self._custom[c.key].append(UserRuleState(c))
        self._said: set = set()  # conditions alerted already
        self._open_phases = 0
        self._last_step: int | None = None
        self._last_step_wall: float | None = None
        self._stalled = False

    # ------------------------------------------------------------------ one flush at a time
    def observe(self, points: dict | None = None, events=(), samples=(), gpu_samples=()) -> list[dict]:
        """Alerts raised by what a flush brought: ``points`` maps a key to (steps, values, wall
        times) arrays, ``events``/``samples``/``gpu_samples`` are the recorder's rows."""
        out: list[dict] = []
        points = points or {}
        for e in events:
            out += self._event(e)
        if self._loss_key is None:
            self._loss_key = next((k for k in LOSS_KEYS if k in points), None)
        if self._loss_key in points:
            out += self._loss_update(*points[self._loss_key])
        if K.GRAD_NORM in points:
            out += self._grad_update(*points[K.GRAD_NORM])
        if K.STEP_TIME in points:
            s, v, w = points[K.STEP_TIME]
            dt = points.get(K.DATA_TIME)
            data = None
            if dt is not None and len(dt[0]) == len(s) and np.array_equal(dt[0], s):
                data = dt[1]
            self._times.update(s, v, data, w)
        for key, states in self._custom.items():
            if key in points:
                for st in states:
                    out += st.update(*(np.asarray(a) for a in points[key]))
        newest = [(int(s[-1]), float(w[-1])) for s, _, w in points.values() if len(s)]
        if newest:
            step, wall = max(newest)
            if self._last_step is None or step > self._last_step:
                self._last_step, self._last_step_wall = step, wall
                if self._stalled:
                    self._stalled = False
                    self._said.discard("stall")
        out += self._memory(samples, gpu_samples)
        return out

    def tick(self, now: float | None = None) -> list[dict]:
        """A stall: no new step for ``stall_factor`` × the median step time and at least
        ``stall_after_s`` (60 s: a live alert wakes someone up, so a pause the report would list as a
        one-second stall is not worth it), outside validation and evaluation, once the run's step
        time is known."""
        if "stall" not in self.rules or self._stalled or self._open_phases or self._last_step_wall is None:
            return []
        if self._times.count < STALL_MIN_STEPS:
            return []
        median = self._times.median_step_s() or 0.0
        limit = max(self.t.stall_factor * median, self.t.stall_min_s, self.stall_after_s)
        now = self.clock() if now is None else now
        quiet = now - self._last_step_wall
        if quiet <= limit:
            return []
        self._stalled = True
        return self._say(
            "stall",
            "warning",
            f"No step for {_fmt_s(quiet)}",
            f"The last step, {self._last_step}, ended {_fmt_s(quiet)} ago; a step takes "
            f"{_fmt_s(median)} (median) and nothing else (validation, evaluation) is running. The run "
            "may hang: a dataloader worker, a collective operation waiting for another rank, I/O.",
            self._last_step,
            now,
            {"quiet_s": quiet, "median_step_s": median, "limit_s": limit},
        )

    def finish(self, status: str, error: dict | None = None, step: int | None = None) -> list[dict]:
        """The run ended with ``status`` (completed, failed, interrupted)."""
        if "lifecycle" not in self.rules:
            return []
        step = self._last_step if step is None else step
        if status == ev.COMPLETED:
            return self._say(
                "finished", "info", "The run finished", f"Completed at step {step}.", step, None, {}
            )
        if status == ev.FAILED:
            what = f"{error.get('type')}: {error.get('message', '')[:300]}" if error else "an error"
            return self._say(
                "failed",
                "critical",
                "The run failed",
                f"It stopped at step {step} with {what}.",
                step,
                None,
                {"error": error},
            )
        if status == ev.INTERRUPTED:
            return self._say(
                "interrupted",
                "warning",
                "The run was interrupted",
                f"Interrupted at step {step}.",
                step,
                None,
                {},
            )
        return []

    # ------------------------------------------------------------------ the rules
    def _say(
        self,
        rule: str,
        level: str,
        title: str,
        text: str,
        step,
        wall,
        evidence: dict,
        once: str | None = None,
    ) -> list[dict]:
        key = once or rule
        if key in self._said:
            return []
        self._said.add(key)
        return [
            {
                "rule": rule,
                "level": level,
                "title": title,
                "text": text,
                "step": step,
                "wall_time": self.clock() if wall is None else wall,
                "evidence": evidence,
            }
        ]

    def _loss_update(self, steps, values, walls) -> list[dict]:
        found = {d.name: d for d in self._loss.update(steps, values, walls)}
        key = self._loss_key
        out = []
        nf = found.get("nonfinite")
        if nf is not None and "nonfinite" in self.rules:
            e = nf.evidence
            last = e.get("last_finite_loss")
            out += self._say(
                "nonfinite",
                "critical",
                f"{e['kind']} {key} at step {nf.onset}",
                f"{key} became {e['kind']} at step {nf.onset}"
                + (f"; the last finite value was {last:.6g}" if last is not None else "")
                + ".",
                nf.onset,
                e.get("wall_time"),
                e,
            )
        dv = found.get("divergence")
        if dv is not None and "divergence" in self.rules:
            e = dv.evidence
            out += self._say(
                "divergence",
                "critical" if e["lost_all"] else "warning",
                f"{key} is diverging",
                f"{key} rose from its best {e['best_smoothed_loss']:.4g} (step {e['best_step']}) to "
                f"{e['final_smoothed_loss']:.4g} since step {dv.onset}.",
                dv.onset,
                None,
                e,
            )
        sp = found.get("spikes")
        if sp is not None and "spikes" in self.rules and sp.evidence["count"] >= SPIKES_TO_ALERT:
            e = sp.evidence
            out += self._say(
                "spikes",
                "warning",
                f"{e['count']} {key} spikes",
                f"{key} spiked {e['count']} times (steps {', '.join(map(str, e['steps'][:5]))}); the worst "
                f"at step {e['worst_step']} was {e['worst_vs_median']:.1f}x its recent level.",
                e["worst_step"],
                e.get("wall_time"),
                e,
            )
        return out

    def _grad_update(self, steps, values, walls) -> list[dict]:
        if "nonfinite" not in self.rules:
            return []
        self._grad.update(steps, values)
        nf = self._grad.nonfinite.result()
        if nf is None:
            return []
        return self._say(
            "nonfinite",
            "critical",
            f"{nf.evidence['kind']} gradient norm at step {nf.onset}",
            f"The gradient norm became {nf.evidence['kind']} at step {nf.onset}.",
            nf.onset,
            None,
            nf.evidence,
            once="nonfinite.grad_norm",
        )

    def _event(self, e: dict) -> list[dict]:
        typ = e.get("type")
        for start, end in _PHASES:
            if typ == start:
                self._open_phases += 1
            elif typ == end:
                self._open_phases = max(0, self._open_phases - 1)
                self._last_step_wall = max(self._last_step_wall or 0.0, float(e.get("wall_time") or 0.0))
        if typ == ev.CHECKPOINT and self._last_step_wall is not None:
            # saving took its time: the quiet before it is not a stall
            self._last_step_wall = max(self._last_step_wall, float(e.get("wall_time") or 0.0))
        if typ == ev.OOM and "memory" in self.rules:
            return self._say(
                "oom",
                "critical",
                "Out of memory",
                str(e.get("message") or "")[:500],
                e.get("step"),
                e.get("wall_time"),
                {},
            )
        return []

    def _memory(self, samples, gpu_samples) -> list[dict]:
        if "memory" not in self.rules or not (samples or gpu_samples):
            return []
        out = []
        if samples:
            cols = {c: np.array([_f(s.get(c)) for s in samples]) for c in HOST_COLUMNS}
            self._host.update(cols)
            lv = self._host.level()
            if lv is not None:
                e = lv.evidence
                out += self._say(
                    "memory.host",
                    e["level"],
                    f"Host RAM at {e['fraction']:.0%}",
                    f"Host RAM reached {e['fraction']:.0%} of {e['ram_total_bytes'] / 2**30:.1f} GiB "
                    f"(first at step {e['first_step']}).",
                    e["first_step"],
                    e["first_wall_time"],
                    e,
                    once=f"memory.host.{e['level']}",
                )
        groups: dict[tuple, list] = {}
        for g in gpu_samples:
            groups.setdefault((g.get("host"), g.get("node_rank"), g.get("gpu")), []).append(g)
        for key, rows in groups.items():
            mem = self._gpus.setdefault(key, GpuMemory(self.t.memory_warning, self.t.memory_critical))
            col = lambda name, rows=rows: np.array([_f(r.get(name)) for r in rows])  # noqa: E731
            mem.update(
                col("mem_used"),
                col("mem_total"),
                col("wall_time"),
                torch_max_allocated=col("torch_max_allocated"),
                util_percent=col("util_percent"),
                name=[r.get("name") for r in rows],
                step=col("step"),
            )
            lv = mem.level()
            if lv is not None:
                e = lv.evidence
                out += self._say(
                    "memory.gpu",
                    e["level"],
                    f"GPU {key[2]} memory at {e['fraction']:.0%}",
                    f"GPU {key[2]} memory reached {e['fraction']:.0%} of "
                    f"{(e['mem_total_bytes'] or 0) / 2**30:.1f} GiB.",
                    e["first_step"],
                    e["first_wall_time"],
                    e,
                    once=f"memory.gpu.{key}.{e['level']}",
                )
        return out


def _f(v) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan
