"""Steerable parameters: the built-in optimizer hyperparameters and user-defined knobs.

Names: ``lr``, ``weight_decay``, ``momentum`` (SGD momentum; for Adam-family optimizers it
means beta1), ``betas`` (a pair), ``eps``. ``NAME@G`` targets param group ``G`` only;
without it a change applies to every group (``lr`` scales each group by the same factor
in ``scale`` mode, so their ratios are kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: modes of a parameter change; see ``tmon_callbacks._torch.apply_param``
SCALE = "scale"  # rescale the scheduler's base so the schedule continues from the new level
PIN = "pin"  # hold the value: re-applied at every step, whatever a scheduler does
SET = "set"  # write the value once; a scheduler may move it afterwards
MODES = (SCALE, PIN, SET)


@dataclass(frozen=True)
class Bounds:
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def check(self, v: float) -> str | None:
        lo_bad = v <= self.low if self.low_open else v < self.low
        hi_bad = v >= self.high if self.high_open else v > self.high
        if lo_bad or hi_bad:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"must be in {left}{self.low:g}, {self.high:g}{right}"
        return None


BUILTIN: dict[str, Bounds] = {
    "lr": Bounds(0.0, 10.0, low_open=True),
    "weight_decay": Bounds(0.0, 1.0, high_open=True),
    "momentum": Bounds(0.0, 1.0, high_open=True),
    "betas": Bounds(0.0, 1.0, high_open=True),
    "eps": Bounds(0.0, math.inf, low_open=True),
}


@dataclass
class Param:
    """A user-defined steerable knob.

    >>> Param(get=lambda: model.dropout.p, set=lambda v: setattr(model.dropout, "p", v), bounds=(0.0, 0.9))
    """

    get: Callable[[], Any]
    set: Callable[[Any], None]
    bounds: tuple[float, float] | None = None
    type: type = float

    def __post_init__(self) -> None:
        if not callable(self.get) or not callable(self.set):
            raise ValueError(
                f"Param needs callables get= and set=, received get={self.get!r}, set={self.set!r}"
            )
        if self.bounds is not None and (len(self.bounds) != 2 or not self.bounds[0] <= self.bounds[1]):
            raise ValueError(
                f"Param bounds must be (low, high) with low <= high, received bounds={self.bounds!r}"
            )


def split_name(name: str) -> tuple[str, int | None]:
    """``"lr@1"`` -> ``("lr", 1)``; ``"lr"`` -> ``("lr", None)``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"parameter name must be a non-empty string, received {name!r}")
    base, sep, group = name.partition("@")
    if not sep:
        return name, None
    if not group.isdigit():
        raise ValueError(f"parameter {name!r}: the group after '@' must be a param group index like 'lr@1'")
    return base, int(group)


def check_value(name: str, value: Any, custom: dict[str, Param]) -> tuple[Any, str | None]:
    """Validate ``value`` for parameter ``name``: (normalised value, None) or (value, reason)."""
    base, _ = split_name(name)
    if base in custom:
        p = custom[base]
        if p.type in (float, int):
            ok, reason = _number(value)
            if reason:
                return value, reason
            value = p.type(ok)
            if p.bounds is not None and not p.bounds[0] <= value <= p.bounds[1]:
                return (
                    value,
                    f"{value!r} is out of bounds: {base} must be in [{p.bounds[0]:g}, {p.bounds[1]:g}]",
                )
            return value, None
        if not isinstance(value, p.type):
            return value, f"{base} takes a {p.type.__name__}, received {type(value).__name__} {value!r}"
        return value, None
    if base not in BUILTIN:
        known = ", ".join(sorted(set(BUILTIN) | set(custom)))
        return value, f"unknown parameter {base!r}; steerable parameters: {known}"
    bounds = BUILTIN[base]
    if base == "betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return value, f"betas takes a pair (beta1, beta2), received {value!r}"
        out = []
        for v in value:
            num, reason = _number(v)
            if reason:
                return value, f"betas: {reason}"
            if (why := bounds.check(num)) is not None:
                return value, f"betas {num!r} is out of bounds: each beta {why}"
            out.append(num)
        return tuple(out), None
    num, reason = _number(value)
    if reason:
        return value, f"{base}: {reason}"
    if (why := bounds.check(num)) is not None:
        return num, f"{base}={num!r} is out of bounds: {base} {why}"
    return num, None


def _number(v: Any) -> tuple[float, str | None]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v, f"a number is needed, received {type(v).__name__} {v!r}"
    v = float(v)
    if not math.isfinite(v):
        return v, f"{v!r} is not a finite number"
    return v, None
