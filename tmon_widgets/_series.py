"""One metric of one run as a chart holds it: at most ``max_points`` points, extremes kept, grown by
incremental reads of only the new rows.

The first read asks the store for a min/max-downsampled series (``Run.metrics(key, max_points)``,
which reads the summaries kept at write time: a few hundred rows however long the run). Each later
read asks for the rows after the last step held (``Run.metrics(key, start=last + 1)``). When the
points held pass ``max_points`` they are folded into buckets of a power-of-two step width, each
keeping its smallest and largest value (``tmon_core.store.downsample.min_max_indices``, the store's
own min/max reduction): the cost of a refresh depends on the points that arrived
since the last one and on ``max_points``, never on the length of the run. Bucket edges stay put as
the run grows (the width only doubles), so a live line does not shimmer.

No ipywidgets here: tests and the benchmark use it as is.
"""

from __future__ import annotations

import math

import numpy as np

from tmon_core.store.downsample import bucket_extremes, min_max_indices

#: the most rows an incremental read asks for before it falls back to a range read
TAIL = 1024
_EMPTY_I = np.empty(0, dtype=np.int64)
_EMPTY_F = np.empty(0, dtype=np.float64)


class Series:
    """The points of ``key`` in ``run`` that a chart shows, kept current by :meth:`update`.

    ``start``/``end`` (steps) bound the series (a zoomed view); ``window`` keeps only the last
    ``window`` steps (a "last N steps" view). ``nonfinite`` collects the (step, value) of NaN/inf
    values seen in raw reads since the caller last cleared it (for live alerts).
    """

    def __init__(
        self,
        run,
        key: str,
        max_points: int = 2000,
        *,
        start: int | None = None,
        end: int | None = None,
        window: int | None = None,
    ):
        if not isinstance(max_points, int) or max_points < 4:
            raise ValueError(f"max_points must be an int >= 4, received max_points={max_points!r}")
        self.run, self.key, self.max_points = run, key, max_points
        self.start, self.end, self.window = start, end, window
        self.step, self.value, self.wall = _EMPTY_I, _EMPTY_F, _EMPTY_F
        self.last_step: int | None = None  # the last step read from the store
        self.last_value: float | None = None  # its value (the latest-values table shows it)
        self.width = 0.0
        self.nonfinite: list[tuple[int, float]] = []
        self.reads = 0  # store reads made (for tests and the benchmark)
        self._folded = 0  # the points held the last fold left (each one of a bucket's extremes)
        self._tail = 64

    def __len__(self) -> int:
        return len(self.step)

    def _lower(self, last: int | None) -> int | None:
        if self.window is not None and last is not None:
            lo = last - self.window + 1
            return lo if self.start is None else max(lo, self.start)
        return self.start

    def load(self, last_hint: int | None = None) -> bool:
        """(Re)read the series, downsampled by the store. True when it holds points."""
        if self.window is not None and last_hint is None:
            tail = self.run.tail(self.key, 1)
            last_hint = int(tail.step.iloc[-1]) if len(tail) else None
        self.reads += 1
        df = self.run.metrics(
            self.key, max_points=self.max_points, start=self._lower(last_hint), end=self.end
        )
        self._set(
            df.step.to_numpy(np.int64), df.value.to_numpy(np.float64), df.wall_time.to_numpy(np.float64)
        )
        bad = ~np.isfinite(self.value)
        if bad.any():  # a finished run opened later: its NaNs are seen here, never by update()
            self.nonfinite += list(zip(self.step[bad].tolist(), self.value[bad].tolist()))
        self.width, self._folded = 0.0, 0
        self.last_step = int(self.step[-1]) if len(self.step) else None
        self.last_value = float(self.value[-1]) if len(self.step) else None
        if self.window is not None and self.last_step is not None:
            self._trim()
        self._fold()
        return len(self.step) > 0

    def update(self, last_hint: int | None = None) -> bool:
        """Read the points after the last step held; True when something changed.

        ``last_hint``: the run's last step, when known; a gap wider than a few times ``max_points``
        (a tab hidden for an hour) is read downsampled rather than row by row.
        """
        if self.last_step is None:
            return self.load(last_hint)
        if self.end is not None and self.last_step >= self.end:
            return False
        if last_hint is not None and last_hint - self.last_step > 4 * self.max_points:
            return self.load(last_hint)
        self.reads += 1
        df = self._new_rows()
        return self._append(
            df.step.to_numpy(np.int64), df.value.to_numpy(np.float64), df.wall_time.to_numpy(np.float64)
        )

    def needs_read(self, last_hint: int | None = None) -> bool:
        """True when :meth:`update` must read the store itself rather than be fed: nothing held yet,
        or a gap too wide to take point by point."""
        if self.last_step is None:
            return True
        return last_hint is not None and last_hint - self.last_step > 4 * self.max_points

    def feed(self, step: np.ndarray, value: np.ndarray, wall: np.ndarray) -> bool:
        """Take the points a run-wide read found (``Run.points_since``, step-ordered): those after
        the last step held, up to ``end``, are appended as :meth:`update` would have read them. Only
        for a series that holds points (see :meth:`needs_read`). True when something changed."""
        if self.end is not None and self.last_step >= self.end:
            return False
        lo = int(np.searchsorted(step, self.last_step, side="right"))
        hi = len(step) if self.end is None else int(np.searchsorted(step, self.end, side="right"))
        return self._append(step[lo:hi], value[lo:hi], wall[lo:hi])

    def _append(self, step: np.ndarray, value: np.ndarray, wall: np.ndarray) -> bool:
        if not len(step):
            return False
        bad = ~np.isfinite(value)
        if bad.any():
            self.nonfinite += list(zip(step[bad].tolist(), value[bad].tolist()))
        self._set(
            np.concatenate([self.step, step]),
            np.concatenate([self.value, value]),
            np.concatenate([self.wall, wall]),
        )
        self.last_step, self.last_value = int(step[-1]), float(value[-1])
        if self.window is not None:
            self._trim()
        self._fold()
        return True

    def _new_rows(self):
        """The rows after ``last_step``: the series' last ``TAIL`` rows (one index range read, however
        long the series), or, when more than that arrived since the last read, a range read."""
        if self.end is None:
            n = self._tail
            tail = self.run.tail(self.key, n)
            new = int((tail.step.to_numpy() > self.last_step).sum())
            # ask for about twice what arrived last time: a refresh reads a few dozen rows
            self._tail = min(TAIL, max(32, 2 * new + 16))
            if new < len(tail) or len(tail) < n:
                return tail.iloc[len(tail) - new :]
        return self.run.metrics(self.key, start=self.last_step + 1, end=self.end)

    def _set(self, step, value, wall) -> None:
        self.step, self.value, self.wall = step, value, wall

    def _trim(self) -> None:
        lo = self._lower(self.last_step)
        if lo is not None and len(self.step) and self.step[0] < lo:
            i = int(np.searchsorted(self.step, lo))
            self._set(self.step[i:], self.value[i:], self.wall[i:])
            self._folded = max(0, self._folded - i)

    def _fold(self) -> None:
        n = len(self.step)
        if n <= self.max_points:
            return
        x = self.step.astype(np.float64)
        w, done = self.width, self._folded
        if w and 0 < done <= n and math.floor(x[-1] / w) - math.floor(x[0] / w) < self.max_points // 2:
            # the width still fits: the points before the last bucket folded are one bucket's extremes
            # each and stay; only that bucket and the new points are folded (a tick's cost, not 2,000)
            i0 = int(np.searchsorted(x, math.floor(x[done - 1] / w) * w))
            lo, hi = bucket_extremes(np.floor(x[i0:] / w).astype(np.int64), self.value[i0:], finite_only=True)
            keep = np.concatenate([np.arange(i0), i0 + np.unique(np.concatenate([lo, hi]))])
        else:
            keep, self.width = min_max_indices(x, self.value, self.max_points, w)
        self._set(self.step[keep], self.value[keep], self.wall[keep])
        self._folded = len(self.step)


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with TensorBoard's debiasing; NaN/inf points are skipped (kept as NaN)."""
    if weight <= 0 or not len(values):
        return values
    out = np.full(len(values), np.nan)
    last, num = 0.0, 0
    lo, hi = math.inf, -math.inf
    for i, v in enumerate(values.tolist()):
        if not math.isfinite(v):
            continue
        last = last * weight + (1 - weight) * v
        num += 1
        lo, hi = min(lo, v), max(hi, v)
        # an average lies within the values averaged: the clamp removes the rounding of the debiasing,
        # which turned a constant series into 1e-18 noise that the y axis then magnified
        out[i] = min(hi, max(lo, last / (1 - weight**num)))
    return out


def epoch_axis(steps: np.ndarray, epoch_steps: np.ndarray, epoch_values: np.ndarray) -> np.ndarray:
    """Fractional epochs for ``steps``, from the run's ``epoch`` series.

    Integer epochs (Lightning, Keras: the epoch of each step) become ``e + fraction of the epoch's
    steps done``; fractional ones (HF) are interpolated as they are.
    """
    ok = np.isfinite(epoch_values)
    es, ev = epoch_steps[ok], epoch_values[ok]
    if not len(es):
        return np.full(len(steps), np.nan)
    if not np.all(np.equal(np.mod(ev, 1), 0)):
        return np.interp(steps, es, ev)
    epochs = np.unique(ev)
    first = np.array([es[ev == e].min() for e in epochs], dtype=np.float64)
    # where each epoch ends: the next epoch's first step; the last epoch gets the previous one's length
    lengths = np.diff(first)
    tail = lengths[-1] if len(lengths) else max(1.0, float(es[ev == epochs[-1]].max() - first[-1] + 1))
    edges = np.r_[first, first[-1] + tail]
    idx = np.clip(np.searchsorted(first, steps, side="right") - 1, 0, len(epochs) - 1)
    frac = (steps - edges[idx]) / np.maximum(edges[idx + 1] - edges[idx], 1.0)
    return epochs[idx] + np.clip(frac, 0.0, 0.999)


def nice_ticks(lo: float, hi: float, count: int = 6) -> np.ndarray:
    """About ``count`` round values (1, 2, 2.5 or 5 times a power of ten apart) within [lo, hi]."""
    raw = (hi - lo) / max(1, count - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = min(
        (m * mag for m in (0.5, 1.0, 2.0, 2.5, 5.0, 10.0)),
        key=lambda st: (abs((hi - lo) / st + 1 - count), -st),
    )
    first = math.ceil(lo / step - 1e-9) * step
    ticks = np.arange(first, hi + step * 1e-9, step)
    return np.round(ticks, 12)
