"""The newest hardware sample of many runs at once, read incrementally: what the Prometheus
exporter polls (``tmon_core.interop.exporter``).

``latest_samples(store, run_ids)`` reads, for each run, the newest host sample of each node and the
newest sample of each GPU of each node, and returns a cursor with them;
``latest_samples(store, run_ids, cursor)`` then reads only the rows written since that cursor, of
every run (a run that started since the last read is in them whatever ``run_ids`` said).

What a read costs (one statement per table, the grouping done by the database: only the newest
row of each node or GPU comes back to Python):

* with a cursor: a range of each table's primary key (``id > cursor``), grouped by run, node (and
  GPU), the highest id of each kept: 100 runs sampled each second and read every 5 s are ~500 host
  rows scanned (and 8 times as many GPU rows on 8-GPU nodes), however many rows the tables hold;
* without one (the first read, or when more than ``MAX_INCREMENT`` rows came since the cursor):
  per run, one index seek for its newest sample time and an index range of the ``window`` seconds
  before it, where every node's newest sample is when the nodes sample at the run's interval. A
  node whose newest sample is older than that (a node that lags or samples less often than
  ``window``) is left out of that first read; the next read after its next sample has it.

Within a run, node (and GPU), rows are written in time order (one sampler thread, one writer), so
the highest id is the newest sample. Across reads samples are matched by ``wall_time`` (the newer
one wins, then the higher id), so a row read twice changes nothing. On PostgreSQL ids come from a
sequence and a transaction that commits after a later one can land below the cursor: that sample
is missed, and the node's next one (a second later) takes its place.

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

from sqlalchemy import and_, func, select

from .schema import GpuSampleRow, RunRow, SampleRow

#: seconds before a run's newest sample in which a first read looks for each node's newest one
#: (10 s of an 8-GPU node sampled each second: 90 rows scanned per run)
WINDOW = 10.0
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


def _group(t):
    """The columns a newest sample is kept per: run and node (and GPU)."""
    return [t.c.run_id, t.c.node_rank] + ([t.c.gpu] if "gpu" in t.c else [])


def _key(t):
    names = [c.name for c in _group(t)]
    return lambda r: tuple(r[n] for n in names)


def _first_read(conn, table, cols, run_ids, out: dict, window: float) -> None:
    """Per run of ``run_ids``: the highest id of each node (and GPU) among its samples of the
    ``window`` seconds before its newest (an index seek, then an index range)."""
    t, runs = table.__table__, RunRow.__table__
    m = t.alias("m")
    newest = select(func.max(m.c.wall_time)).where(m.c.run_id == runs.c.id).scalar_subquery()
    key = _key(t)
    for lo in range(0, len(run_ids), 500):  # a few hundred bound parameters a statement at most
        ids = (
            select(func.max(t.c.id))
            .select_from(runs.join(t, and_(t.c.run_id == runs.c.id, t.c.wall_time >= newest - window)))
            .where(runs.c.id.in_(run_ids[lo : lo + 500]))
            .group_by(*_group(t))
        )
        for r in conn.execute(select(*[t.c[c] for c in cols]).where(t.c.id.in_(ids))).mappings():
            out[key(r)] = dict(r)


def _since(conn, table, cols, lo: int, hi: int, out: dict) -> None:
    """The highest id of each run, node (and GPU) among the rows lo < id <= hi."""
    t = table.__table__
    ids = select(func.max(t.c.id)).where(t.c.id > lo, t.c.id <= hi).group_by(*_group(t))
    key = _key(t)
    for r in conn.execute(select(*[t.c[c] for c in cols]).where(t.c.id.in_(ids))).mappings():
        out[key(r)] = dict(r)


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
        for table, cols, target, lo, hi in (
            (SampleRow, _HOST_COLS, out.host, cursor and cursor.host_id, host_max),
            (GpuSampleRow, _GPU_COLS, out.gpus, cursor and cursor.gpu_id, gpu_max),
        ):
            if lo is None or hi - lo > MAX_INCREMENT or hi < lo:  # (hi < lo: the rows were pruned)
                _first_read(conn, table, cols, run_ids, target, window)
            elif hi > lo:
                _since(conn, table, cols, lo, hi, target)
        out.cursor = Cursor(host_max, gpu_max)
    return out
