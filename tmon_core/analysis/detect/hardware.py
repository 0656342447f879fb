"""Memory, incremental: the host's and each GPU's peaks, and when they first crossed the warning and
critical levels.

Fed the hardware samples as they come (``update`` with the new rows only), ``peak()`` is what a
pass over all of them gives: the first sample at the highest fraction, the largest process and
worker RSS, swap at the start and at its peak, the mean CPU. The report reads the peaks; live
alerts read ``level()``.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Detection, _conf

HOST_COLUMNS = (
    "wall_time",
    "ram_used",
    "ram_total",
    "swap_used",
    "proc_rss",
    "children_rss",
    "children_count",
    "cpu_percent",
    "step",
)


def _col(cols: dict, name: str, n: int) -> np.ndarray:
    v = cols.get(name)
    return np.full(n, np.nan) if v is None else np.asarray(v, dtype=np.float64).reshape(-1)


def _opt(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


class _Level:
    """The first step and time a fraction reached the warning and the critical level."""

    def __init__(self, warning: float, critical: float) -> None:
        self.warning, self.critical = warning, critical
        self.first: dict[str, tuple[int | None, float | None]] = {}

    def update(self, frac: np.ndarray, steps: np.ndarray, walls: np.ndarray) -> None:
        for name, limit in (("warning", self.warning), ("critical", self.critical)):
            if name in self.first:
                continue
            hit = np.flatnonzero(frac >= limit)
            if len(hit):
                i = int(hit[0])
                self.first[name] = (None if math.isnan(steps[i]) else int(steps[i]), _opt(walls[i]))

    def detection(self, name: str, peak_fraction: float, evidence: dict) -> Detection | None:
        level = "critical" if "critical" in self.first else "warning" if "warning" in self.first else None
        if level is None:
            return None
        step, wall = self.first[level]
        limit = self.critical if level == "critical" else self.warning
        return Detection(
            name,
            step,
            _conf(peak_fraction / limit),
            {**evidence, "level": level, "first_step": step, "first_wall_time": wall},
        )


class HostMemory:
    """The host's RAM, swap and the training's RSS, over the samples of one node."""

    def __init__(self, warning: float = 0.85, critical: float = 0.95) -> None:
        self.samples = 0
        self._best: dict | None = None
        self._frac = -math.inf
        self._proc = self._workers = self._per_worker = self._swap_peak = -math.inf
        self._kids = 0.0
        self._swap_start: float | None = None
        self._cpu_sum, self._cpu_n = 0.0, 0
        self._level = _Level(warning, critical)

    def update(self, cols: dict) -> None:
        """``cols``: arrays of the new samples, by the names of ``HOST_COLUMNS`` (missing = NaN)."""
        n = len(next((np.asarray(v).reshape(-1) for v in cols.values() if v is not None), ()))
        if not n:
            return
        c = {k: _col(cols, k, n) for k in HOST_COLUMNS}
        self.samples += n
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = c["ram_used"] / c["ram_total"]
        ok = ~np.isnan(frac)
        if ok.any():
            i = int(np.flatnonzero(ok)[np.argmax(frac[ok])])
            if frac[i] > self._frac:  # the first sample at the highest fraction
                self._frac = float(frac[i])
                self._best = {k: c[k][i] for k in HOST_COLUMNS}
            self._level.update(np.where(ok, frac, -np.inf), c["step"], c["wall_time"])
        for attr, col in (("_proc", "proc_rss"), ("_workers", "children_rss"), ("_swap_peak", "swap_used")):
            v = c[col][~np.isnan(c[col])]
            if len(v):
                setattr(self, attr, max(getattr(self, attr), float(v.max())))
        kids = np.where(np.isnan(c["children_count"]), 0.0, c["children_count"])
        self._kids = max(self._kids, float(kids.max()))
        with np.errstate(divide="ignore", invalid="ignore"):
            each = c["children_rss"] / np.where(kids > 0, kids, np.nan)
        each = each[~np.isnan(each)]
        if len(each):
            self._per_worker = max(self._per_worker, float(each.max()))
        swap = c["swap_used"][~np.isnan(c["swap_used"])]
        if self._swap_start is None and len(swap):
            self._swap_start = float(swap[0])
        cpu = c["cpu_percent"][~np.isnan(c["cpu_percent"])]
        self._cpu_sum += float(cpu.sum())
        self._cpu_n += len(cpu)

    def peak(self) -> dict | None:
        """The samples at their highest RAM use, with the run's other peaks; None without RAM figures."""
        b = self._best
        if b is None:
            return None
        fin = lambda v: None if v == -math.inf else v  # noqa: E731
        return {
            "samples": self.samples,
            "ram_used_bytes": float(b["ram_used"]),
            "ram_total_bytes": float(b["ram_total"]),
            "fraction": self._frac,
            "wall_time": float(b["wall_time"]),
            "step": None if math.isnan(b["step"]) else int(b["step"]),
            "proc_rss_bytes": _opt(b["proc_rss"]),
            "workers_rss_bytes": _opt(b["children_rss"]),
            "workers": 0 if math.isnan(b["children_count"]) else int(b["children_count"]),
            "peak_proc_rss_bytes": fin(self._proc),
            "peak_workers_rss_bytes": fin(self._workers),
            "max_workers": int(self._kids),
            "per_worker_rss_bytes": fin(self._per_worker),
            "swap_start_bytes": self._swap_start,
            "swap_peak_bytes": fin(self._swap_peak),
            "cpu_mean_percent": self._cpu_sum / self._cpu_n if self._cpu_n else None,
        }

    def level(self) -> Detection | None:
        """``host_memory`` once RAM reached the warning level: its ``level`` (warning or critical) and the
        first step and time it did so."""
        p = self.peak()
        return (
            None
            if p is None
            else self._level.detection(
                "host_memory",
                p["fraction"],
                {
                    "fraction": p["fraction"],
                    "ram_used_bytes": p["ram_used_bytes"],
                    "ram_total_bytes": p["ram_total_bytes"],
                },
            )
        )


class GpuMemory:
    """One GPU's memory and utilization (NVML and torch's allocator), over its samples."""

    def __init__(self, warning: float = 0.85, critical: float = 0.95) -> None:
        self.samples = 0
        self.name: str | None = None
        self._peak = -math.inf
        self._peak_at: float | None = None
        self._total = -math.inf
        self._alloc = -math.inf
        self._util_sum, self._util_n = 0.0, 0
        self._level = _Level(warning, critical)

    def update(
        self,
        mem_used,
        mem_total,
        wall_time,
        *,
        torch_max_allocated=None,
        util_percent=None,
        name=None,
        step=None,
    ) -> None:
        used = np.asarray(mem_used, dtype=np.float64).reshape(-1)
        n = len(used)
        if not n:
            return
        self.samples += n
        total = _col({"t": mem_total}, "t", n)
        walls = _col({"w": wall_time}, "w", n)
        if self.name is None and name is not None:
            self.name = next((x for x in name if isinstance(x, str)), None)
        ok = ~np.isnan(used)
        if ok.any():
            i = int(np.flatnonzero(ok)[np.argmax(used[ok])])
            if used[i] > self._peak:
                self._peak, self._peak_at = float(used[i]), float(walls[i])
        t = total[~np.isnan(total)]
        if len(t):
            self._total = max(self._total, float(t.max()))
        a = _col({"a": torch_max_allocated}, "a", n)
        a = a[~np.isnan(a)]
        if len(a):
            self._alloc = max(self._alloc, float(a.max()))
        u = _col({"u": util_percent}, "u", n)
        u = u[~np.isnan(u)]
        self._util_sum += float(u.sum())
        self._util_n += len(u)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(total > 0, used / total, -np.inf)
        self._level.update(np.where(np.isnan(frac), -np.inf, frac), _col({"s": step}, "s", n), walls)

    def peak(self) -> dict:
        peak = None if self._peak == -math.inf else self._peak
        total = None if self._total == -math.inf else self._total
        return {
            "name": self.name,
            "samples": self.samples,
            "peak_mem_bytes": peak,
            "mem_total_bytes": total,
            "peak_at": self._peak_at if peak is not None else None,
            "peak_fraction": peak / total if peak is not None and total and total > 0 else None,
            "torch_peak_allocated_bytes": None if self._alloc == -math.inf else self._alloc,
            "mean_util_percent": self._util_sum / self._util_n if self._util_n else None,
        }

    def level(self) -> Detection | None:
        """``gpu_memory`` once this GPU's memory reached the warning level (see ``HostMemory.level``)."""
        p = self.peak()
        if p["peak_fraction"] is None:
            return None
        return self._level.detection(
            "gpu_memory",
            p["peak_fraction"],
            {
                "fraction": p["peak_fraction"],
                "peak_mem_bytes": p["peak_mem_bytes"],
                "mem_total_bytes": p["mem_total_bytes"],
            },
        )
