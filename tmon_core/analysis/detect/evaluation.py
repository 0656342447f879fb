"""Validation against training (overfitting) and gradient norms (exploding, vanishing)."""

from __future__ import annotations

import math

import numpy as np

from .base import BLOCK, Blocks, Detection, NonFinite, _arr, _conf, _departure, _Positive


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
        after = values[b + 1 :]
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
        return Detection(
            "overfitting",
            steps[rb],
            _conf(margin),
            {
                "best_step": steps[rb],
                "best_value": float(raw[rb]),
                "last_value": float(raw[-1]),
                "evaluations": len(raw),
                "evaluations_after_best": len(raw) - 1 - rb,
                "train_loss_at_best": train_best,
                "train_loss_at_end": train_last,
            },
        )


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
            return (
                [Detection("grad_explode", nf.onset, 1.0, {"nonfinite": nf.evidence["count"]})] if nf else []
            )
        early = float(np.median(b.med[:3]))
        late = float(b.med[-1])
        ev = {
            "early_median": math.exp(early),
            "late_median": math.exp(late),
            "nonfinite": nf.evidence["count"] if nf else 0,
            "points": self.nonfinite.points,
            "window": BLOCK,
        }
        noise = 4.0 * float(np.max(b.se(slice(0, 3))))
        if self._scanned < len(b.med):  # only the new blocks: the first departure, once seen, stays
            new = b.med[self._scanned :] - early
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
            return [
                Detection(
                    "grad_explode",
                    onset,
                    _conf((late - early) / math.log(self.explode)) if not nf else 1.0,
                    {**ev, "first_nonfinite_step": nf.onset if nf else None},
                )
            ]
        if early - late >= -math.log(self.vanish):
            onset = _departure(b, early - b.med[3:], self._below) if self._below is not None else None
            return [Detection("grad_vanish", onset, _conf((early - late) / -math.log(self.vanish)), ev)]
        return []
