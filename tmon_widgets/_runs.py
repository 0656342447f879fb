"""What the Monitor knows about each run it shows, refreshed once per tick (one query per run)."""

from __future__ import annotations

import math
import time

import numpy as np

from tmon_core.events import COMPLETED, FAILED, INTERRUPTED, RUNNING
from tmon_core.store.run import steps_done

#: keys read (in this order) to measure throughput: the first one the run records every step
RATE_KEYS = ("loss", "step_time", "lr")
#: the seconds of recent points the throughput is measured over
RATE_WINDOW = 20.0
FINAL = (COMPLETED, FAILED, INTERRUPTED)


class Polled:
    """A table of one run read as it grows (``Run.events_since`` and the like: each read costs what was
    recorded since the last): :attr:`frame` holds every row so far."""

    def __init__(self, read_since, order: tuple[str, str]):
        self._read_since, self._order = read_since, list(order)
        self._cursor = None
        self.frame = None

    def read(self):
        """Add the rows recorded since the last read to :attr:`frame`; returns them (a DataFrame)."""
        self._cursor, new = self._read_since(self._cursor)
        if self.frame is None or not len(self.frame):
            self.frame = new
        elif len(new):
            # a row that a concurrent writer made visible late goes where its time puts it
            late = float(new[self._order[0]].min()) < float(self.frame[self._order[0]].max())
            import pandas as pd

            both = pd.concat([self.frame, new], ignore_index=True)
            self.frame = both.sort_values(self._order, ignore_index=True, kind="stable") if late else both
        return new


class RunState:
    """One run as the Monitor sees it: its row, its control policy, its throughput."""

    def __init__(self, run, color: str):
        self.run = run
        self.id = run.id
        self.color = color
        self.info: dict = {}
        self.steps_per_s: float | None = None
        self.epoch: float | None = None
        self._rate_key: str | None = None
        self._recent: tuple[np.ndarray, np.ndarray] | None = None  # (steps, walls) of the rate key, newest
        self.events = Polled(run.events_since, ("wall_time", "id"))  # ``.frame``: ``Run.events()``'s
        self.samples = Polled(run.samples_since, ("wall_time", "id"))  # host samples, for the Hardware tab
        self.gpu_samples = Polled(run.gpu_samples_since, ("wall_time", "gpu"))
        self.refresh()

    # --------------------------------------------------------------- the run row
    def refresh(self) -> None:
        self.info = self.run.info()

    @property
    def name(self) -> str:
        return self.info.get("name") or self.id

    @property
    def status(self) -> str:
        return self.info.get("status", "?")

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def last_step(self) -> int | None:
        return self.info.get("last_step")

    @property
    def total_steps(self) -> int | None:
        return self.info.get("total_steps")

    @property
    def config(self) -> dict:
        return self.info.get("config") or {}

    @property
    def control(self) -> dict:
        """The run's control policy as the callback described it (level, params, presets, schedule)."""
        return self.config.get("control") or {}

    @property
    def level(self) -> str:
        return self.control.get("level") or "off"

    def elapsed(self, now: float | None = None) -> float | None:
        start = self.info.get("created_at")
        if start is None:
            return None
        end = self.info.get("ended_at")
        if end is None and not self.running:
            end = self.info.get("heartbeat_at")
        return (end or now or time.time()) - start

    # --------------------------------------------------------------- throughput
    def take_points(self, fed: dict) -> None:
        """The points a run-wide read brought (``MetricsTab.fed``): the newest of the rate key are kept,
        so :meth:`measure_rate` needs no read of its own."""
        if self._rate_key is None:
            self._rate_key = next((k for k in RATE_KEYS if k in fed), None)
        got = fed.get(self._rate_key) if self._rate_key else None
        if got is None or not len(got[0]):
            return
        step, _, wall = got
        if self._recent is not None:
            step, wall = np.concatenate([self._recent[0], step]), np.concatenate([self._recent[1], wall])
        self._recent = step[-256:], wall[-256:]

    def measure_rate(self, keys: list[str] | None = None) -> None:
        """Steps per second over the last ``RATE_WINDOW`` s of a per-step key: from the points the
        charts' reads brought, else one indexed read."""
        if not self.running:
            self.steps_per_s = None
            return
        if self._rate_key is None:
            have = set(keys) if keys is not None else set(self.run.metric_keys())
            self._rate_key = next((k for k in RATE_KEYS if k in have), None)
            if self._rate_key is None:
                return
        if self._recent is not None and len(self._recent[0]) >= 2:
            step, wall = self._recent[0].astype(np.float64), self._recent[1]
        else:
            try:
                tail = self.run.tail(self._rate_key, 256)
            except KeyError:
                return
            if len(tail) < 2:
                return
            wall = tail.wall_time.to_numpy(np.float64)
            step = tail.step.to_numpy(np.float64)
        recent = wall >= wall[-1] - RATE_WINDOW
        w, s = wall[recent], step[recent]
        if len(w) >= 2 and w[-1] > w[0] and s[-1] > s[0]:
            self.steps_per_s = float((s[-1] - s[0]) / (w[-1] - w[0]))

    @property
    def batch_size(self) -> int | None:
        cfg = self.config
        for k in ("batch_size", "per_device_train_batch_size", "train_batch_size"):
            v = cfg.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
                return int(v)
        return None

    def samples_per_s(self) -> float | None:
        bs = self.batch_size
        if bs is None or self.steps_per_s is None:
            return None
        accumulate = (
            self.config.get("accumulate_grad_batches") or self.config.get("gradient_accumulation_steps") or 1
        )
        world = self.config.get("world_size") or 1
        try:
            return self.steps_per_s * bs * float(accumulate) * float(world)
        except (TypeError, ValueError):
            return None

    def eta(self) -> float | None:
        total, last = self.total_steps, self.last_step
        if not self.running or not total or last is None or not self.steps_per_s:
            return None
        left = total - steps_done(last, self.info.get("framework"))  # total counts steps, not indices
        return left / self.steps_per_s if left > 0 and math.isfinite(self.steps_per_s) else None
