"""The newest hardware sample of many runs at once, read incrementally: what the Prometheus
exporter polls (``tmon_core.interop.exporter``).

``latest_samples(store, run_ids)`` reads, for each run, the newest host sample of each node and the
newest sample of each GPU of each node, and returns a cursor with them;
``latest_samples(store, run_ids, cursor)`` then reads only the rows written since that cursor, of
every run (a run that started since the last read is in them whatever ``run_ids`` said).

What a read costs:

* with a cursor: one range scan of each table's primary key (``id > cursor``): 100 runs sampled
  each second and read every 5 s are ~500 host rows (and 8 times as many GPU rows on 8-GPU nodes),
  however many rows the tables hold;
* without one (the first read, or when more than ``MAX_INCREMENT`` rows came since the cursor):
  per run, one index seek for its newest sample time and one index range of the last ``window``
  seconds before it (the node's newest samples are there: every node samples at the run's
  interval). A node whose newest sample is older than that (a node that stopped sampling minutes
  before the others) is left out of that first read.

Samples are matched by ``wall_time`` (the newer one wins, then the higher id), so a row read twice
or late changes nothing. On PostgreSQL ids come from a sequence and a transaction that commits
after a later one can land below the cursor: that sample is missed, and the node's next one (a
second later) takes its place.

>>> import os, tempfile
>>> from tmon_core import Recorder, open_store
>>> path = os.path.join(tempfile.mkdtemp(), "tmon.db")
>>> with Recorder(path, flush_interval=0.1) as rec:
...     for t in (1.0, 2.0):
...         rec.sample({"wall_time": 1e9 + t, "host": "h", "node_rank": 0, "ram_used": int(t)},
...                    [{"wall_time": 1e9 + t, "host": "h", "node_rank": 0, "gpu": 0, "mem_used": int(t)}])
>>> store = open_store(path)
>>> got = latest_samples(store, [rec.run_id])
>>> got.host[(rec.run_id, 0)]["ram_used"], got.gpus[(rec.run_id, 0, 0)]["mem_used"]
(2, 2)
>>> latest_samples(store, [rec.run_id], got.cursor).host       # nothing new since
{}
>>> store.close()
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from .schema import GpuSampleRow, SampleRow

#: seconds before a run's newest sample in which a first read looks for each node's newest one
WINDOW = 120.0
#: an incremental read of more rows than this per table is done as a first read instead
MAX_INCREMENT = 200_000

_HOST_COLS = [c for c in SampleRow.__table__.columns.keys() if c != "step"]
_GPU_COLS = list(GpuSampleRow.__table__.columns.keys())


@dataclass(frozen=True)
class Cursor:
    """The highest row ids read of ``tmon_samples`` and ``tmon_gpu_samples``."""

    host_id: int = 0
    gpu_id: int = 0


@dataclass
class LatestSamples:
    """``host``: (run_id, node_rank) -> the newest host sample (a dict of its columns);
    ``gpus``: (run_id, node_rank, gpu) -> the newest sample of that GPU; ``cursor``: where the next
    incremental read starts."""

    host: dict = field(default_factory=dict)
    gpus: dict = field(default_factory=dict)
    cursor: Cursor = field(default_factory=Cursor)


def newer(row: dict, than: dict | None) -> bool:
    """Whether sample ``row`` is newer than ``than`` (by wall time, then id)."""
    return than is None or (row["wall_time"], row["id"]) >= (than["wall_time"], than["id"])


def _keep_newest(rows, key, out: dict) -> None:
    for r in rows:
        r = dict(r)
        k = key(r)
        if newer(r, out.get(k)):
            out[k] = r


def _host_key(r):
    return (r["run_id"], r["node_rank"])


def _gpu_key(r):
    return (r["run_id"], r["node_rank"], r["gpu"])


def _first_read(conn, table, cols, run_ids, key, out: dict, window: float) -> None:
    t = table.__table__
    sel = [t.c[c] for c in cols]
    for rid in run_ids:
        newest = conn.execute(select(func.max(t.c.wall_time)).where(t.c.run_id == rid)).scalar()
        if newest is None:
            continue
        rows = conn.execute(
            select(*sel).where(t.c.run_id == rid, t.c.wall_time >= newest - window)
        ).mappings()
        _keep_newest(rows, key, out)


def _since(conn, table, cols, lo: int, hi: int, key, out: dict) -> None:
    t = table.__table__
    rows = conn.execute(
        select(*[t.c[c] for c in cols]).where(t.c.id > lo, t.c.id <= hi).order_by(t.c.id)
    ).mappings()
    _keep_newest(rows, key, out)


def latest_samples(store, run_ids, cursor: Cursor | None = None, *, window: float = WINDOW) -> LatestSamples:
    """The newest host and GPU samples of ``run_ids`` (``cursor`` None), or of every run since
    ``cursor`` (a ``Cursor`` from an earlier call on the same store). See the module docstring."""
    if cursor is not None and not isinstance(cursor, Cursor):
        raise TypeError(
            f"cursor must be a Cursor from an earlier latest_samples() or None, received {cursor!r}"
        )
    run_ids = list(run_ids)
    out = LatestSamples()
    with store.engine.connect() as conn:
        host_max = conn.execute(select(func.max(SampleRow.id))).scalar() or 0
        gpu_max = conn.execute(select(func.max(GpuSampleRow.id))).scalar() or 0
        for table, cols, key, target, lo, hi in (
            (SampleRow, _HOST_COLS, _host_key, out.host, cursor and cursor.host_id, host_max),
            (GpuSampleRow, _GPU_COLS, _gpu_key, out.gpus, cursor and cursor.gpu_id, gpu_max),
        ):
            if lo is None or hi - lo > MAX_INCREMENT or hi < lo:  # (hi < lo: the rows were pruned)
                _first_read(conn, table, cols, run_ids, key, target, window)
            elif hi > lo:
                _since(conn, table, cols, lo, hi, key, target)
        out.cursor = Cursor(host_max, gpu_max)
    return out
