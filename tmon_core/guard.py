"""Guards that act: skip, roll back or stop a run whose loss goes NaN/inf or diverges.

``TMonCallback(guard="rollback")`` (or ``"skip"``, ``"stop"``, or a :class:`Guard` for its options)
turns the live alerts' findings into actions, taken at a step boundary through the controller, so
each is an audited decision (``source: "guard"``) with its outcome in the store:

- ``skip``: a step whose loss or gradients are non-finite does not update the weights (its
  gradients are dropped before the optimizer runs), up to ``max_skips`` steps in a row; one more
  non-finite step in a row stops the run (skipping cannot get it out of a state that makes NaNs
  every step: choose ``rollback`` for a run that should recover by itself).
- ``rollback``: on a non-finite step (its update skipped too) or a divergence, restore the last
  good snapshot (model, optimizer and scheduler state) at the next step boundary and multiply the
  learning rate by ``lr_factor``; after ``max_retries`` rollbacks without a new good snapshot in
  between, stop with a critical alert.
- ``stop``: end the run cleanly at the next step boundary (status ``completed``, a ``stopped``
  event, a critical alert). The non-finite update is skipped, so the weights saved are finite.

Every action writes a ``guard`` event (data: action, trigger, step, attempt, lr_before, lr_after,
restored_step) and an alert of rule ``guard`` (warning for skip and rollback, critical for a stop);
the rollback, its learning-rate change and the stop are the controller's ``rollback``,
``param_change`` and ``stopped`` events with ``source: "guard"``.

Triggers (``on=``): ``nonfinite`` (the step's loss or gradient norm, checked by the adapter on the
training thread before the optimizer step: one device sync per step, only while a guard is on) and
``divergence``, which is the live alerts' own detector (``AlertEngine(rules=["divergence"])``, the
report's thresholds) fed on the recorder's writer thread at each flush: a divergence therefore
reaches the guard at a later step boundary (a flush interval or so after the points that show it),
and the guard rolls back to the newest snapshot taken before the divergence's onset step.

Snapshots: one every ``every`` steps, at a step boundary, when every step since the previous one
was finite (the first at the fit's first step). The adapter keeps them (``keep`` of them, the oldest
dropped): for torch in CPU memory up to ``max_memory_bytes`` a snapshot, else in a temporary
directory (``tmon_callbacks._guard_torch``; ``bench/guard_overhead.py`` measures the copies).
Under DDP every rank takes the same decision at the same step: a skip is decided from the gradients
after their all-reduce (the same on every rank); snapshots, rollbacks and stops are rank 0's
decisions and travel to every rank with the controller's (``DecisionLink``); each rank keeps and
restores its own snapshots, taken at the same steps.

How an adapter uses it (the calls, in order)::

    # at train start, on every rank (recorder and controller: None where the process has none)
    g = Guard.from_option(options.guard)            # None: no guard, nothing below
    run = g.begin(recorder, controller, lrs=lambda: [pg["lr"] for opt in opts for pg in opt.param_groups],
                  start_step=step)                  # rank 0 queues the first snapshot now
    # before each batch, with the controller's other decisions (``controller.due(step)`` or
    # ``DecisionLink.exchange``), dispatched by class (``tmon_callbacks._adapter.apply_decisions``):
    #   GuardSnapshot -> run.snapshot(d, step, snapshots)     (snapshots: the adapter's store)
    #   GuardRollback -> run.rollback(d, step, snapshots)     (restores; returns resolve()'s kwargs)
    #   SetParams (source "guard": the lr change after a rollback) and Stop: the adapter's own handlers
    # after backward, before the optimizer step (every rank):
    if run.check(step, finite):                     # finite: loss and grad norm, ONE device sync
        drop the gradients (optimizer.zero_grad(set_to_none=True)): the optimizer skips the update
    # after the step (rank 0; a no-op elsewhere): a divergence seen since, a snapshot due
    run.step_end(step)
    # optional, one process only: ``run.news`` says rank 0 queued something in this step; an adapter
    # whose next boundary comes late (HF: after logging, saving, evaluating) may apply
    # ``controller.due(step + 1)`` now and clear it (``run.news = False``)
    # at the end of the fit
    run.close()

A framework without a hook between backward and the update (Keras' ``fit``): check what it can see
(the batch's loss in ``on_train_batch_end``, after the update) and restore a snapshot on a
non-finite one; ``skip`` then cannot keep the update out, say so. ``tmon_callbacks._guard_torch``
is the torch implementation of all of this (``TorchGuard``, ``TorchSnapshots``).

``snapshots`` is any object with ``save(step)`` (keep the model's, optimizer's and scheduler's state
as they are now), ``restore(step)`` (put back the snapshot saved at ``step`` and forget newer ones)
and ``describe()`` (a JSON-able dict: where snapshots are kept, their size, the copy time).

>>> g = Guard("rollback", every=10)
>>> run = g.begin(lrs=lambda: [0.1])
>>> run.check(0, finite=True), run.check(1, finite=False)    # (nothing, skip step 1's update)
(False, True)
>>> Guard("skip", on=("divergence",))
Traceback (most recent call last):
...
ValueError: Guard('skip') acts on non-finite steps only: on=('divergence',) is for 'rollback' or 'stop'
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from . import events as ev
from .control.decisions import Change, Decision, SetParams, Stop

SKIP, ROLLBACK, STOP = "skip", "rollback", "stop"
MODES = (SKIP, ROLLBACK, STOP)
NONFINITE, DIVERGENCE = "nonfinite", "divergence"
TRIGGERS = (NONFINITE, DIVERGENCE)
#: the ``rule`` of the alerts a guard raises
RULE = "guard"
SOURCE = "guard"


@dataclass
class GuardSnapshot(Decision):
    """Keep a snapshot of the training state as it is at this step boundary (every rank)."""

    source: str = SOURCE
    quiet: bool = True  # a routine copy: no event (the run config says where snapshots are kept)


@dataclass
class GuardRollback(Decision):
    """Put back the snapshot taken at ``to_step`` (every rank); a ``SetParams`` with the new learning
    rates follows it in the same batch of decisions."""

    source: str = SOURCE
    to_step: int = 0
    trigger: str = NONFINITE
    fired_step: int = 0  # the step whose loss (or the divergence's detection) fired it
    attempt: int = 1
    lr_before: list = field(default_factory=list)
    lr_after: list = field(default_factory=list)


def _int(name: str, v, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"Guard {name} must be an int >= {low}, received {name}={v!r}")
    return v


class Guard:
    """What a guard does and when (see the module docstring).

    Args:
        mode: ``"skip"``, ``"rollback"`` or ``"stop"``.
        every: steps between snapshots (rollback).
        lr_factor: the learning rate after a rollback is the snapshot's times ``lr_factor`` per
            rollback to it (0.5, 0.25... for a second, third attempt), in (0, 1].
        max_retries: rollbacks without a new good snapshot in between before the guard stops the run.
        max_skips: non-finite steps in a row that ``skip`` skips; one more stops the run.
        on: the triggers, ``"nonfinite"`` and/or ``"divergence"`` (skip: ``"nonfinite"`` only).
            Default: both for rollback and stop, ``("nonfinite",)`` for skip.
        keep: snapshots kept (the newest); a divergence rolls back to the newest taken before its onset.
        max_memory_bytes: a snapshot larger than this goes to a temporary directory instead of CPU memory.
        snapshot_dir: where snapshots on disk go (default: a temporary directory, removed at the end).
    """

    def __init__(
        self,
        mode: str = ROLLBACK,
        *,
        every: int = 50,
        lr_factor: float = 0.5,
        max_retries: int = 3,
        max_skips: int = 5,
        on=None,
        keep: int = 2,
        max_memory_bytes: int = 2**30,
        snapshot_dir=None,
    ):
        if mode not in MODES:
            raise ValueError(f"Guard mode must be one of {', '.join(map(repr, MODES))}, received {mode!r}")
        self.mode = mode
        self.every = _int("every", every, 1)
        if isinstance(lr_factor, bool) or not isinstance(lr_factor, (int, float)) or not 0 < lr_factor <= 1:
            raise ValueError(f"Guard lr_factor must be a number in (0, 1], received lr_factor={lr_factor!r}")
        self.lr_factor = float(lr_factor)
        self.max_retries = _int("max_retries", max_retries, 1)
        self.max_skips = _int("max_skips", max_skips, 0)
        self.keep = _int("keep", keep, 1)
        self.max_memory_bytes = _int("max_memory_bytes", max_memory_bytes, 0)
        if on is None:
            on = (NONFINITE,) if mode == SKIP else TRIGGERS
        if isinstance(on, str):
            on = (on,)
        try:
            on = tuple(on)
        except TypeError:
            raise ValueError(f"Guard on must be a tuple of {TRIGGERS}, received on={on!r}") from None
        bad = [t for t in on if t not in TRIGGERS]
        if bad or not on:
            raise ValueError(
                f"Guard on must name one or more of {', '.join(map(repr, TRIGGERS))}, received on={on!r}"
            )
        if mode == SKIP and DIVERGENCE in on:
            raise ValueError(
                f"Guard('skip') acts on non-finite steps only: on={on!r} is for 'rollback' or 'stop'"
            )
        self.on = on
        if (
            snapshot_dir is not None
            and not isinstance(snapshot_dir, (str, bytes))
            and not hasattr(snapshot_dir, "__fspath__")
        ):
            raise ValueError(
                f"Guard snapshot_dir must be a path or None, received snapshot_dir={snapshot_dir!r}"
            )
        self.snapshot_dir = snapshot_dir

    @classmethod
    def from_option(cls, value) -> Guard | None:
        """The ``guard=`` option: None (no guard), a mode name or a ``Guard``."""
        if value is None or isinstance(value, Guard):
            return value
        if isinstance(value, str):
            if value not in MODES:
                raise ValueError(
                    f"guard must be None, one of {', '.join(map(repr, MODES))} or a tmon_core.Guard, "
                    f"received guard={value!r}"
                )
            return cls(value)
        raise ValueError(
            f"guard must be None, one of {', '.join(map(repr, MODES))} or a tmon_core.Guard, received guard={value!r}"
        )

    def describe(self) -> dict:
        """The settings, for the run config (``config["guard"]``)."""
        return {
            "mode": self.mode,
            "on": list(self.on),
            "every": self.every,
            "lr_factor": self.lr_factor,
            "max_retries": self.max_retries,
            "max_skips": self.max_skips,
            "keep": self.keep,
            "max_memory_bytes": self.max_memory_bytes,
        }

    def __repr__(self) -> str:
        d = self.describe()
        mode = d.pop("mode")
        return f"Guard({mode!r}, " + ", ".join(f"{k}={v!r}" for k, v in d.items()) + ")"

    def begin(self, recorder=None, controller=None, *, lrs=None, start_step: int = 0) -> GuardRun:
        """This guard over one fit (see the module docstring for the calls that follow)."""
        return GuardRun(self, recorder, controller, lrs=lrs, start_step=start_step)


class GuardRun:
    """One fit's guard on one process. It decides only where there is a controller (rank 0); every
    rank skips non-finite updates and applies the snapshots and rollbacks rank 0 decided."""

    def __init__(self, guard: Guard, recorder=None, controller=None, *, lrs=None, start_step: int = 0):
        self.guard = guard
        self.rec = recorder
        self.ctl = controller
        self.lrs = lrs or (lambda: [])
        self.skips_in_a_row = 0
        self.attempt = 0  # rollbacks since the last new good snapshot
        # rank 0 queued a decision since the adapter last cleared this: an adapter that can apply it
        # at once (one process, between two steps) does, instead of at the next step's start
        self.news = False
        self.actions: list[dict] = []  # what this guard did (the guard events' data), for tests and readers
        self.snapshots: list[tuple[int, list]] = []  # (step, lrs) of the snapshots kept, oldest first
        self._clean = True  # every step since ``_since`` was finite
        self._since = start_step  # the boundary the clean steps count from: the last snapshot or rollback
        self._pending = False  # a snapshot or rollback decided, not yet applied
        self._rolling_back = False  # a rollback decided, not yet applied
        self._stopping = False
        self._lock = threading.Lock()
        self._engine = None
        self._ignore_before = start_step
        self._diverged: dict | None = None
        self.snapshot_info: dict | None = None
        self._loss_keys: frozenset = frozenset()  # what the divergence detector is fed
        if self.ctl is not None:
            if DIVERGENCE in guard.on and recorder is not None:
                from .alerts.engine import LOSS_KEYS

                self._loss_keys = frozenset(LOSS_KEYS)
                self._engine = self._new_engine()
                recorder.on_flush(self._on_flush)
            self._decide(GuardSnapshot())

    # ------------------------------------------------------------------ training thread, every rank
    def check(self, step: int, finite: bool) -> bool:
        """Before the optimizer step of ``step``: True when its update must be skipped (the step's
        loss or gradients are not finite and the guard acts on that). Rank 0 also records and
        decides what follows."""
        if finite:
            self.skips_in_a_row = 0
            return False
        if NONFINITE not in self.guard.on:
            return False
        self._clean = False
        if self.ctl is None or self._stopping:
            return True
        mode = self.guard.mode
        if mode == SKIP:
            self.skips_in_a_row += 1
            if self.skips_in_a_row > self.guard.max_skips:
                self._stop(
                    step,
                    NONFINITE,
                    f"{self.skips_in_a_row} non-finite steps in a row (max_skips={self.guard.max_skips})",
                )
            else:
                self._record(
                    SKIP,
                    NONFINITE,
                    step,
                    "warning",
                    f"Guard skipped step {step}'s update: non-finite loss or gradients",
                    f"The loss or the gradients of step {step} were not finite; its update was skipped "
                    f"({self.skips_in_a_row} in a row, at most {self.guard.max_skips}).",
                    skips_in_a_row=self.skips_in_a_row,
                )
        elif mode == ROLLBACK:
            if not self._rolling_back:
                self._rollback(step, NONFINITE, onset=step)
        else:
            self._stop(step, NONFINITE, f"the loss or the gradients of step {step} were not finite")
        return True

    def step_end(self, step: int) -> None:
        """After step ``step`` (rank 0; nothing elsewhere): act on a divergence the writer thread
        saw since, or queue the next snapshot when ``every`` clean steps have passed."""
        if self.ctl is None or self._stopping or self._pending:
            return
        diverged = self._diverged
        if diverged is not None:
            self._diverged = None
            onset = diverged.get("step")
            onset = step if onset is None else int(onset)
            why = f"the loss diverged from step {onset}"
            if self.guard.mode == ROLLBACK:
                self._rollback(step, DIVERGENCE, onset=onset, evidence=diverged.get("evidence"))
            else:
                self._stop(step, DIVERGENCE, why, evidence=diverged.get("evidence"))
            return
        if self._clean and step + 1 - self._since >= self.guard.every:
            self._decide(GuardSnapshot())

    def close(self) -> None:
        """The fit ended: the writer thread's detector stops feeding this guard."""
        with self._lock:
            self._engine = None

    # ------------------------------------------------------------------ decision handlers, every rank
    def snapshot(self, d: GuardSnapshot, step: int, snapshots) -> None:
        """Apply a ``GuardSnapshot`` at the boundary before ``step``: ``snapshots.save(step)``."""
        self._pending = False
        try:
            snapshots.save(step)
        except BaseException:
            # (recorded as the decision's rejection) the next try waits ``every`` steps, not one
            self._since = step
            raise
        self.snapshots.append((step, list(self.lrs())))
        del self.snapshots[: -self.guard.keep]
        self._clean, self._since = True, step
        self.attempt = 0  # a new good state: the retries count from it
        if self.snapshot_info is None:
            self.snapshot_info = dict(snapshots.describe())
            if self.rec is not None:
                self.rec.update_config(guard={**self.guard.describe(), "snapshot": self.snapshot_info})
        return None  # quiet: no event

    def rollback(self, d: GuardRollback, step: int, snapshots) -> dict:
        """Apply a ``GuardRollback`` at the boundary before ``step``; returns ``Controller.resolve``'s
        keyword arguments (a ``rollback`` event with source "guard")."""
        self._pending = self._rolling_back = False
        snapshots.restore(d.to_step)
        self.snapshots = [s for s in self.snapshots if s[0] <= d.to_step]
        # the state restored is good, but a new snapshot waits for ``every`` clean steps from here: a
        # run that fails again sooner counts as a retry of the same rollback
        self._clean, self._since = True, step
        self.skips_in_a_row = 0
        with self._lock:  # the detector judges the run from here on; older points are the past
            self._ignore_before = step
            self._diverged = None
            if self._engine is not None:
                self._engine = self._new_engine()
        return {
            "event": ev.ROLLBACK,
            "old": {"step": step, "lr": d.lr_before},
            "new": {"restored_step": d.to_step, "lr": d.lr_after},
            "reason": f"guard: {d.trigger} at step {d.fired_step}, attempt {d.attempt}",
            "data": {"trigger": d.trigger, "attempt": d.attempt, "restored_step": d.to_step},
        }

    # ------------------------------------------------------------------ rank 0's decisions
    def _decide(self, decision: Decision) -> None:
        self._pending = self.news = True
        self.ctl.submit(decision)

    def _rollback(self, step: int, trigger: str, onset: int, evidence=None) -> None:
        if not self.snapshots:  # (the first snapshot is queued at the fit's start: only if it failed)
            self._stop(step, trigger, "there is no snapshot to roll back to")
            return
        if self.attempt >= self.guard.max_retries:
            self._stop(
                step,
                trigger,
                f"{self.attempt} rollbacks did not get past it (max_retries={self.guard.max_retries})",
                evidence=evidence,
            )
            return
        before = [s for s in self.snapshots if s[0] <= onset]
        to_step, snap_lrs = before[-1] if before else self.snapshots[0]
        self.attempt += 1
        self._rolling_back = True
        factor = self.guard.lr_factor**self.attempt
        lr_before = _floats(self.lrs())
        lr_after = [lr * factor for lr in _floats(snap_lrs)]
        self._decide(
            GuardRollback(
                to_step=to_step,
                trigger=trigger,
                fired_step=step,
                attempt=self.attempt,
                lr_before=lr_before,
                lr_after=lr_after,
            )
        )
        if lr_after and self.guard.lr_factor != 1:
            self.ctl.submit(
                SetParams(
                    source=SOURCE,
                    changes=[Change("lr", i, v) for i, v in enumerate(lr_after)],
                    mode="scale",
                    label=f"guard rollback {self.attempt}: the snapshot's lr x {factor:g}",
                )
            )
        what = "non-finite loss or gradients" if trigger == NONFINITE else f"divergence from step {onset}"
        self._record(
            ROLLBACK,
            trigger,
            step,
            "warning",
            f"Guard rolled back to step {to_step}: {what} at step {step}",
            f"{what.capitalize()} at step {step}: the guard restores the snapshot of step {to_step} "
            f"and sets lr {_fmt(lr_before)} -> {_fmt(lr_after)} (attempt {self.attempt} of "
            f"{self.guard.max_retries}).",
            attempt=self.attempt,
            lr_before=lr_before,
            lr_after=lr_after,
            restored_step=to_step,
            evidence=evidence,
        )

    def _stop(self, step: int, trigger: str, why: str, evidence=None) -> None:
        self._stopping = self.news = True
        self.ctl.submit(Stop(source=SOURCE, reason=f"guard: {why}"))
        gave_up = self.guard.mode != STOP
        self._record(
            STOP,
            trigger,
            step,
            "critical",
            f"Guard stopped the run at step {step}" + (" (gave up)" if gave_up else ""),
            f"The guard ({self.guard.mode}) stopped the run at step {step}: {why}.",
            attempt=self.attempt,
            evidence=evidence,
            gave_up=gave_up,
        )

    def _record(self, action, trigger, step, level, title, text, *, evidence=None, **extra) -> None:
        data = {
            "action": action,
            "trigger": trigger,
            "step": step,
            "attempt": extra.pop("attempt", None),
            "lr_before": extra.pop("lr_before", None),
            "lr_after": extra.pop("lr_after", None),
            "restored_step": extra.pop("restored_step", None),
            "mode": self.guard.mode,
            **extra,
        }
        if data["lr_before"] is None and action != ROLLBACK:
            data["lr_before"] = data["lr_after"] = _floats(self.lrs())
        self.actions.append(data)
        if self.rec is None:
            return
        self.rec.event(ev.GUARD, step=step, message=title, data=data)
        self.rec.alert(RULE, level, title, text, step=step, evidence={**data, "trigger_evidence": evidence})

    # ------------------------------------------------------------------ writer thread
    @staticmethod
    def _new_engine():
        from .alerts.engine import AlertEngine

        return AlertEngine(rules=[DIVERGENCE])  # (it reads the loss keys only: the others are not fed)

    def _on_flush(self, batch) -> None:
        """The writer thread's flush: the loss since the last rollback into the divergence detector."""
        if not batch.points:
            return
        with self._lock:
            engine = self._engine
            if engine is None or self._diverged is not None:
                return
            points = {}
            for key, (s, v, w) in batch.points.items():
                if key in self._loss_keys and len(s) and s[-1] >= self._ignore_before:
                    keep = s >= self._ignore_before
                    points[key] = (s[keep], v[keep], w[keep])
            if not points:
                return
            for alert in engine.observe(points):
                if alert["rule"] == DIVERGENCE:
                    self._diverged = alert


def _floats(values) -> list:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(math.nan)
    return out


def _fmt(lrs: list) -> str:
    if not lrs:
        return "?"
    return ", ".join(f"{v:.3g}" for v in lrs)


__all__ = [
    "DIVERGENCE",
    "Guard",
    "GuardRollback",
    "GuardRun",
    "GuardSnapshot",
    "MODES",
    "NONFINITE",
    "ROLLBACK",
    "RULE",
    "SKIP",
    "STOP",
    "TRIGGERS",
]
