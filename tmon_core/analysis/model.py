"""What a report is made of: findings (what was observed, with evidence), recommendations (what to
change, in the framework's own terms) and the thresholds the rules judge by."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITIES = (CRITICAL, WARNING, INFO)
RANK = {CRITICAL: 0, WARNING: 1, INFO: 2}
GOOD = "good"
HEALTH = (GOOD, WARNING, CRITICAL)


@dataclass
class Finding:
    """Something the run's data shows. ``evidence`` holds the numbers (values, steps, times) it rests on."""

    rule: str  # family.name, e.g. "memory.gpu_peak"
    severity: str
    title: str
    detail: str
    evidence: dict = field(default_factory=dict)
    step: int | None = None
    wall_time: float | None = None
    confidence: float | None = (
        None  # 0-1: how far the evidence stands out of the run's own noise (None: a fact)
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Recommendation:
    """One change to make. ``config_path`` names the framework's own setting (``...`` where the
    value goes); ``code`` is that setting with the recommended value filled in, ready to paste."""

    rule: str
    severity: str
    title: str
    action: str
    impact: str
    config_path: str | None
    current_value: Any
    recommended_value: Any
    evidence: dict = field(default_factory=dict)
    code: str | None = None
    priority: int = 50  # order within one severity: lower first

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """What the rules call too much or too little. Pass one (or a dict of changes) to ``report()``.

    Memory fractions are of the device's capacity (host RAM, or one GPU's memory).
    """

    memory_warning: float = 0.85  # peak memory at or above: warning
    memory_critical: float = 0.95  # ... critical
    memory_target: float = 0.80  # what an estimated batch size aims to use
    memory_headroom: float = 0.50  # peak GPU memory below this: a larger batch fits
    swap_growth_bytes: float = 256 * 2**20  # swap that grew by this much during the run: the host ran short
    data_share: float = 0.30  # share of a step spent waiting for data that makes a run input-bound
    data_wait_min_s: float = (
        0.010  # ... when the median wait is at least this (ms waits are IPC, not a bottleneck)
    )
    gpu_util_low: float = 40.0  # mean GPU utilization (%) below this: the GPU idles
    cpu_saturated: float = 90.0  # mean host CPU (%) at or above this: the CPU is the limit
    stall_factor: float = 10.0  # a step this many times the median step ...
    stall_min_s: float = 1.0  # ... and at least this long is a stall
    step_time_spread: float = 1.0  # (p90 - p10) / median step time above this: uneven steps ...
    min_step_s: float = 0.010  # ... judged only when the median step is at least this long
    spike_factor: float = 2.0  # a loss at least this many times its recent median ...
    spike_sigmas: float = 9.0  # ... and this many units of the run's own noise above it is a spike
    divergence_factor: float = 2.0  # smoothed loss ending this many times above its best: divergence
    plateau_min_steps: int = 500  # the shortest run judged for a plateau
    plateau_improvement: float = (
        0.05  # last third's improvement, at its 95 % upper bound, below this: plateau
    )
    overfit_rise: float = 0.05  # validation loss this much (relative) above its best, twice in a row
    grad_explode_factor: float = 10.0  # late grad norm this many times the early one: exploding
    grad_vanish_factor: float = 1e-3  # late grad norm below this fraction of the early one: vanishing
    lr_change_window: int = 50  # steps compared before/after a learning-rate change
    min_samples: int = 3  # hardware samples needed before judging memory or utilization

    def __post_init__(self) -> None:
        for name in ("memory_warning", "memory_critical", "memory_target", "memory_headroom"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 1:
                raise ValueError(f"{name} must be a fraction in (0, 1], received {name}={v!r}")
        if self.memory_warning > self.memory_critical:
            raise ValueError(
                f"memory_warning must be <= memory_critical, received memory_warning="
                f"{self.memory_warning!r}, memory_critical={self.memory_critical!r}"
            )
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, received {f.name}={v!r}")

    @classmethod
    def coerce(cls, value: Thresholds | dict | None) -> Thresholds:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(
                    f"unknown threshold(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
                )
            return cls(**value)
        raise ValueError(
            f"thresholds must be a Thresholds or a dict, received {type(value).__name__}: {value!r}"
        )


def health_of(findings: list[Finding]) -> str:
    severities = {f.severity for f in findings}
    if CRITICAL in severities:
        return CRITICAL
    if WARNING in severities:
        return WARNING
    return GOOD
