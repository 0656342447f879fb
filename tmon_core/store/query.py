"""The read side of a store: ``Store`` and ``Run`` handles returning DataFrames and plain objects.

>>> store = open_store("sqlite:///tmon.db")                 # doctest: +SKIP
>>> store.runs()                                            # one row per run
>>> run = store.run(store.runs().id[0])
>>> run.metrics("train_loss", max_points=2000)              # step, value, wall_time

Widgets, the report, the CLI and the tests read through this module only.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np
from sqlalchemy import Engine, select, text

from ..events import LOST, RUNNING
from . import chunks
from .downsample import min_max, min_max_rows, with_ends
from .engine import create_store_engine, ensure_schema, resolve_url
from .schema import (
    RAW_DOWNSAMPLE_POINTS,
    SUMMARY_LEVELS,
    CheckpointRow,
    EventRow,
    GpuSampleRow,
    LogRow,
    RunRow,
    SampleRow,
    SeriesRow,
    summary_width,
)
from .summaries import with_points


def _pd():
    import pandas as pd

    return pd


def _loads(text: str | None) -> Any:
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


def effective_status(status: str, heartbeat_at: float | None, timeout: float, now: float | None = None) -> str:
    """A running run whose heartbeat is older than its timeout reads as ``lost``."""
    if status == RUNNING and heartbeat_at is not None and (now or time.time()) - heartbeat_at > timeout:
        return LOST
    return status


class Store:
    """A tmon store opened for reading (and for control requests, later)."""

    def __init__(self, url: str | os.PathLike | None = None, *, create: bool = True):
        """``create=False``: open an existing store only; a missing one is a ``FileNotFoundError``
        ("no tmon store at PATH") and nothing is created (a SQLite file is never made to read it)."""
        self.url = resolve_url(url)
        if not create:
            path = sqlite_path(self.url)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"no tmon store at {path}")
        self.engine: Engine = create_store_engine(self.url, writer=False)
        self._write_engine: Engine | None = None
        try:
            ensure_schema(self.engine, create=create)
        except Exception:
            self.engine.dispose()
            raise

    @property
    def write_engine(self) -> Engine:
        """An engine for the few writes a reader makes (control requests, checkpoint tags): on
        SQLite its transactions take the write lock up front, like the recorder's."""
        if self._write_engine is None:
            self._write_engine = create_store_engine(self.url, writer=True)
        return self._write_engine

    def close(self) -> None:
        self.engine.dispose()
        if self._write_engine is not None:
            self._write_engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def runs(self):
        """One row per run, newest first: id, name, status, framework, created_at, ended_at,
        duration (s), last_step, steps (how many were recorded: see ``steps_done``), host, pid, tags."""
        pd = _pd()
        with self.engine.connect() as conn:
            rows = conn.execute(select(RunRow).order_by(RunRow.created_at.desc())).mappings().all()
        now = time.time()
        out = []
        for r in rows:
            end = r["ended_at"] or r["heartbeat_at"] or now
            out.append({
                "id": r["id"], "name": r["name"],
                "status": effective_status(r["status"], r["heartbeat_at"], r["heartbeat_timeout"], now),
                "framework": r["framework"], "created_at": r["created_at"], "ended_at": r["ended_at"],
                "duration": end - r["created_at"], "last_step": r["last_step"],
                "steps": steps_done(r["last_step"], r["framework"]), "host": r["host"], "pid": r["pid"],
                "tags": _loads(r["tags"]) or [],
            })
        cols = ["id", "name", "status", "framework", "created_at", "ended_at", "duration", "last_step", "steps", "host",
                "pid", "tags"]
        return pd.DataFrame(out, columns=cols)

    def run(self, run_id: str) -> Run:
        """The run ``run_id`` (a unique prefix of the id, or the run's exact name, is enough)."""
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"run_id must be a non-empty string, received {run_id!r}")
        with self.engine.connect() as conn:
            ids = conn.execute(select(RunRow.id).where(RunRow.id.startswith(run_id, autoescape=True))).scalars().all()
            if not ids:
                ids = conn.execute(select(RunRow.id).where(RunRow.name == run_id)).scalars().all()
        if len(ids) == 1:
            return Run(self, ids[0])
        if not ids:
            raise KeyError(f"no run {run_id!r} in {self}")
        raise KeyError(f"{run_id!r} matches {len(ids)} runs in {self}: {', '.join(sorted(ids)[:5])}; give more of the id")

    def checkpoint(self, checkpoint_id: int) -> dict:
        """The recorded checkpoint ``checkpoint_id`` (any run) as a dict; KeyError when unknown."""
        with self.engine.connect() as conn:
            row = conn.execute(select(CheckpointRow).where(CheckpointRow.id == int(checkpoint_id))).mappings().first()
        if row is None:
            raise KeyError(f"no checkpoint {checkpoint_id} in {self}")
        out = dict(row)
        out["tags"] = _loads(out["tags"]) or []
        return out

    def find_checkpoint(self, path: str | os.PathLike) -> dict | None:
        """The newest recorded checkpoint at ``path`` (absolute or relative to here), or None."""
        path = os.path.abspath(os.fspath(path))
        with self.engine.connect() as conn:
            row = conn.execute(select(CheckpointRow.id).where(CheckpointRow.path == path)
                               .order_by(CheckpointRow.id.desc()).limit(1)).scalar()
        return None if row is None else self.checkpoint(row)

    def latest_run(self) -> Run | None:
        with self.engine.connect() as conn:
            rid = conn.execute(select(RunRow.id).order_by(RunRow.created_at.desc()).limit(1)).scalar()
        return Run(self, rid) if rid else None


class Run:
    """Read access to one run."""

    def __init__(self, store: Store, run_id: str):
        self.store = store
        self.id = run_id
        self._series_ids: dict[str, int] = {}  # a run's series only grow: cached, re-read on a miss

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"

    def _row(self) -> dict:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(RunRow).where(RunRow.id == self.id)).mappings().first()
        if row is None:
            raise KeyError(f"run {self.id!r} is not in {self.store}")
        return dict(row)

    @property
    def status(self) -> str:
        """running | completed | failed | interrupted | lost (running, but its heartbeat stopped)."""
        r = self._row()
        return effective_status(r["status"], r["heartbeat_at"], r["heartbeat_timeout"])

    def info(self) -> dict:
        """Metadata and configuration of the run (config and error decoded from JSON)."""
        r = self._row()
        r["status"] = effective_status(r["status"], r["heartbeat_at"], r["heartbeat_timeout"])
        r["steps"] = steps_done(r["last_step"], r["framework"])
        r["config"] = _loads(r["config"]) or {}
        r["tags"] = _loads(r["tags"]) or []
        r["error"] = _loads(r["error"])
        return r

    # -------------------------------------------------------------- metrics
    def _series(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(SeriesRow.key, SeriesRow.id).where(SeriesRow.run_id == self.id)).all()
        self._series_ids = dict(rows)
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

    def metrics(self, key: str, max_points: int | None = None, x: str = "step",
                start: float | None = None, end: float | None = None):
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
            lo, hi = self._step_bounds(conn, sid, x, start, end)
            if lo is None:
                return self._frame(*chunks.decode([]))
            count = self._count_at_most(conn, sid, lo, hi) if max_points is not None else 0
            # a downsampled line keeps the range's first and last point (a live chart ends at the
            # newest value) when there is room for them, and the min and max of each bucket
            ends = max_points is not None and max_points >= 4
            budget = max_points - 2 if ends else max_points
            if count > max(RAW_DOWNSAMPLE_POINTS, max_points or 0):  # (else every point may fit)
                s, v, w = self._downsample(conn, sid, lo, hi, budget)
                if ends:
                    head = self._raw(conn, sid, lo, min(hi, lo + 4095))
                    tail = self._raw(conn, sid, max(lo, hi - 4095), hi)
                    s, v, w = with_ends(s, v, w, head, tail)
            else:
                s, v, w = raw = self._raw(conn, sid, lo, hi)
                if max_points is not None and len(s) > max_points:
                    s, v, w = min_max(s, v, w, lo, hi, max(1, budget // 2))
                    if ends:
                        s, v, w = with_ends(s, v, w, raw, raw)
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
            s, v, w = self._last(conn, sid, n)
        return self._frame(s, v, w)

    def latest(self) -> dict[str, tuple[int, float]]:
        """The last point of every metric: key -> (step, value)."""
        out = {}
        with self.store.engine.connect() as conn:
            for key, sid in sorted(self._series().items()):
                s, v, _ = self._last(conn, sid, 1)
                if len(s):
                    out[key] = (int(s[-1]), float(v[-1]))
        return out

    @staticmethod
    def _frame(steps, values, walls):
        return _pd().DataFrame({"step": np.asarray(steps, dtype=np.int64), "value": np.asarray(values, dtype=float),
                                "wall_time": np.asarray(walls, dtype=float)})

    @staticmethod
    def _fetch(conn, sql: str) -> list[tuple]:
        # the driver's own cursor: plain tuples of bytes, no Row objects
        cur = conn.connection.dbapi_connection.cursor()
        try:
            cur.execute(sql)
            return cur.fetchall()
        finally:
            cur.close()

    def _last(self, conn, sid: int, n: int):
        """The ``n`` points with the largest steps (the later-written first among equal steps)."""
        index = conn.exec_driver_sql(
            f"SELECT id, first_step, last_step, n FROM tmon_chunks WHERE series_id = {int(sid)} "
            f"ORDER BY last_step DESC, id DESC").fetchall()  # the index and the small columns only
        take, count, floor = [], 0, None
        for cid, first, last, k in index:
            if count >= n and last < floor:
                break  # n points at or above ``floor`` are taken: this chunk and the ones after are older
            take.append(cid)
            count += k
            floor = first if floor is None else min(floor, first)
        if not take:
            return chunks.decode([])
        s, v, w = self._read_chunks(conn, f"id IN ({', '.join(str(int(c)) for c in take)})")
        return s[-n:], v[-n:], w[-n:]

    def _read_chunks(self, conn, where: str, lo: int | None = None, hi: int | None = None):
        return chunks.decode(
            self._fetch(conn, f"SELECT {chunks.READ_COLUMNS} FROM tmon_chunks WHERE {where} ORDER BY id"), lo, hi)

    def _step_bounds(self, conn, sid, x, start, end):
        if x == "time" and (start is not None or end is not None):
            # no index on wall time: the chunks' time ranges pick which to decode
            cond = [f"series_id = {int(sid)}"]
            if start is not None:
                cond.append(f"last_wall >= {float(start)!r}")
            if end is not None:
                cond.append(f"first_wall <= {float(end)!r}")
            s, _, w = self._read_chunks(conn, " AND ".join(cond))
            keep = np.ones(len(s), dtype=bool)
            if start is not None:
                keep &= w >= start
            if end is not None:
                keep &= w <= end
            s = s[keep]
            return (int(s.min()), int(s.max())) if len(s) else (None, None)
        lo, hi = conn.exec_driver_sql(
            f"SELECT MIN(first_step), MAX(last_step) FROM tmon_chunks WHERE series_id = {int(sid)}").first()
        if lo is None:
            return None, None
        if x == "step":
            if start is not None:
                lo = max(lo, math.ceil(start))
            if end is not None:
                hi = min(hi, math.floor(end))
        return (lo, hi) if lo <= hi else (None, None)

    def _raw(self, conn, sid, lo, hi):
        return self._read_chunks(
            conn, f"series_id = {int(sid)} AND first_step <= {int(hi)} AND last_step >= {int(lo)}", lo, hi)

    @staticmethod
    def _summarized(conn, sid) -> int:
        """The id of the last chunk of series ``sid`` that the summaries hold."""
        return conn.exec_driver_sql(f"SELECT summarized_chunk FROM tmon_series WHERE id = {int(sid)}").scalar() or 0

    def _count_at_most(self, conn, sid, lo, hi) -> int:
        """At least the number of points in [lo, hi]: summed over the summary buckets that touch it,
        and over the chunks that touch it and are not in the summaries yet."""
        level = _level_for(hi - lo + 1, 8)
        width = summary_width(level)
        n = conn.exec_driver_sql(
            f"SELECT SUM(n) FROM tmon_summaries WHERE series_id = {int(sid)} AND level = {level} "
            f"AND bucket >= {lo // width} AND bucket <= {hi // width}").scalar()
        fresh = conn.exec_driver_sql(
            f"SELECT SUM(n) FROM tmon_chunks WHERE series_id = {int(sid)} AND id > {self._summarized(conn, sid)} "
            f"AND first_step <= {int(hi)} AND last_step >= {int(lo)}").scalar()
        return (n or 0) + (fresh or 0)

    def _downsample(self, conn, sid, lo, hi, max_points):
        """min/max per bucket of the finest summary level with at most ``max_points // 2`` buckets in
        [lo, hi]; the partial buckets at either end from the points themselves."""
        level = _level_for(hi - lo + 1, max(1, max_points // 2))
        width = summary_width(level)
        b0, b1 = -(-lo // width), (hi + 1) // width - 1  # buckets lying wholly inside [lo, hi]
        out: list[tuple] = []
        if b0 > b1:  # the range is narrower than a bucket: min/max of the raw points
            out = min_max_rows(*self._raw(conn, sid, lo, hi))
        else:
            if lo < b0 * width:
                out += min_max_rows(*self._raw(conn, sid, lo, b0 * width - 1))
            rows = conn.exec_driver_sql(
                "SELECT bucket, min_value, min_step, min_wall, max_value, max_step, max_wall "
                f"FROM tmon_summaries WHERE series_id = {int(sid)} AND level = {level} "
                f"AND bucket >= {b0} AND bucket <= {b1} ORDER BY bucket").fetchall()
            # the points written since the summaries were last brought up to date (a few flushes;
            # a killed run keeps them for good)
            first, last = b0 * width, (b1 + 1) * width - 1
            fresh = self._read_chunks(conn, f"series_id = {int(sid)} AND id > {self._summarized(conn, sid)} "
                                            f"AND first_step <= {last} AND last_step >= {first}", first, last)
            rows = with_points(rows, *fresh, width)
            for bucket, lov, los, low, hiv, his, hiw in rows:
                if lov is None:  # every point of the bucket was NaN: keep one (a real one) so it shows
                    out.append((bucket * width if los is None else los, math.nan, math.nan if low is None else low))
                elif los == his and lov == hiv:
                    out.append((los, lov, low))
                elif los < his:
                    out += [(los, lov, low), (his, hiv, hiw)]
                else:
                    out += [(his, hiv, hiw), (los, lov, low)]
            if (b1 + 1) * width <= hi:
                out += min_max_rows(*self._raw(conn, sid, (b1 + 1) * width, hi))
        if not out:
            return chunks.decode([])
        arr = np.array(out, dtype=np.float64).reshape(-1, 3)
        return arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2]

    # -------------------------------------------------------------- control (tmon_core.control.requests)
    def set_param(self, name: str, value: Any, *, group: int | None = None, mode: str = "scale", **kw):
        """Ask the running training to set ``name`` (``lr``, ``weight_decay``, ``momentum``, ``betas``,
        ``eps``, a custom Param; ``lr@1`` for one param group) to ``value``. Returns a ``Request``."""
        return _control().set_param(self, name, value, group=group, mode=mode, **kw)

    def set_params(self, values: dict, *, mode: str = "scale", **kw):
        """Several parameters in one request, applied together at one step."""
        return _control().set_params(self, values, mode=mode, **kw)

    def apply_preset(self, name: str, **kw):
        return _control().apply_preset(self, name, **kw)

    def request_checkpoint(self, description: str | None = None, tags: list[str] | None = None, **kw):
        return _control().request_checkpoint(self, description, tags, **kw)

    def rollback(self, checkpoint_id: int, *, compatible: bool = False, allow_path: bool = False, **kw):
        """Restore a recorded checkpoint (see ``tmon_core.control.requests.rollback``)."""
        return _control().rollback(self, checkpoint_id, compatible=compatible, allow_path=allow_path, **kw)

    def stop(self, reason: str | None = None, **kw):
        return _control().stop(self, reason, **kw)

    def requests(self):
        """The run's control requests, oldest first: kind, payload, status, applied_step, old/new, reason."""
        return _control().requests(self)

    def tag_checkpoint(self, checkpoint_id: int, tags: list[str], description: str | None = None) -> None:
        _control().tag_checkpoint(self, checkpoint_id, tags, description)

    def delete_checkpoint(self, checkpoint_id: int) -> None:
        _control().delete_checkpoint(self, checkpoint_id)

    def impact(self, request_id: int, key: str = "loss", window: int = 50) -> dict:
        """The loss trend over ``window`` steps before vs after an applied change."""
        return _control().impact(self, request_id, key, window)

    # -------------------------------------------------------------- other tables
    def _table(self, model, order, where=(), json_cols=()):
        pd = _pd()
        cols = [c for c in model.__table__.columns.keys() if c != "run_id"]
        with self.store.engine.connect() as conn:
            q = select(*[model.__table__.c[c] for c in cols]).where(model.run_id == self.id, *where).order_by(*order)
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            for c in json_cols:
                r[c] = _loads(r[c])
        df = pd.DataFrame(rows, columns=cols)
        for c in ("step", "applied_step"):
            if c in df:
                df[c] = df[c].astype("Int64")  # an integer column that may hold NULL
        return df

    def events(self, type: str | None = None):
        """Events in order: wall_time, step, type, message, data (dict)."""
        where = (EventRow.type == type,) if type else ()
        return self._table(EventRow, (EventRow.wall_time, EventRow.id), where, ("data",))

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
        cols = ["host", "node_rank", "samples", "cpu_percent_mean", "ram_used_peak", "ram_total", "proc_rss_peak",
                "children_rss_peak", "children_count_peak", "gpus", "gpu_mem_used_peak", "gpu_mem_total"]
        if s.empty:
            return pd.DataFrame(columns=cols)
        out = s.groupby(["host", "node_rank"], dropna=False).agg(
            samples=("wall_time", "size"), cpu_percent_mean=("cpu_percent", "mean"), ram_used_peak=("ram_used", "max"),
            ram_total=("ram_total", "max"), proc_rss_peak=("proc_rss", "max"),
            children_rss_peak=("children_rss", "max"), children_count_peak=("children_count", "max"),
        ).reset_index()
        g = self.gpu_samples()
        if g.empty:
            out["gpus"], out["gpu_mem_used_peak"], out["gpu_mem_total"] = 0, None, None
        else:
            per = g.groupby(["host", "node_rank"], dropna=False).agg(
                gpus=("gpu", "nunique"), gpu_mem_used_peak=("mem_used", "max"), gpu_mem_total=("mem_total", "max"),
            ).reset_index()
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

    def count_points(self) -> int:
        """How many metric points the run holds, over all keys."""
        with self.store.engine.connect() as conn:
            return conn.execute(
                text("SELECT SUM(c.n) FROM tmon_chunks c JOIN tmon_series s ON c.series_id = s.id WHERE s.run_id = :r"),
                {"r": self.id},
            ).scalar() or 0


def _control():
    from ..control import requests  # imported on first use: readers that never steer don't pay for it

    return requests


def _level_for(span: int, buckets: int) -> int:
    """The finest summary level whose buckets cut ``span`` steps into at most ``buckets`` pieces."""
    for level in range(SUMMARY_LEVELS):
        if -(-span // summary_width(level)) + 1 <= buckets:
            return level
    return SUMMARY_LEVELS - 1


def open_store(url: str | os.PathLike | None = None, *, create: bool = True) -> Store:
    """Open (and on first use create) the store at ``url``; default ``$TMON_STORE`` or ``sqlite:///tmon.db``.
    ``create=False`` opens an existing store only (FileNotFoundError when there is none)."""
    return Store(url, create=create)


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite store URL (absolute), or None for another database or an in-memory one."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.database.startswith("file:"):
        return None
    return os.path.abspath(u.database)
