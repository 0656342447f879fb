"""The optimization detectors, incremental: each holds a small state, takes new points as they come
(``update(steps, values)``) and says what it sees so far (``result()``), the same whether it was fed
the whole run at once or a point at a time. The report feeds them whole runs; live alerts feed them
step by step.

>>> from tmon_core.analysis.detect import LossDetector
>>> det = LossDetector()
>>> det.update(steps, values)            # doctest: +SKIP  (numpy arrays, steps increasing)
>>> [x.name for x in det.result()]       # doctest: +SKIP  ['spikes']

They judge a series against its own noise, in log space (a loss that halves moves as far from 1.0
as from 0.01): the points are grouped in blocks of ``BLOCK`` consecutive points, each block
summarised by the interquartile mean of its logs and its spread; a judgement needs the evidence to stand out of
that spread, so a noisy run needs a larger effect than a smooth one. Chosen on the labelled corpus
of ``bench/diagnosis.py`` (tests/diagnosis/):

* spikes: a point whose log rises above the previous block's level (interquartile mean) by
  ``SPIKE_SIGMAS`` (9) times the upper spread of the ``REF_BLOCKS`` (4) blocks before it ((q90 -
  median) / 1.28, the σ of a log-normal noise; mixed-difficulty batches widen it, as they should)
  and by at least ×``SPIKE_MIN_RATIO`` (2), unless those blocks hold ``SPIKE_HABIT`` (4) points as
  high already (then such batches are the run's habit); the first two blocks are not judged;
* divergence: the last block's level above the best block's by ×``divergence_factor`` and by 4
  standard errors, having given back a quarter of the progress;
* plateau: over the last third of the run a linear trend of the block medians whose improvement,
  at its 95 % upper bound, stays under ``plateau_improvement`` (5 %): flat *within its confidence*;
  a noisy curve still falling is not flat, and one too noisy to tell is not called flat either;
* overfitting: the validation loss (median of three evaluations) above its best by ``overfit_rise``
  at the last two evaluations while the training blocks kept falling;
* gradient norm: the last block's level ×``grad_explode_factor`` above (or ×``grad_vanish_factor``
  below) the first three blocks' median, or non-finite norms.

A series with values <= 0 (not a loss of the usual kind) is judged for NaN/inf only: ratios mean
nothing there.
"""

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
            grown[:self.n] = self.data[:self.n]
            self.data = grown
        self.data[self.n:need] = x
        self.n = need

    @property
    def view(self) -> np.ndarray:
        return self.data[:self.n]

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
        self.sorted = np.empty((0, BLOCK))  # the last complete blocks' logs, sorted (REF_BLOCKS between updates)
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
            med = full[:, BLOCK // 4:3 * BLOCK // 4].mean(axis=1)
            q25, q75, q90 = (full[:, int(q * (BLOCK - 1))] * (1 - q * (BLOCK - 1) % 1)
                             + full[:, int(q * (BLOCK - 1)) + 1] * (q * (BLOCK - 1) % 1) for q in (0.25, 0.75, 0.9))
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
                self.finite_after = bool(ok[i + 1:].any())
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
        return Detection("nonfinite", self.first, 1.0, {
            "first_step": self.first, "kind": self.kind, "count": self.count, "of_points": self.points,
            "last_finite_loss": last, "last_finite_vs_recent_median": trend, "recovered": recovered,
            "wall_time": self.first_wall})


class Spikes:
    """Points far above the run's own recent noise (see the module docstring)."""

    def __init__(self, sigmas: float = SPIKE_SIGMAS, min_ratio: float = SPIKE_MIN_RATIO) -> None:
        self.sigmas = sigmas
        self.min_log = math.log(min_ratio)
        self.events: list[int] = []  # first step of each spike (consecutive spike points are one)
        self.points = 0
        self.last_spike_index = -2
        self.worst: dict | None = None
        self.z_sum = 0.0

    def judge(self, blocks: Blocks, start: int, steps: np.ndarray, logs: np.ndarray,
              walls: np.ndarray | None) -> None:
        """``logs`` are the points ``start``.. just added to ``blocks`` (which has completed every block
        before theirs): each is judged against the two blocks before its own."""
        n = len(logs)
        if not n:
            return
        idx = np.arange(start, start + n)
        b = idx // BLOCK
        judged = b >= 2
        if not judged.any():
            return
        bj = b[judged]
        ub, inv = np.unique(bj, return_inverse=True)
        # level: the last block's; noise: the upper spread over up to REF_BLOCKS blocks (one block can
        # hold by chance few of a run's hard batches)
        ref_b = blocks.med[ub - 1]
        total = np.zeros(len(ub))
        for j in range(1, REF_BLOCKS + 1):  # summed in the same order however the points arrived
            total += np.where(ub - j >= 0, blocks.up[np.clip(ub - j, 0, None)], 0.0)
        scale_b = np.maximum(total / np.minimum(ub, REF_BLOCKS), SPIKE_SCALE_FLOOR)
        limit_b = ref_b + np.maximum(self.sigmas * scale_b, self.min_log)
        # excursions this large that the reference blocks hold already are this run's noise (a share of
        # hard batches), not spikes; an earlier spike or two is no habit
        srt = blocks.sorted
        over = np.zeros(len(ub), int)
        for j in range(1, REF_BLOCKS + 1):
            has = ub - j >= 0
            rows = np.clip(ub - j - blocks.sorted_from, 0, None)
            # as far above their own block's level (an older block sits higher on a falling curve)
            own = blocks.med[np.clip(ub - j, 0, None)] + (limit_b - ref_b)
            over += np.where(has, (srt[rows] > own[:, None]).sum(axis=1), 0)
        habit = over >= SPIKE_HABIT
        ref, scale = ref_b[inv], scale_b[inv]
        rise = logs[judged] - ref
        z = rise / scale
        hit = (z > self.sigmas) & (rise > self.min_log) & ~habit[inv]
        if not hit.any():
            return
        gi = idx[judged][hit]
        js = np.flatnonzero(judged)[hit]
        for g, j, zz, r, m in zip(gi.tolist(), js.tolist(), z[hit].tolist(), rise[hit].tolist(), ref[hit].tolist()):
            if g != self.last_spike_index + 1:
                self.events.append(int(steps[j]))
                self.z_sum += zz
            self.last_spike_index = g
            if self.worst is None or zz > self.worst["z"]:
                self.worst = {"step": int(steps[j]), "value": float(math.exp(logs[j])), "z": float(zz),
                              "ratio": float(math.exp(r)), "reference": float(math.exp(m)),
                              "wall_time": float(walls[j]) if walls is not None else None}

    def result(self) -> Detection | None:
        if not self.events:
            return None
        w = self.worst
        n = len(self.events)
        return Detection("spikes", self.events[0], _conf(w["z"] / self.sigmas), {
            "count": n, "steps": self.events[:20], "worst_step": w["step"], "worst_value": w["value"],
            "worst_vs_median": w["ratio"], "worst_sigmas": w["z"], "reference_median": w["reference"],
            "mean_sigmas": self.z_sum / n, "threshold_sigmas": self.sigmas, "wall_time": w["wall_time"]})


def divergence(blocks: Blocks, factor: float) -> Detection | None:
    """The last block's median well above the best block's (see the module docstring)."""
    m = blocks.med
    if len(m) < 5:
        return None
    b = blocks.best_index
    if b >= len(m) - 1:
        return None
    best, first, final = float(m[b]), float(m[0]), float(m[-1])
    rise, progress = final - best, first - best
    noise = 4.0 * math.hypot(float(blocks.se(b)), float(blocks.se(-1)))
    need = max(math.log(factor), noise, 0.25 * progress)
    if rise <= need:
        return None
    excess = m[b + 1:] - best
    clear = np.flatnonzero(excess > max(math.log(1.25), noise / 2))
    onset = _departure(blocks, excess, int(clear[0]), b + 1) if len(clear) else int(blocks.first[b + 1])
    return Detection("divergence", onset, _conf(rise / need), {
        "best_smoothed_loss": math.exp(best), "best_step": int(blocks.last[b]), "final_smoothed_loss": math.exp(final),
        "first_smoothed_loss": math.exp(first), "turn_step": onset, "lost_all": progress > 0 and final >= first,
        "noise_log": noise, "window": BLOCK})


def _trend(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS slope of y on x and its standard error."""
    xm = x - x.mean()
    sxx = float((xm * xm).sum())
    slope = float((xm * (y - y.mean())).sum() / sxx)
    resid = y - y.mean() - slope * xm
    dof = max(len(x) - 2, 1)
    return slope, math.sqrt(float((resid * resid).sum()) / dof / sxx)


def plateau(blocks: Blocks, min_steps: float, improvement: float) -> Detection | None:
    """Flat within its confidence over the last third; or no progress over the whole run."""
    m = blocks.med
    if len(m) < 9:
        return None
    span = int(blocks.last[-1] - blocks.first[0])
    if span < min_steps:
        return None
    # the last third: blocks whose middle step is in it
    i0 = int(np.searchsorted(blocks.first, blocks.last[-1] - span / 3.0 - BLOCK))
    while i0 < len(m) and (blocks.first[i0] + blocks.last[i0]) / 2.0 < blocks.last[-1] - span / 3.0:
        i0 += 1
    if len(m) - i0 < 4:
        return None
    slope, se, level, nb = blocks.trend(i0)
    # improvement over the window in log (≈ relative) units; the trend is per block (per BLOCK points)
    drop, drop_se = float(-slope * (nb - 1)), float(se * (nb - 1))
    overall = float(m[0]) - level
    ev = {"from_step": int(blocks.first[i0]), "to_step": int(blocks.last[-1]), "improvement": drop,
          "improvement_se": drop_se, "start_loss": math.exp(float(m[0])), "level": math.exp(level),
          "overall_improvement": overall, "blocks": nb, "window": BLOCK}
    upper = drop + _ONE_SIDED * drop_se  # the improvement it may still be making, at 95 % confidence
    ev["improvement_upper"] = upper
    if overall < improvement and upper < improvement:
        return Detection("no_progress", int(blocks.first[0]), _conf(improvement / max(overall, upper, 1e-9)), ev)
    if upper >= improvement:
        return None
    onset = _flat_from(blocks, span)
    ev["from_step"] = onset
    return Detection("plateau", onset, _conf(improvement / max(upper, 1e-9)), ev)


def _flat_from(blocks: Blocks, span: int, most: int = 120) -> int:
    """Where the flat part starts: the knee of the best "falling, then flat" fit (a line in log space
    up to the knee, constant after it) over the run after its first tenth (block levels averaged into
    at most ``most`` points, so the cost does not grow with the run)."""
    centers = (blocks.first + blocks.last) / 2.0
    keep = centers >= blocks.first[0] + 0.1 * span
    x, y = centers[keep], blocks.med[keep]
    if len(x) > most:
        cut = np.linspace(0, len(x), most + 1).astype(int)[:-1]
        widths = np.diff(np.append(cut, len(x)))
        x, y = np.add.reduceat(x, cut) / widths, np.add.reduceat(y, cut) / widths
    cands = x[: max(len(x) - 3, 1)]
    z = np.minimum(x[None, :] - cands[:, None], 0.0)
    zc = z - z.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    szz = (zc * zc).sum(axis=1)
    szy = (zc * yc[None, :]).sum(axis=1)
    sse = np.where(szz > 0, (yc * yc).sum() - szy * szy / np.where(szz > 0, szz, 1.0), np.inf)
    best = int(np.argmin(sse))
    i = int(np.searchsorted(centers, cands[best]))
    return int(blocks.first[min(i, len(centers) - 1)])


class LossDetector:
    """NaN/inf, spikes, divergence, plateau and no progress of one loss series."""

    def __init__(self, *, divergence_factor: float = 2.0, plateau_min_steps: float = 500,
                 plateau_improvement: float = 0.05, spike_sigmas: float = SPIKE_SIGMAS,
                 spike_min_ratio: float = SPIKE_MIN_RATIO) -> None:
        self.nonfinite = NonFinite()
        self.spikes = Spikes(spike_sigmas, spike_min_ratio)
        self.pos = _Positive()
        self.divergence_factor = divergence_factor
        self.plateau_min_steps = plateau_min_steps
        self.plateau_improvement = plateau_improvement

    @property
    def blocks(self) -> Blocks:
        return self.pos.blocks

    def update(self, steps, values, walls=None) -> list[Detection]:
        steps, values = _arr(steps, np.int64), _arr(values, np.float64)
        walls = None if walls is None else _arr(walls, np.float64)
        self.nonfinite.update(steps, values, walls)
        ok = np.isfinite(values)
        s, logs = self.pos.logs(steps, values)
        w = walls[ok][:len(s)] if walls is not None else None
        blocks = self.blocks
        start = blocks.count
        blocks.update(s, logs)
        self.spikes.judge(blocks, start, s, logs, w)
        blocks.trim()
        return self.result()

    def result(self) -> list[Detection]:
        out = []
        nf = self.nonfinite.result()
        if nf is not None:
            out.append(nf)
        if self.blocks.nonpositive_step is not None:
            return out
        sp = self.spikes.result()
        if sp is not None:
            out.append(sp)
        if nf is None:
            dv = divergence(self.blocks, self.divergence_factor)
            if dv is not None:
                out.append(dv)
            else:
                pl = plateau(self.blocks, self.plateau_min_steps, self.plateau_improvement)
                if pl is not None:
                    out.append(pl)
        return out


class OverfitDetector:
    """Validation loss rising from its best while the training loss keeps falling."""

    def __init__(self, rise: float = 0.05, train: Blocks | None = None) -> None:
        """``train``: the training loss's blocks when a ``LossDetector`` keeps them already (its
        ``blocks``); otherwise feed the training loss with ``update_train``."""
        self.rise = rise
        self.steps: list[int] = []
        self.values: list[float] = []
        self._pos = _Positive()
        self.train = train if train is not None else self._pos.blocks

    def update_train(self, steps, values) -> None:
        s, logs = self._pos.logs(_arr(steps, np.int64), _arr(values, np.float64))
        self.train.update(s, logs)
        self.train.trim()

    def update(self, steps, values) -> Detection | None:
        for s, v in zip(_arr(steps, np.int64).tolist(), _arr(values, np.float64).tolist()):
            if math.isfinite(v):
                self.steps.append(s)
                self.values.append(v)
        return self.result()

    def _train_at(self, lo: int, hi: int) -> float | None:
        b = self.train
        if not len(b):
            return None
        i0 = int(np.searchsorted(b.last, lo, side="right"))
        i1 = int(np.searchsorted(b.first, hi, side="right"))
        if i1 <= i0:  # no block in between: the nearest
            j = min(max(int(np.searchsorted(b.last, hi)), 0), len(b) - 1)
            if j > 0 and abs(int(b.last[j - 1]) - hi) <= abs(int(b.last[j]) - hi):
                j -= 1
            return math.exp(float(b.med[j]))
        return math.exp(float(np.median(b.med[i0:i1])))

    def result(self) -> Detection | None:
        raw = np.asarray(self.values)
        if len(raw) < 3:
            return None
        values = raw
        if len(raw) >= 6:  # many evaluations: judge the median of each three, not single noisy ones
            padded = np.concatenate([raw[:1], raw, raw[-1:]])
            values = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
        b = int(np.argmin(values))
        best = float(values[b])
        after = values[b + 1:]
        if len(after) < 2:
            return None
        limit = best + self.rise * abs(best)
        if not (after[-1] > limit and after[-2] > limit):
            return None
        # what the user sees as the best evaluation is the raw one (the summary's best, the checkpoint's)
        rb = int(np.argmin(raw))
        if rb >= len(raw) - 2:
            return None
        steps = self.steps
        prev = steps[rb - 1] if rb > 0 else steps[rb] - 1
        train_best = self._train_at(prev, steps[rb])
        train_last = self._train_at(steps[-2], steps[-1])
        if train_best is None or train_last is None or not train_last < train_best * 0.99:
            return None
        margin = (min(after[-1], after[-2]) - best) / max(self.rise * abs(best), 1e-12)
        return Detection("overfitting", steps[rb], _conf(margin), {
            "best_step": steps[rb], "best_value": float(raw[rb]), "last_value": float(raw[-1]),
            "evaluations": len(raw), "evaluations_after_best": len(raw) - 1 - rb, "train_loss_at_best": train_best,
            "train_loss_at_end": train_last})


def _departure(b: Blocks, excess: np.ndarray, i: int, offset: int = 3) -> int:
    """Where a departure from a reference level began. ``excess`` is each block's distance from it
    (block ``offset`` first), block ``i`` of it the first clearly off; the line through that block
    and the next ones, in log space (where growth and decay are straight), is followed back to zero,
    no further than one block before the blocks that lean that way at all."""
    j = i + offset
    ys = excess[i:i + 4]
    if len(ys) >= 2 and ys[1] > 2 * ys[0]:  # a fast departure: the blocks after it are past the bend
        ys = ys[:2]
    xs = ((b.first[j:j + len(ys)] + b.last[j:j + len(ys)]) / 2.0).astype(float)
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


class GradDetector:
    """Exploding (or non-finite) and vanishing gradient norms."""

    def __init__(self, explode: float = 10.0, vanish: float = 1e-3) -> None:
        self.explode, self.vanish = explode, vanish
        self.nonfinite = NonFinite()
        self.pos = _Positive()
        self._scanned = 3  # blocks looked at for the first clear departure (the reference is fixed at 3)
        self._above: int | None = None
        self._below: int | None = None

    def update(self, steps, values) -> list[Detection]:
        steps, values = _arr(steps, np.int64), _arr(values, np.float64)
        self.nonfinite.update(steps, values)
        s, logs = self.pos.logs(steps, values)
        self.pos.blocks.update(s, logs)
        self.pos.blocks.trim()
        return self.result()

    def result(self) -> list[Detection]:
        b = self.pos.blocks
        nf = self.nonfinite.result()
        if len(b.med) < 4:
            return [Detection("grad_explode", nf.onset, 1.0, {"nonfinite": nf.evidence["count"]})] if nf else []
        early = float(np.median(b.med[:3]))
        late = float(b.med[-1])
        ev = {"early_median": math.exp(early), "late_median": math.exp(late),
              "nonfinite": nf.evidence["count"] if nf else 0, "points": self.nonfinite.points, "window": BLOCK}
        noise = 4.0 * float(np.max(b.se(slice(0, 3))))
        if self._scanned < len(b.med):  # only the new blocks: the first departure, once seen, stays
            new = b.med[self._scanned:] - early
            margin = max(math.log(2.0), noise)
            if self._above is None and (new > margin).any():
                self._above = self._scanned - 3 + int(np.argmax(new > margin))
            if self._below is None and (-new > margin).any():
                self._below = self._scanned - 3 + int(np.argmax(-new > margin))
            self._scanned = len(b.med)
        if late - early >= math.log(self.explode) or nf:
            onset = _departure(b, b.med[3:] - early, self._above) if self._above is not None else None
            if nf and (onset is None or nf.onset < onset):
                onset = nf.onset
            return [Detection("grad_explode", onset, _conf((late - early) / math.log(self.explode)) if not nf else 1.0,
                              {**ev, "first_nonfinite_step": nf.onset if nf else None})]
        if early - late >= -math.log(self.vanish):
            onset = _departure(b, early - b.med[3:], self._below) if self._below is not None else None
            return [Detection("grad_vanish", onset, _conf((early - late) / -math.log(self.vanish)), ev)]
        return []
