"""A user's own alert rule on any metric: ``Alert("val_loss", above=2.0)``, ``Alert("grad_norm", zscore=4)``.

Each rule fires once per excursion: when a value crosses its limit, and again only after the values
came back inside it. A z-score rule judges each value against the mean and standard deviation of
the values before it (Welford's running moments), once it has seen ``min_points`` of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVELS = ("info", "warning", "critical")


@dataclass(frozen=True)
class Alert:
    """Alert when metric ``key`` goes ``above`` or ``below`` a value, or ``zscore`` standard
    deviations away from its own running mean. ``level``: info, warning or critical."""

    key: str
    above: float | None = None
    below: float | None = None
    zscore: float | None = None
    level: str = "warning"
    min_points: int = 30

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(
                f"Alert key must be a metric name (a non-empty string), received key={self.key!r}"
            )
        for name in ("above", "below", "zscore"):
            v = getattr(self, name)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            ):
                raise ValueError(f"Alert {name} must be a finite number or None, received {name}={v!r}")
        if self.above is None and self.below is None and self.zscore is None:
            raise ValueError(f"Alert({self.key!r}) needs above=, below= or zscore=")
        if self.zscore is not None and self.zscore <= 0:
            raise ValueError(f"Alert zscore must be > 0, received zscore={self.zscore!r}")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError(
                f"Alert below= must be under above=, received below={self.below!r}, above={self.above!r}"
            )
        if self.level not in LEVELS:
            raise ValueError(f"Alert level must be one of {', '.join(LEVELS)}, received level={self.level!r}")
        if not isinstance(self.min_points, int) or self.min_points < 2:
            raise ValueError(f"Alert min_points must be an int >= 2, received min_points={self.min_points!r}")

    @property
    def name(self) -> str:
        """The rule's name in alerts: ``metric.<key>``."""
        return f"metric.{self.key}"

    def describe(self) -> str:
        parts = []
        if self.above is not None:
            parts.append(f"above {self.above:g}")
        if self.below is not None:
            parts.append(f"below {self.below:g}")
        if self.zscore is not None:
            parts.append(f"{self.zscore:g} standard deviations from its mean")
        return " or ".join(parts)


class UserRuleState:
    """The running state of one ``Alert``: fed the key's new points, returns what fired."""

    def __init__(self, rule: Alert) -> None:
        self.rule = rule
        self.outside = False  # in an excursion already alerted
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> list[dict]:
        r = self.rule
        out = []
        for s, v, w in zip(steps.tolist(), values.tolist(), walls.tolist()):
            if not math.isfinite(v):
                continue  # non-finite values are the nonfinite rule's
            why = None
            if r.above is not None and v > r.above:
                why = f"{r.key} = {v:.6g} at step {s}, above {r.above:g}"
            elif r.below is not None and v < r.below:
                why = f"{r.key} = {v:.6g} at step {s}, below {r.below:g}"
            elif r.zscore is not None and self.n >= r.min_points:
                sd = math.sqrt(self.m2 / (self.n - 1))
                if sd > 0 and abs(v - self.mean) / sd > r.zscore:
                    why = (
                        f"{r.key} = {v:.6g} at step {s}, {abs(v - self.mean) / sd:.1f} standard deviations "
                        f"from its mean {self.mean:.6g}"
                    )
            if why is not None and not self.outside:
                out.append(
                    {
                        "rule": r.name,
                        "level": r.level,
                        "title": f"{r.key} {r.describe()}",
                        "text": why,
                        "step": int(s),
                        "wall_time": float(w),
                        "evidence": {"key": r.key, "value": v},
                    }
                )
            self.outside = why is not None
            # the moments take every finite value, so an excursion widens what counts as normal slowly
            self.n += 1
            d = v - self.mean
            self.mean += d / self.n
            self.m2 += d * (v - self.mean)
        return out
