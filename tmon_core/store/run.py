"""``Run``: read access to one run of a store (its metadata, metrics and side tables).

>>> import os, tempfile
>>> from tmon_core import Recorder, open_store
>>> path = os.path.join(tempfile.mkdtemp(), "tmon.db")
>>> with Recorder(path, run_name="doc", flush_interval=0.1) as rec:
...     for step in range(10_000):
...         rec.log({"train_loss": 1.0 / (step + 1)}, step)
>>> store = open_store(path)
>>> run = store.latest_run()
>>> run.metric_keys()
['train_loss']
>>> df = run.metrics("train_loss", max_points=200)   # each bucket's smallest and largest point
>>> len(df) <= 200, float(df.value.max()), int(df.step.iloc[-1])   # the spike and the newest point kept
(True, 1.0, 9999)
>>> run.tail("train_loss", 2).step.tolist()
[9998, 9999]
>>> store.close()

A run's metric points are read by ``points``; its control requests are made by ``RunControl``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select, text

from ..events import LOST, RUNNING
from . import points
from .run_control import RunControl
from .schema import CheckpointRow, EventRow, GpuSampleRow, LogRow, RunRow, SampleRow


def _pd():
    import pandas as pd

    return pd


def loads(text: str | None) -> Any:
    """A stored JSON column, decoded (None for NULL or empty)."""
    return json.loads(text) if text else None


#: frameworks whose recorded steps start at 1: HF records its ``global_step``, 1 after the first
#: optimizer step; Lightning, Keras and tmon's own loop count from 0
ONE_BASED_STEPS = frozenset({"hf"})


def steps_done(last_step: int | float | None, framework: str | None) -> int | None:
    """How many steps a run recorded up to ``last_step``, counted the way its framework numbers them
    (the figure ``tmon show``, ``tmon runs`` and the report print)."""
    if last_step is None or last_step != last_step:  # (NaN: pandas' missing value)
        return None
    return int(last_step) + (0 if framework in ONE_BASED_STEPS else 1)


def effective_status(
    status: str, heartbeat_at: float | None, timeout: float, now: float | None = None
) -> str:
    """A running run whose heartbeat is older than its timeout reads as ``lost``."""
    if status == RUNNING and heartbeat_at is not None and (now or time.time()) - heartbeat_at > timeout:
        return LOST
    return status


_RUN_COLUMNS = tuple(RunRow.__table__.columns.keys())
_EMPTY_FRAMES: dict[tuple, object] = {}
#: seconds of rows ``Run.events_since`` and the like read again (see there)
OVERLAP_S = 120.0


@dataclass(frozen=True)
class RowCursor:
    """Where ``Run.events_since`` (``samples_since``, ``gpu_samples_since``) goes on from: the largest
    id and wall time read, and the rows read within ``OVERLAP_S`` of that time (id -> wall time),
    which it reads again and never returns twice."""

    last_id: int = 0
    last_wall: float = 0.0
    recent: dict = field(default_factory=dict)

    def advanced(self, rows: list[dict]) -> RowCursor:
        if not rows:
            return self
        last_wall = max(self.last_wall, max(r["wall_time"] for r in rows))
        recent = {**self.recent, **{r["id"]: r["wall_time"] for r in rows}}
        floor = last_wall - OVERLAP_S
        return RowCursor(
            max(self.last_id, max(r["id"] for r in rows)),
            last_wall,
            {i: w for i, w in recent.items() if w >= floor},
        )


class Run(RunControl):
    """Read access to one run (and, through ``RunControl``, steering it)."""

    def __init__(self, store, run_id: str):
        """``store``: the open ``Store`` the run is read from."""
        self.store = store
        self.id = run_id
        self._series_ids: dict[str, int] = {}  # a run's series only grow: cached, re-read on a miss

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"

    def _row(self) -> dict:
        with self.store.engine.connect() as conn:
            rows = points.fetch(
                conn, f"SELECT {', '.join(_RUN_COLUMNS)} FROM tmon_runs WHERE id = ?", (self.id,)
            )
        if not rows:
            raise KeyError(f"run {self.id!r} is not in {self.store}")
        return dict(zip(_RUN_COLUMNS, rows[0]))

    @property
    def status(self) -> str:
        """running | completed | failed | interrupted | lost (running, but its heartbeat stopped)."""
        r = self._row()
        return effective_status(r["status"], r["heartbeat_at"], r["heartbeat_timeout"])

    @property
    def group(self) -> str | None:
        """The group the run belongs to (a sweep, an experiment), or None."""
        return self._row()["group_name"]

    def info(self) -> dict:
        """Metadata and configuration of the run (config and error decoded from JSON; the group as ``group``)."""
        r = self._row()
        r["group"] = r.pop("group_name")
        r["status"] = effective_status(r["status"], r["heartbeat_at"], r["heartbeat_timeout"])
        r["steps"] = steps_done(r["last_step"], r["framework"])
        r["config"] = loads(r["config"]) or {}
        r["tags"] = loads(r["tags"]) or []
        r["error"] = loads(r["error"])
        return r

    # -------------------------------------------------------------- metrics
    def _series(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            rows = points.fetch(conn, "SELECT key, id FROM tmon_series WHERE run_id = ?", (self.id,))
        self._series_ids = {key: int(sid) for key, sid in rows}
        return dict(self._series_ids)

    def metric_keys(self) -> list[str]:
        return sorted(self._series())

    def _series_id(self, key: str) -> int:
        sid = self._series_ids.get(key)
        if sid is not None:
            return sid
        series = self._series()
        if key not in series:
            known = ", ".join(sorted(series)[:30]) or "none"
            raise KeyError(f"run {self.id} has no metric {key!r}; its metrics: {known}")
        return series[key]

    def metrics(
        self,
        key: str,
        max_points: int | None = None,
        x: str = "step",
        start: float | None = None,
        end: float | None = None,
    ):
        """The points of metric ``key``: a DataFrame with ``step``, ``value`` and ``wall_time``.

        ``max_points`` caps the rows: the range is cut into ``max_points // 2`` buckets and each
        keeps its smallest and largest point, read from the summaries kept at write time (a
        million-point series costs a few hundred rows). ``x`` picks what ``start``/``end`` mean and
        how rows are ordered: ``"step"`` or ``"time"`` (wall-clock seconds).
        """
        if x not in ("step", "time"):
            raise ValueError(f"x must be 'step' or 'time', received x={x!r}")
        if max_points is not None and (not isinstance(max_points, int) or max_points < 2):
            raise ValueError(f"max_points must be an int >= 2 or None, received max_points={max_points!r}")
        sid = self._series_id(key)
        with self.store.engine.connect() as conn:
            s, v, w = points.read(conn, sid, max_points, x, start, end)
        df = self._frame(s, v, w)
        if x == "time":
            if start is not None:
                df = df[df.wall_time >= start]
            if end is not None:
                df = df[df.wall_time <= end]
            df = df.sort_values("wall_time", kind="stable").reset_index(drop=True)
        return df

    def tail(self, key: str, n: int = 100):
        """The last ``n`` points of metric ``key`` (step, value, wall_time), oldest first: the newest
        chunks only, however long the series, what a live chart polls."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, received n={n!r}")
        sid = self._series_id(key)
        with self.store.engine.connect() as conn:
            s, v, w = points.last(conn, sid, n)
        return self._frame(s, v, w)

    def points_since(self, cursor: int | None = None, *, reread_keys: bool = False) -> tuple[int, dict]:
        """What a live view polls: ``(cursor, {key: (steps, values, walls)})``, the points of the run's
        metrics written after ``cursor`` (what an earlier call returned), as numpy arrays, each
        step-ordered. ``cursor=None`` reads no points: it returns the cursor to start from.

        A read costs what was written since the last one, however long the run. The metrics are those
        known when the run's keys were last read (``metric_keys()``, ``latest()``, or
        ``reread_keys=True``): a metric that first appears later is left out until then."""
        series = self._series() if reread_keys or not self._series_ids else dict(self._series_ids)
        with self.store.engine.connect() as conn:
            if cursor is None:
                return points.newest_chunk(conn, series.values()), {}
            got, top = points.since(conn, series.values(), cursor)
        keys = {sid: key for key, sid in series.items()}
        return top, {keys[sid]: arrays for sid, arrays in got.items()}

    def latest(self) -> dict[str, tuple[int, float]]:
        """The last point of every metric: key -> (step, value)."""
        series = self._series()
        with self.store.engine.connect() as conn:
            got = points.last_of_each(conn, series.values())
        return {key: got[sid] for key, sid in sorted(series.items()) if sid in got}

    @staticmethod
    def _frame(steps, values, walls):
        return _pd().DataFrame(
            {
                "step": np.asarray(steps, dtype=np.int64),
                "value": np.asarray(values, dtype=float),
                "wall_time": np.asarray(walls, dtype=float),
            }
        )

    # -------------------------------------------------------------- other tables
    def _table(self, model, order, where=(), json_cols=()):
        cols = [c for c in model.__table__.columns.keys() if c != "run_id"]
        with self.store.engine.connect() as conn:
            q = (
                select(*[model.__table__.c[c] for c in cols])
                .where(model.run_id == self.id, *where)
                .order_by(*order)
            )
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return self._rows_frame(rows, cols, json_cols)

    @staticmethod
    def _rows_frame(rows: list[dict], cols: list[str], json_cols=()):
        if not rows:  # (what a poll finds most of the time: a copy of one built once costs a tenth)
            key = tuple(cols)
            if key not in _EMPTY_FRAMES:
                _EMPTY_FRAMES[key] = Run._rows_frame([{c: None for c in cols}], cols).iloc[:0]
            return _EMPTY_FRAMES[key].copy()
        for r in rows:
            for c in json_cols:
                r[c] = loads(r[c])
        df = _pd().DataFrame(rows, columns=cols)
        for c in ("step", "applied_step"):
            if c in df:
                df[c] = df[c].astype("Int64")  # an integer column that may hold NULL
        return df

    def events(self, type: str | None = None):
        """Events in order: wall_time, step, type, message, data (dict)."""
        where = (EventRow.type == type,) if type else ()
        return self._table(EventRow, (EventRow.wall_time, EventRow.id), where, ("data",))

    def events_since(self, cursor: RowCursor | None = None):
        """What a live view polls: ``(cursor, events)``, the events recorded since ``cursor`` (what an
        earlier call returned; None: all of them), in the frame ``events()`` returns. A read costs
        what was recorded since the last one, however long the run.

        Events are written by more than one process (the run's recorder, ``tmon watch``, a request
        from a notebook): besides the rows with a larger id, those of the last ``OVERLAP_S`` seconds
        are read again, so one that a concurrent writer's commit made visible late (possible on
        PostgreSQL) is still found; the cursor keeps them from being returned twice."""
        return self._since(EventRow, ("wall_time", "id"), cursor, ("data",))

    def samples_since(self, cursor: RowCursor | None = None):
        """``(cursor, samples)``: the host samples recorded since ``cursor``, as ``events_since``
        reads events (each node of a multi-node run writes its own)."""
        return self._since(SampleRow, ("wall_time", "id"), cursor)

    def gpu_samples_since(self, cursor: RowCursor | None = None):
        """``(cursor, gpu samples)``: the per-GPU samples recorded since ``cursor``, as ``events_since``
        reads events."""
        return self._since(GpuSampleRow, ("wall_time", "gpu"), cursor)

    def _since(self, model, order: tuple[str, str], cursor: RowCursor | None, json_cols=()):
        table = model.__tablename__
        cols = [c for c in model.__table__.columns.keys() if c != "run_id"]
        cursor = cursor or RowCursor()
        sel = f"SELECT {', '.join(cols)} FROM {table}"
        with self.store.engine.connect() as conn:
            got = points.fetch(
                conn,
                # each half on its own index: the ids after the last read (``|| ''`` keeps SQLite off the
                # run's index there), the run's recent times
                f"{sel} WHERE id > ? AND run_id || '' = ? UNION {sel} WHERE run_id = ? AND wall_time >= ?",
                (cursor.last_id, self.id, self.id, cursor.last_wall - OVERLAP_S),
            )
        rows = [dict(zip(cols, r)) for r in got if r[0] not in cursor.recent]
        rows.sort(key=lambda r: (r[order[0]], r[order[1]]))
        return cursor.advanced(rows), self._rows_frame(rows, cols, json_cols)

    def samples(self):
        """Host hardware samples: cpu_percent, ram_*, swap_used, proc_rss, children_rss/count (bytes)."""
        return self._table(SampleRow, (SampleRow.wall_time, SampleRow.id))

    def gpu_samples(self):
        """Per-GPU samples: gpu, name, mem_used/total (bytes), util_percent, power_watts, temperature_c,
        torch_allocated/reserved/max_allocated."""
        return self._table(GpuSampleRow, (GpuSampleRow.wall_time, GpuSampleRow.gpu))

    def nodes(self):
        """One row per sampled node (host, node_rank): samples, mean CPU %, peak host RAM used and
        total, peak process RSS, peak dataloader-worker RSS and count, and, with GPUs, their count
        and peak memory used and total (bytes)."""
        pd = _pd()
        s = self.samples()
        cols = [
            "host",
            "node_rank",
            "samples",
            "cpu_percent_mean",
            "ram_used_peak",
            "ram_total",
            "proc_rss_peak",
            "children_rss_peak",
            "children_count_peak",
            "gpus",
            "gpu_mem_used_peak",
            "gpu_mem_total",
        ]
        if s.empty:
            return pd.DataFrame(columns=cols)
        out = (
            s.groupby(["host", "node_rank"], dropna=False)
            .agg(
                samples=("wall_time", "size"),
                cpu_percent_mean=("cpu_percent", "mean"),
                ram_used_peak=("ram_used", "max"),
                ram_total=("ram_total", "max"),
                proc_rss_peak=("proc_rss", "max"),
                children_rss_peak=("children_rss", "max"),
                children_count_peak=("children_count", "max"),
            )
            .reset_index()
        )
        g = self.gpu_samples()
        if g.empty:
            out["gpus"], out["gpu_mem_used_peak"], out["gpu_mem_total"] = 0, None, None
        else:
            per = (
                g.groupby(["host", "node_rank"], dropna=False)
                .agg(
                    gpus=("gpu", "nunique"),
                    gpu_mem_used_peak=("mem_used", "max"),
                    gpu_mem_total=("mem_total", "max"),
                )
                .reset_index()
            )
            out = out.merge(per, on=["host", "node_rank"], how="left")
            out["gpus"] = out["gpus"].fillna(0).astype(int)
        return out[cols]

    def checkpoints(self, include_deleted: bool = False):
        """Checkpoints: path, step, epoch, size_bytes, monitor, monitor_value, source, tags..."""
        where = () if include_deleted else (CheckpointRow.deleted.is_(False),)
        return self._table(CheckpointRow, (CheckpointRow.wall_time, CheckpointRow.id), where, ("tags",))

    def logs(self):
        """Captured log records and warnings: wall_time, step, level, logger, message, source."""
        return self._table(LogRow, (LogRow.wall_time, LogRow.id))

    def alerts(self, since: float | None = None):
        """The run's alerts, oldest first (``since``: UNIX seconds, only those raised at or after it):
        time, step, rule, level, title, text, delivered (the latest delivery outcome: True, False,
        ``"held"``, or None when no delivery was configured), uid, source ("run": raised by the
        run itself; "watch": by ``tmon watch``). See ``tmon_core.store.alerts``."""
        from .alerts import alerts

        return alerts(self.store, self.id, since)

    def count_points(self) -> int:
        """How many metric points the run holds, over all keys."""
        with self.store.engine.connect() as conn:
            return (
                conn.execute(
                    text(
                        "SELECT SUM(c.n) FROM tmon_chunks c JOIN tmon_series s ON c.series_id = s.id WHERE s.run_id = :r"
                    ),
                    {"r": self.id},
                ).scalar()
                or 0
            )
