"""What the controller hands an adapter (decisions, plain dataclasses) and the schedule items a
user writes (``At``). What happened lives in the store, what to do next here, and how a
framework does it in the adapters (``tmon_callbacks``): the decisions never touch an optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import events as ev
from .params import MODES, SCALE, Param


class At:
    """A scheduled parameter change: ``At(step=1000, lr=1e-4)``, ``At(epoch=3, weight_decay=0.0)``.

    ``ramp=N`` moves linearly from the value in effect to the target over N steps. ``mode`` is
    ``scale`` (default), ``pin`` or ``set`` (see ``tmon_core.control.params``).
    """

    def __init__(
        self,
        *,
        step: int | None = None,
        epoch: int | None = None,
        ramp: int = 0,
        mode: str = SCALE,
        **params: Any,
    ):
        if (step is None) == (epoch is None):
            raise ValueError(
                f"At needs exactly one of step= or epoch=, received step={step!r}, epoch={epoch!r}"
            )
        for label, v in (("step", step), ("epoch", epoch)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"At {label} must be a non-negative int, received {label}={v!r}")
        if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
            raise ValueError(f"At ramp must be a non-negative number of steps, received ramp={ramp!r}")
        if mode not in MODES:
            raise ValueError(f"At mode must be one of {', '.join(MODES)}, received mode={mode!r}")
        if not params:
            raise ValueError("At needs at least one parameter, e.g. At(step=1000, lr=1e-4)")
        self.step, self.epoch, self.ramp, self.mode, self.params = step, epoch, ramp, mode, dict(params)

    def __repr__(self) -> str:
        when = f"step={self.step}" if self.step is not None else f"epoch={self.epoch}"
        extra = (f", ramp={self.ramp}" if self.ramp else "") + (
            f", mode={self.mode!r}" if self.mode != SCALE else ""
        )
        return f"At({when}, {', '.join(f'{k}={v!r}' for k, v in self.params.items())}{extra})"

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "ramp": self.ramp,
            "mode": self.mode,
            "params": self.params,
        }


@dataclass
class Change:
    name: str  # base name: lr, weight_decay, ... or a custom Param's name
    group: int | None  # None: every param group
    value: Any
    custom: Param | None = None


@dataclass
class Decision:
    """Base of what an adapter is asked to do. ``source``: schedule, api, cli, widget, preset."""

    source: str
    request_id: int | None = None
    requested_by: str | None = None
    quiet: bool = False  # an intermediate step of a ramp or a pin: no event


@dataclass
class SetParams(Decision):
    changes: list[Change] = field(default_factory=list)
    mode: str = SCALE
    label: str | None = None  # the preset's or schedule item's description


@dataclass
class SaveCheckpoint(Decision):
    description: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Rollback(Decision):
    checkpoint_id: int | None = None
    path: str | None = None
    same_run: bool = True


@dataclass
class Stop(Decision):
    reason: str | None = None


#: the event a resolved decision writes when its adapter names none (SetParams: ``param_change``)
DECISION_EVENTS = {SaveCheckpoint: ev.SAVE_CHECKPOINT, Rollback: ev.ROLLBACK, Stop: ev.STOP}
