"""The loss: spikes against its own noise, divergence, plateau and no progress (see the package docstring)."""

from __future__ import annotations

import math

import numpy as np

from .base import (
    _ONE_SIDED,
    BLOCK,
    REF_BLOCKS,
    SPIKE_HABIT,
    SPIKE_MIN_RATIO,
    SPIKE_SCALE_FLOOR,
    SPIKE_SIGMAS,
    Blocks,
    Detection,
    NonFinite,
    _arr,
    _conf,
    _departure,
    _Positive,
)


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

    def judge(
        self, blocks: Blocks, start: int, steps: np.ndarray, logs: np.ndarray, walls: np.ndarray | None
    ) -> None:
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
        for g, j, zz, r, m in zip(
            gi.tolist(), js.tolist(), z[hit].tolist(), rise[hit].tolist(), ref[hit].tolist()
        ):
            if g != self.last_spike_index + 1:
                self.events.append(int(steps[j]))
                self.z_sum += zz
            self.last_spike_index = g
            if self.worst is None or zz > self.worst["z"]:
                self.worst = {
                    "step": int(steps[j]),
                    "value": float(math.exp(logs[j])),
                    "z": float(zz),
                    "ratio": float(math.exp(r)),
                    "reference": float(math.exp(m)),
                    "wall_time": float(walls[j]) if walls is not None else None,
                }

    def result(self) -> Detection | None:
        if not self.events:
            return None
        w = self.worst
        n = len(self.events)
        return Detection(
            "spikes",
            self.events[0],
            _conf(w["z"] / self.sigmas),
            {
                "count": n,
                "steps": self.events[:20],
                "worst_step": w["step"],
                "worst_value": w["value"],
                "worst_vs_median": w["ratio"],
                "worst_sigmas": w["z"],
                "reference_median": w["reference"],
                "mean_sigmas": self.z_sum / n,
                "threshold_sigmas": self.sigmas,
                "wall_time": w["wall_time"],
            },
        )


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
    excess = m[b + 1 :] - best
    clear = np.flatnonzero(excess > max(math.log(1.25), noise / 2))
    onset = _departure(blocks, excess, int(clear[0]), b + 1) if len(clear) else int(blocks.first[b + 1])
    return Detection(
        "divergence",
        onset,
        _conf(rise / need),
        {
            "best_smoothed_loss": math.exp(best),
            "best_step": int(blocks.last[b]),
            "final_smoothed_loss": math.exp(final),
            "first_smoothed_loss": math.exp(first),
            "turn_step": onset,
            "lost_all": progress > 0 and final >= first,
            "noise_log": noise,
            "window": BLOCK,
        },
    )


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
    ev = {
        "from_step": int(blocks.first[i0]),
        "to_step": int(blocks.last[-1]),
        "improvement": drop,
        "improvement_se": drop_se,
        "start_loss": math.exp(float(m[0])),
        "level": math.exp(level),
        "overall_improvement": overall,
        "blocks": nb,
        "window": BLOCK,
    }
    upper = drop + _ONE_SIDED * drop_se  # the improvement it may still be making, at 95 % confidence
    ev["improvement_upper"] = upper
    if overall < improvement and upper < improvement:
        return Detection(
            "no_progress", int(blocks.first[0]), _conf(improvement / max(overall, upper, 1e-9)), ev
        )
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

    def __init__(
        self,
        *,
        divergence_factor: float = 2.0,
        plateau_min_steps: float = 500,
        plateau_improvement: float = 0.05,
        spike_sigmas: float = SPIKE_SIGMAS,
        spike_min_ratio: float = SPIKE_MIN_RATIO,
    ) -> None:
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
        w = walls[ok][: len(s)] if walls is not None else None
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
