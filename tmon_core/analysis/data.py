"""Everything the rules read about one run, loaded once through the query API.

Series are read whole up to ``RAW_STEPS`` steps; beyond that the loss is still read whole (the
first NaN step must be exact), other series as min/max summaries of ``DOWNSAMPLED`` points (they
keep every extreme, so peaks and stalls still show) and their steady-state statistics come from
the last ``TAIL`` points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .. import events as ev
from .. import keys as K
from .detect.hardware import HOST_COLUMNS, GpuMemory, HostMemory
from .model import Thresholds
from .terms import framework_of, terms_for

RAW_STEPS = 200_000
DOWNSAMPLED = 20_000
TAIL = 20_000
LOSS_KEYS = (K.LOSS, "train_loss_step", "train_loss", "loss_step")
#: validation loss keys, in the order they are looked for (then any key with val/eval and loss)
VAL_LOSS_KEYS = ("val_loss", "eval_loss", "val_loss_epoch", "validation_loss", "valid_loss", "test_loss")


@dataclass
class Series:
    key: str
    steps: np.ndarray  # int64
    values: np.ndarray  # float64, NaN where NaN was logged
    walls: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)

    def finite(self) -> Series:
        ok = np.isfinite(self.values)
        return Series(self.key, self.steps[ok], self.values[ok], self.walls[ok])


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _int(v: Any) -> int | None:
    f = _num(v)
    return int(f) if f is not None and f == int(f) else None


class RunData:
    def __init__(self, run, thresholds: Thresholds):
        self.run = run
        self.t = thresholds
        self.info = run.info()
        self.config: dict = self.info.get("config") or {}
        self.framework = framework_of(self.info)
        self.terms = terms_for(self.framework, self.config)
        self.status: str = self.info["status"]
        self.keys = set(run.metric_keys())
        self.last_step: int | None = self.info.get("last_step")
        self.big = (self.last_step or 0) > RAW_STEPS
        self._series: dict[tuple, Series | None] = {}

    # ------------------------------------------------------------------ series
    def series(self, key: str, *, full: bool = False, tail: bool = False) -> Series | None:
        """Metric ``key`` (None when the run has none): whole, or for long runs downsampled
        (``full`` forces the whole series, ``tail`` gives the last points instead)."""
        if key not in self.keys:
            return None
        mode = "full" if full or not self.big else "tail" if tail else "down"
        cache_key = (key, mode)
        if cache_key not in self._series:
            if mode == "full":
                df = self.run.metrics(key)
            elif mode == "tail":
                df = self.run.tail(key, TAIL)
            else:
                df = self.run.metrics(key, max_points=DOWNSAMPLED)
            self._series[cache_key] = Series(
                key,
                df.step.to_numpy(np.int64),
                df.value.to_numpy(np.float64),
                df.wall_time.to_numpy(np.float64),
            )
        return self._series[cache_key]

    @cached_property
    def loss(self) -> Series | None:
        for key in LOSS_KEYS:
            s = self.series(key, full=True)
            if s is not None and len(s):
                return s
        return None

    @cached_property
    def val_loss(self) -> Series | None:
        candidates = [k for k in VAL_LOSS_KEYS if k in self.keys]
        candidates += sorted(
            k
            for k in self.keys
            if k not in candidates
            and "loss" in k.lower()
            and any(p in k.lower() for p in ("val", "eval", "valid"))
        )
        for key in candidates:
            s = self.series(key)
            if s is not None and len(s):
                return s
        return None

    @cached_property
    def lr(self) -> Series | None:
        return self.series(K.LR)

    def lr_at(self, step: int) -> float | None:
        """The learning rate in effect at ``step`` (the last one recorded at or before it)."""
        s = self.lr
        if s is None or not len(s):
            return None
        i = int(np.searchsorted(s.steps, step, side="right")) - 1
        return _num(s.values[max(i, 0)])

    @cached_property
    def timing(self) -> dict[str, np.ndarray] | None:
        """Per step: ``step``, ``step_time`` and ``data_time`` (NaN where not recorded), steady state."""
        st = self.series(K.STEP_TIME, tail=True)
        if st is None or not len(st):
            return None
        dt = self.series(K.DATA_TIME, tail=True)
        data = np.full(len(st), np.nan)
        if dt is not None and len(dt):
            idx = np.searchsorted(dt.steps, st.steps)
            idx_c = np.clip(idx, 0, len(dt) - 1)
            hit = dt.steps[idx_c] == st.steps
            data[hit] = dt.values[idx_c[hit]]
        return {"step": st.steps, "step_time": st.values, "data_time": data, "wall": st.walls}

    # ------------------------------------------------------------------ tables
    @cached_property
    def samples(self):
        return self.run.samples()

    @cached_property
    def gpu(self):
        return self.run.gpu_samples()

    @cached_property
    def events(self):
        return self.run.events()

    @cached_property
    def logs(self):
        return self.run.logs()

    @cached_property
    def checkpoints(self):
        return self.run.checkpoints()

    def events_of(self, *types: str):
        e = self.events
        return e[e.type.isin(types)] if not e.empty else e

    # ------------------------------------------------------------------ configuration
    @cached_property
    def callbacks(self) -> list[dict]:
        """The framework callbacks the run had, with their settings (``events.CONFIG_CALLBACKS``; empty
        for runs recorded before adapters wrote it)."""
        cbs = self.config.get(ev.CONFIG_CALLBACKS)
        return [c for c in cbs if isinstance(c, dict)] if isinstance(cbs, list) else []

    @cached_property
    def end_reason(self) -> str | None:
        """Why the fit ended (``train_end``'s data["reason"], one of ``events.END_REASONS``), when recorded."""
        e = self.events_of(ev.TRAIN_END)
        for data in reversed(list(e.data)) if not e.empty else ():
            if isinstance(data, dict) and data.get("reason") in ev.END_REASONS:
                return data["reason"]
        return None

    @cached_property
    def batch_size(self) -> int | None:
        return _int(self.terms.batch_size().current)

    @cached_property
    def accumulation(self) -> int:
        return _int(self.terms.accumulation().current) or 1

    @cached_property
    def precision(self) -> str:
        p = self.config.get("precision")
        return str(p) if p is not None else "32-true"

    @cached_property
    def fp16(self) -> bool:
        return self.precision.startswith("16") or self.precision in ("fp16", "float16", "mixed_float16")

    @cached_property
    def full_precision(self) -> bool:
        return (
            self.precision in ("32-true", "32", "float32", "64-true", "64", "float64")
            or self.precision == "None"
        )

    @cached_property
    def num_workers(self) -> int | None:
        return _int(self.terms.num_workers().current)

    @cached_property
    def num_parameters(self) -> int | None:
        return _int(self.config.get("num_parameters"))

    # ------------------------------------------------------------------ time
    @cached_property
    def duration(self) -> float:
        end = self.info.get("ended_at") or self.info.get("heartbeat_at") or time.time()
        return max(0.0, end - self.info["created_at"])

    @cached_property
    def steps_done(self) -> int | None:
        from ..store.run import steps_done  # HF numbers its steps from 1, the others from 0

        return steps_done(self.last_step, self.info.get("framework"))

    # ------------------------------------------------------------------ hardware
    @cached_property
    def gpu_peaks(self) -> list[dict]:
        """Per GPU: name, peak memory used (NVML) and total, peak torch allocation, mean utilization."""
        g = self.gpu
        out = []
        if g.empty:
            return out
        for (host, node, gpu), part in g.groupby(["host", "node_rank", "gpu"], dropna=False):
            mem = GpuMemory(self.t.memory_warning, self.t.memory_critical)
            c = {
                k: part[k].to_numpy(float, na_value=np.nan)
                for k in ("mem_used", "mem_total", "wall_time", "torch_max_allocated", "util_percent")
            }
            mem.update(
                c["mem_used"],
                c["mem_total"],
                c["wall_time"],
                torch_max_allocated=c["torch_max_allocated"],
                util_percent=c["util_percent"],
                name=part["name"].dropna().tolist(),
            )
            out.append({"host": host, "node_rank": int(node), "gpu": int(gpu), **mem.peak()})
        return out

    @cached_property
    def gpu_peak(self) -> dict | None:
        """The GPU whose memory came closest to full."""
        peaks = [p for p in self.gpu_peaks if p["peak_fraction"] is not None]
        return max(peaks, key=lambda p: p["peak_fraction"]) if peaks else None

    @cached_property
    def host_peak(self) -> dict | None:
        s = self.samples
        if s.empty:
            return None
        mem = HostMemory(self.t.memory_warning, self.t.memory_critical)
        mem.update({c: s[c].to_numpy(float, na_value=np.nan) for c in HOST_COLUMNS if c in s})
        return mem.peak()

    @cached_property
    def _host_columns(self) -> dict[str, np.ndarray] | None:
        """The host samples as numpy columns, read once: ``memory_at`` runs for every log entry."""
        s = self.samples
        if s.empty:
            return None
        cols = (
            "wall_time",
            "ram_used",
            "ram_total",
            "swap_used",
            "proc_rss",
            "children_rss",
            "children_count",
            "cpu_percent",
        )
        return {c: s[c].to_numpy(float, na_value=np.nan) for c in cols}

    @cached_property
    def _gpu_rows(self) -> tuple[np.ndarray, list] | None:
        """The GPU samples' distinct times and, for each, its rows as dicts."""
        g = self.gpu
        if g.empty:
            return None
        walls = g.wall_time.to_numpy(float)
        times, first = np.unique(walls, return_index=True)
        rows: dict[float, list] = {}
        for r in g.itertuples():
            rows.setdefault(float(r.wall_time), []).append(
                {
                    "gpu": int(r.gpu),
                    "mem_used_bytes": _num(r.mem_used),
                    "mem_total_bytes": _num(r.mem_total),
                    "util_percent": _num(r.util_percent),
                    "torch_allocated_bytes": _num(r.torch_allocated),
                }
            )
        return times, [rows[float(t)] for t in times]

    def memory_at(self, wall_time: float | None) -> dict | None:
        """The hardware sample nearest ``wall_time``: host RAM, swap, process and workers' RSS, and
        each GPU's memory and utilization then; ``offset_s`` is how far the sample is from that time."""
        if wall_time is None:
            return None
        out: dict[str, Any] = {}
        h = self._host_columns
        if h is not None:
            walls = h["wall_time"]
            i = _nearest(walls, wall_time)
            total = _num(h["ram_total"][i])
            used = _num(h["ram_used"][i])
            out.update(
                {
                    "sample_time": float(walls[i]),
                    "offset_s": round(float(walls[i] - wall_time), 3),
                    "ram_used_bytes": used,
                    "ram_total_bytes": total,
                    "ram_fraction": used / total if total and used is not None else None,
                    "swap_used_bytes": _num(h["swap_used"][i]),
                    "proc_rss_bytes": _num(h["proc_rss"][i]),
                    "workers_rss_bytes": _num(h["children_rss"][i]),
                    "workers": _int(h["children_count"][i]),
                    "cpu_percent": _num(h["cpu_percent"][i]),
                }
            )
        g = self._gpu_rows
        if g is not None:
            times, rows = g
            i = _nearest(times, wall_time)
            out["gpus"] = [dict(r) for r in rows[i]]
            out.setdefault("sample_time", float(times[i]))
            out.setdefault("offset_s", round(float(times[i] - wall_time), 3))
        return out or None

    # ------------------------------------------------------------------ what the logs and events say
    @cached_property
    def log_entries(self) -> list[dict]:
        from .rules.logs import collect

        return collect(self)

    @cached_property
    def ooms(self) -> list[dict]:
        """Every sign of an out-of-memory error: oom events, the run's error, log lines."""
        return [e for e in self.log_entries if e["category"] == "oom"]

    @cached_property
    def failure(self) -> dict | None:
        err = self.info.get("error")
        return err if isinstance(err, dict) else None

    def failed_step(self) -> int | None:
        e = self.events_of(ev.EXCEPTION, ev.OOM)
        if not e.empty and e.step.notna().any():
            return int(e.step.dropna().iloc[-1])
        return self.last_step


def _nearest(sorted_values: np.ndarray, x: float) -> int:
    i = int(np.searchsorted(sorted_values, x))
    if i <= 0:
        return 0
    if i >= len(sorted_values):
        return len(sorted_values) - 1
    return i if sorted_values[i] - x < x - sorted_values[i - 1] else i - 1
