"""The optimization detectors, incremental: each holds a small state, takes new points as they come
(``update(steps, values)``) and says what it sees so far (``result()``), the same whether it was fed
the whole run at once or a point at a time. The report feeds them whole runs; live alerts feed them
step by step. The same holds for step times (``StepTimes``: stalls, input-bound steps) and memory
(``HostMemory``, ``GpuMemory``: peaks, and when the warning and critical levels were first reached).

>>> import numpy as np
>>> from tmon_core.analysis.detect import LossDetector
>>> rng = np.random.default_rng(0)
>>> steps = np.arange(2000)
>>> loss = np.exp(-steps / 800) * rng.lognormal(0, 0.2, 2000)   # a falling loss with batch noise
>>> loss[1500] *= 50                                              # one corrupted batch
>>> det = LossDetector()
>>> det.update(steps[:1000], loss[:1000])                         # the first half: nothing to say
[]
>>> [(d.name, d.onset) for d in det.update(steps[1000:], loss[1000:])]
[('spikes', 1500)]

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

from .base import (
    BLOCK,
    REF_BLOCKS,
    SPIKE_HABIT,
    SPIKE_MIN_RATIO,
    SPIKE_SCALE_FLOOR,
    SPIKE_SIGMAS,
    Blocks,
    Detection,
    NonFinite,
)
from .evaluation import GradDetector, OverfitDetector
from .hardware import GpuMemory, HostMemory
from .loss import LossDetector, Spikes, divergence, plateau
from .throughput import RunningMedian, StepTimes

__all__ = [
    "BLOCK",
    "Blocks",
    "Detection",
    "GpuMemory",
    "GradDetector",
    "HostMemory",
    "LossDetector",
    "NonFinite",
    "OverfitDetector",
    "REF_BLOCKS",
    "RunningMedian",
    "SPIKE_HABIT",
    "SPIKE_MIN_RATIO",
    "SPIKE_SCALE_FLOOR",
    "SPIKE_SIGMAS",
    "Spikes",
    "StepTimes",
    "divergence",
    "plateau",
]
