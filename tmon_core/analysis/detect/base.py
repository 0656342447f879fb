"""The shared ground of the detectors: points in blocks of ``BLOCK`` with robust levels and
spreads, the first NaN/inf, a finding's shape and confidence, trends and departures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BLOCK = 32
SPIKE_SIGMAS = 9.0
SPIKE_MIN_RATIO = 2.0
REF_BLOCKS = 4  # a point's reference: the blocks before its own, up to this many
SPIKE_HABIT = 4  # excursions past the limit in the reference blocks that make them this run's habit
SPIKE_SCALE_FLOOR = 0.02  # a very smooth curve: a 2 % wiggle is not its noise unit
_Q90 = 1.2816  # q90 of a standard normal: (q90 - median) / _Q90 is σ for Gaussian log-noise
_ONE_SIDED = 1.645  # z of a one-sided 95 % bound
_MEDIAN_SE = 1.15  # SE of a 32-point interquartile mean of Gaussian noise, in σ/sqrt(n)  # SE of a block median = this × MAD / sqrt(n) for Gaussian noise


@dataclass
class Detection:
    """What a detector found: ``name`` (nonfinite, spikes, divergence, plateau, no_progress,
    overfitting, grad_explode, grad_vanish), the ``onset`` step, a ``confidence`` in [0, 1] (how far
    the evidence stands out of the noise) and the numbers it rests on."""

    name: str
    onset: int | None
    confidence: float
    evidence: dict = field(default_factory=dict)


def _conf(margin: float) -> float:
    """Confidence from how many times the evidence exceeds what the rule needs (1 = just at it)."""
    if not math.isfinite(margin):
        return 1.0
    return round(float(1.0 - 0.5 * math.exp(-2.0 * max(margin - 1.0, 0.0))), 3)


def _arr(x, dtype) -> np.ndarray:
    return np.asarray(x, dtype=dtype).reshape(-1)


class _Grow:
    """An array appended to in place (capacity doubles): no copy of the whole per update."""

    def __init__(self, dtype) -> None:
        self.data = np.empty(64, dtype)
        self.n = 0

    def extend(self, x: np.ndarray) -> None:
        need = self.n + len(x)
        if need > len(self.data):
            grown = np.empty(max(need, 2 * len(self.data)), self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : need] = x
        self.n = need

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.n]

    def last(self, default: float = 0.0):
        return self.data[self.n - 1] if self.n else default


class Blocks:
    """Finite positive points in blocks of ``BLOCK``: per complete block the level (interquartile
    mean of the logs), the spread ((q75 - q25) / 1.349, σ for Gaussian noise), the upper spread ((q90
    - median) / 1.28), its first/last step, and running sums for the trend over any range of blocks
    in O(1); the partial block waits. Values <= 0 stop it (``nonpositive_step``)."""

    def __init__(self) -> None:
        self._med, self._sd, self._up = _Grow(float), _Grow(float), _Grow(float)
        self._first, self._last = _Grow(np.int64), _Grow(np.int64)
        # prefix sums (first entry 0) of the level, its square and index × level: trends in O(1)
        self._cy, self._cyy, self._ciy = _Grow(float), _Grow(float), _Grow(float)
        for c in (self._cy, self._cyy, self._ciy):
            c.extend(np.zeros(1))
        self.best_index = -1  # the lowest level's block (the first of equals)
        self.pending_log = np.empty(0)
        self.pending_steps = np.empty(0, np.int64)
        self.sorted = np.empty(
            (0, BLOCK)
        )  # the last complete blocks' logs, sorted (REF_BLOCKS between updates)
        self.sorted_from = 0  # the block index of sorted[0]
        self.count = 0  # points taken
        self.nonpositive_step: int | None = None

    med = property(lambda self: self._med.view)
    sd = property(lambda self: self._sd.view)
    up = property(lambda self: self._up.view)
    first = property(lambda self: self._first.view)
    last = property(lambda self: self._last.view)

    def __len__(self) -> int:
        return self._med.n

    def update(self, steps: np.ndarray, logs: np.ndarray) -> None:
        if not len(logs):
            return
        self.count += len(logs)
        all_log = np.concatenate([self.pending_log, logs])
        all_steps = np.concatenate([self.pending_steps, steps])
        k = len(all_log) // BLOCK * BLOCK
        if k:
            full = np.sort(all_log[:k].reshape(-1, BLOCK), axis=1)
            fsteps = all_steps[:k].reshape(-1, BLOCK)
            # the interquartile mean: robust to a spike like the median, yet steady when a share of
            # hard batches puts the median on the edge between two modes
            med = full[:, BLOCK // 4 : 3 * BLOCK // 4].mean(axis=1)
            q25, q75, q90 = (
                full[:, int(q * (BLOCK - 1))] * (1 - q * (BLOCK - 1) % 1)
                + full[:, int(q * (BLOCK - 1)) + 1] * (q * (BLOCK - 1) % 1)
                for q in (0.25, 0.75, 0.9)
            )
            q50 = (full[:, BLOCK // 2 - 1] + full[:, BLOCK // 2]) / 2
            n0 = len(self)
            j = int(np.argmin(med))
            if self.best_index < 0 or med[j] < self._med.data[self.best_index]:
                self.best_index = n0 + j
            idx = np.arange(n0, n0 + len(med), dtype=float)
            for c, v in ((self._cy, med), (self._cyy, med * med), (self._ciy, idx * med)):
                # the same additions in the same order however the points arrive
                c.extend(np.cumsum(np.concatenate([[c.last()], v]))[1:])
            self._med.extend(med)
            self._sd.extend((q75 - q25) / 1.349)
            self._up.extend((q90 - q50) / _Q90)
            self._first.extend(fsteps[:, 0])
            self._last.extend(fsteps[:, -1])
            self.sorted = np.concatenate([self.sorted, full])
        self.pending_log = all_log[k:]
        self.pending_steps = all_steps[k:]

    def trend(self, i0: int) -> tuple[float, float, float, int]:
        """Over blocks ``i0``.. to the last: the slope of the level per block, its standard error, the
        mean level and the number of blocks."""
        n = len(self)
        m = n - i0
        cy, cyy, ciy = self._cy.data, self._cyy.data, self._ciy.data
        sy, syy, siy = cy[n] - cy[i0], cyy[n] - cyy[i0], ciy[n] - ciy[i0]
        si = (i0 + n - 1) * m / 2.0
        sii = ((n - 1) * n * (2 * n - 1) - (i0 - 1) * i0 * (2 * i0 - 1)) / 6.0
        sxx = sii - si * si / m
        sxy = siy - si * sy / m
        slope = sxy / sxx
        sse = max(syy - sy * sy / m - slope * sxy, 0.0)
        return slope, math.sqrt(sse / max(m - 2, 1) / sxx), sy / m, m

    def trim(self) -> None:
        """Keep only the last sorted blocks that the next points' references need."""
        drop = max(0, len(self.sorted) - REF_BLOCKS)
        self.sorted = self.sorted[drop:]
        self.sorted_from += drop

    def se(self, i) -> np.ndarray:
        """Standard error of block ``i``'s level (its interquartile mean)."""
        return _MEDIAN_SE * self.sd[i] / math.sqrt(BLOCK)


class _Positive:
    """Splits new points into non-finite ones, and finite ones turned into logs (stopping at the first
    value <= 0)."""

    def __init__(self) -> None:
        self.blocks = Blocks()

    def logs(self, steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.isfinite(values)
        s, v = steps[ok], values[ok]
        if self.blocks.nonpositive_step is not None:
            return s[:0], v[:0]
        bad = v <= 0
        if bad.any():
            i = int(np.argmax(bad))
            self.blocks.nonpositive_step = int(s[i])
            s, v = s[:i], v[:i]
        return s, np.log(v)


class NonFinite:
    """The first NaN/inf: its step, kind, the lr-free context (the last finite values before it),
    how many, and whether the series recovered (its last 10 points finite)."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.first_wall: float | None = None
        self.kind: str | None = None
        self.count = 0
        self.points = 0
        self.before = np.empty(0)  # the last 50 finite values before the first bad one
        self.recent_ok = np.empty(0, bool)
        self.finite_after = False

    def update(self, steps: np.ndarray, values: np.ndarray, walls: np.ndarray | None = None) -> None:
        if not len(values):
            return
        ok = np.isfinite(values)
        self.points += len(values)
        self.count += int((~ok).sum())
        if self.first is None:
            if ok.all():
                self.before = np.concatenate([self.before, values])[-50:]
            else:
                i = int(np.argmin(ok))
                self.first = int(steps[i])
                self.first_wall = float(walls[i]) if walls is not None else None
                v = float(values[i])
                self.kind = "NaN" if math.isnan(v) else "+inf" if v > 0 else "-inf"
                self.before = np.concatenate([self.before, values[:i]])[-50:]
                self.finite_after = bool(ok[i + 1 :].any())
        else:
            self.finite_after = self.finite_after or bool(ok.any())
        self.recent_ok = np.concatenate([self.recent_ok, ok])[-10:]

    def result(self) -> Detection | None:
        if self.first is None:
            return None
        recovered = self.finite_after and bool(self.recent_ok.all())
        last = float(self.before[-1]) if len(self.before) else None
        med = float(np.median(self.before)) if len(self.before) >= 5 else None
        trend = last / med if last is not None and med and med > 0 else None
        return Detection(
            "nonfinite",
            self.first,
            1.0,
            {
                "first_step": self.first,
                "kind": self.kind,
                "count": self.count,
                "of_points": self.points,
                "last_finite_loss": last,
                "last_finite_vs_recent_median": trend,
                "recovered": recovered,
                "wall_time": self.first_wall,
            },
        )


def _trend(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS slope of y on x and its standard error."""
    xm = x - x.mean()
    sxx = float((xm * xm).sum())
    slope = float((xm * (y - y.mean())).sum() / sxx)
    resid = y - y.mean() - slope * xm
    dof = max(len(x) - 2, 1)
    return slope, math.sqrt(float((resid * resid).sum()) / dof / sxx)


def _departure(b: Blocks, excess: np.ndarray, i: int, offset: int = 3) -> int:
    """Where a departure from a reference level began. ``excess`` is each block's distance from it
    (block ``offset`` first), block ``i`` of it the first clearly off; the line through that block
    and the next ones, in log space (where growth and decay are straight), is followed back to zero,
    no further than one block before the blocks that lean that way at all."""
    j = i + offset
    ys = excess[i : i + 4]
    if len(ys) >= 2 and ys[1] > 2 * ys[0]:  # a fast departure: the blocks after it are past the bend
        ys = ys[:2]
    xs = ((b.first[j : j + len(ys)] + b.last[j : j + len(ys)]) / 2.0).astype(float)
    start = int(b.first[j])
    if len(xs) < 2:
        return start
    k = i
    while k > 0 and excess[k - 1] > 0:
        k -= 1
    floor = int(b.first[max(k + offset - 1, offset)])
    slope, _ = _trend(xs, ys)
    if slope <= 0:
        return start
    at = float(xs[0] - ys[0] / slope)
    return int(min(max(at, float(floor)), start))
