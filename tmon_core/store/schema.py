"""The tmon schema: one set of tables for SQLite and PostgreSQL.

Every table is prefixed ``tmon_`` so the store can live inside an existing database.

Conventions a plain-SQL reader needs to know:

* Times are UNIX seconds (float, UTC).
* Metric keys are interned per run in ``tmon_series``; points reference a series id.
* Metric points are stored in chunks (``tmon_chunks``): one row holds the points of one series
  from one flush (at most ``CHUNK_POINTS``) as three little-endian arrays: ``steps`` (int64;
  empty when the steps are ``first_step, first_step + 1, ...``, the common case), ``vals``
  (float64; NaN and +-inf stored bit for bit) and ``walls`` (float64 UNIX seconds).
  ``np.frombuffer(row.vals, "<f8")`` reads one; ``Run.metrics()`` reads a series as a
  DataFrame and ``tmon export`` writes long-format CSV/JSON/parquet. Within a series, points
  are ordered by step, then by the order they were written (chunk ``id``, then position).
  Why chunks and not one row per point: a row per point costs SQLite ~1.3-1.6 us of the writer
  thread's CPU (B-tree insert and parameter binding; ~600k points/s at most), more than all of
  CSVLogger's per-step cost at a dozen metrics; a chunk costs ~0.02-0.04 us per point.
* ``tmon_summaries`` holds min/max summaries of each series at several resolutions
  (bucket width ``256 * 4**level`` steps; ``min_value``/``max_value`` NULL when every point of
  the bucket was NaN), maintained by the writer so that a chart of a million-point series
  reads a few hundred rows instead of a million. They hold every chunk of a series up to
  ``tmon_series.summarized_chunk`` (a chunk id); the writer brings them up to date every
  ``SUMMARY_EVERY_FLUSHES`` flushes with points, at ``SUMMARY_EVERY_POINTS`` pending points, and
  when the run ends, so a reader adds the few chunks above that id (a killed run keeps them).
  Why not at every flush: the summaries cost a third of the writer's CPU per flush in a fit
  (numpy and SQL fixed costs, paid per call, not per point); every 10th flush costs a tenth.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 6  # see migrations.py for the history and the upgrades

#: bucket width in steps of summary level ``L`` is ``SUMMARY_BASE * SUMMARY_FACTOR ** L``. Ranges of
#: up to ``RAW_DOWNSAMPLE_POINTS`` points are downsampled from the points themselves (decoding
#: chunks is cheap), so the finest level only serves ranges longer than that: a coarse base keeps
#: the rows each flush upserts few (2 per series and level at a 1 s flush of ~3 ms steps).
SUMMARY_BASE = 256
SUMMARY_FACTOR = 4
SUMMARY_LEVELS = 9  # the coarsest bucket spans 256 * 4**8 ≈ 16.8M steps
RAW_DOWNSAMPLE_POINTS = 1 << 18

#: the writer brings the summaries up to date after this many flushes that wrote points, or as
#: soon as this many points wait (and when the run ends): a reader decodes at most about that
#: many unsummarized points per series on top of the summaries. Bringing them up to date costs a
#: writer inside a fit ~10 ms (numpy, then an upsert of a few hundred rows): at every 10th flush
#: that was a third of the writer's CPU
SUMMARY_EVERY_FLUSHES = 30
SUMMARY_EVERY_POINTS = 1 << 16

#: most points one ``tmon_chunks`` row holds (a bigger flush of one series writes several rows)
CHUNK_POINTS = 8192


def summary_width(level: int) -> int:
    return SUMMARY_BASE * SUMMARY_FACTOR**level


class StoreVersionError(RuntimeError):
    """The store was written by a newer tmon than this one, or its version is not one tmon wrote."""


#: any constant: the key of the PostgreSQL advisory lock that serialises schema changes
_SCHEMA_LOCK = 0x746D6F6E  # "tmon"


def lock_schema(conn) -> None:
    """Make concurrent creators/upgraders of one store take turns. SQLite: the writer engine's
    BEGIN IMMEDIATE already does; PostgreSQL: a transaction-scoped advisory lock (two processes
    creating tables at once otherwise collide in the catalog)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "tmon_schema"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class RunRow(Base):
    __tablename__ = "tmon_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(250), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # running|completed|failed|interrupted
    framework: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    ended_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_timeout: Mapped[float] = mapped_column(Float, nullable=False)
    host: Mapped[str | None] = mapped_column(String(250))
    pid: Mapped[int | None] = mapped_column(Integer)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    total_steps: Mapped[int | None] = mapped_column(BigInteger)
    config: Mapped[str | None] = mapped_column(Text)  # JSON object
    error: Mapped[str | None] = mapped_column(Text)  # JSON object: type, message, traceback
    dropped_points: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    tags: Mapped[str | None] = mapped_column(Text)  # JSON list (schema 2)
    notes: Mapped[str | None] = mapped_column(Text)  # (schema 2)
    #: the group the run belongs to (a sweep, an experiment: ``TMonCallback(group=...)``,
    #: ``$TMON_GROUP``), NULL for none (schema 6). Not ``group``: an SQL keyword, to quote in every query
    group_name: Mapped[str | None] = mapped_column(String(250))

    __table_args__ = (
        Index("ix_tmon_runs_created_at", "created_at"),
        Index("ix_tmon_runs_group_name", "group_name"),
    )


class SeriesRow(Base):
    __tablename__ = "tmon_series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(250), nullable=False)
    #: the summaries hold every chunk of this series with an id up to this one (schema 4)
    summarized_chunk: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")

    __table_args__ = (Index("ux_tmon_series_run_key", "run_id", "key", unique=True),)


class ChunkRow(Base):
    """The points of one series from one flush, as arrays (see the module notes). ``first_step``,
    ``last_step``, ``first_wall`` and ``last_wall`` are the chunk's smallest and largest step and
    wall time, so a range read selects chunks by index and decodes only those."""

    __tablename__ = "tmon_chunks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_id: Mapped[int] = mapped_column(Integer, nullable=False)
    n: Mapped[int] = mapped_column(Integer, nullable=False)
    first_step: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_step: Mapped[int] = mapped_column(BigInteger, nullable=False)
    first_wall: Mapped[float] = mapped_column(Float(53), nullable=False)
    last_wall: Mapped[float] = mapped_column(Float(53), nullable=False)
    steps: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # <i8
    vals: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # <f8
    walls: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # <f8

    __table_args__ = (Index("ix_tmon_chunks_series_steps", "series_id", "first_step", "last_step"),)


class SummaryRow(Base):
    __tablename__ = "tmon_summaries"
    series_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n_nan: Mapped[int] = mapped_column(BigInteger, nullable=False)
    min_value: Mapped[float | None] = mapped_column(Float(53))
    min_step: Mapped[int | None] = mapped_column(BigInteger)
    min_wall: Mapped[float | None] = mapped_column(Float(53))
    max_value: Mapped[float | None] = mapped_column(Float(53))
    max_step: Mapped[int | None] = mapped_column(BigInteger)
    max_wall: Mapped[float | None] = mapped_column(Float(53))


class EventRow(Base):
    __tablename__ = "tmon_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False)
    wall_time: Mapped[float] = mapped_column(Float(53), nullable=False)
    step: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[str | None] = mapped_column(Text)  # JSON object

    __table_args__ = (Index("ix_tmon_events_run_time", "run_id", "wall_time"),)


class SampleRow(Base):
    """One host-level hardware sample."""

    __tablename__ = "tmon_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False)
    wall_time: Mapped[float] = mapped_column(Float(53), nullable=False)
    host: Mapped[str | None] = mapped_column(String(250))
    node_rank: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    step: Mapped[int | None] = mapped_column(BigInteger)
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    ram_total: Mapped[int | None] = mapped_column(BigInteger)
    ram_used: Mapped[int | None] = mapped_column(BigInteger)
    ram_available: Mapped[int | None] = mapped_column(BigInteger)
    swap_used: Mapped[int | None] = mapped_column(BigInteger)
    proc_rss: Mapped[int | None] = mapped_column(BigInteger)
    children_rss: Mapped[int | None] = mapped_column(BigInteger)
    children_count: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_tmon_samples_run_time", "run_id", "wall_time"),)


class GpuSampleRow(Base):
    """One sample of one GPU (NVML and, when torch has CUDA initialised, torch's allocator)."""

    __tablename__ = "tmon_gpu_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False)
    wall_time: Mapped[float] = mapped_column(Float(53), nullable=False)
    host: Mapped[str | None] = mapped_column(String(250))
    node_rank: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    gpu: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str | None] = mapped_column(String(250))
    mem_used: Mapped[int | None] = mapped_column(BigInteger)
    mem_total: Mapped[int | None] = mapped_column(BigInteger)
    util_percent: Mapped[float | None] = mapped_column(Float)
    power_watts: Mapped[float | None] = mapped_column(Float)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    torch_allocated: Mapped[int | None] = mapped_column(BigInteger)
    torch_reserved: Mapped[int | None] = mapped_column(BigInteger)
    torch_max_allocated: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_tmon_gpu_samples_run_time", "run_id", "wall_time"),)


class CheckpointRow(Base):
    __tablename__ = "tmon_checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False)
    wall_time: Mapped[float] = mapped_column(Float(53), nullable=False)
    step: Mapped[int | None] = mapped_column(BigInteger)
    epoch: Mapped[float | None] = mapped_column(Float)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    monitor: Mapped[str | None] = mapped_column(String(250))
    monitor_value: Mapped[float | None] = mapped_column(Float(53))
    source: Mapped[str | None] = mapped_column(String(64))  # e.g. ModelCheckpoint, manual
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[str | None] = mapped_column(Text)  # JSON list
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    __table_args__ = (Index("ix_tmon_checkpoints_run_step", "run_id", "step"),)


class RequestRow(Base):
    """A control request: set a parameter, save a checkpoint, roll back, stop."""

    __tablename__ = "tmon_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    payload: Mapped[str | None] = mapped_column(Text)  # JSON
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # pending|applied|rejected
    requested_by: Mapped[str | None] = mapped_column(String(250))
    requested_at: Mapped[float] = mapped_column(Float(53), nullable=False)
    applied_at: Mapped[float | None] = mapped_column(Float(53))
    applied_step: Mapped[int | None] = mapped_column(BigInteger)
    old_value: Mapped[str | None] = mapped_column(Text)  # JSON
    new_value: Mapped[str | None] = mapped_column(Text)  # JSON
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_tmon_requests_run_status", "run_id", "status"),)


class LogRow(Base):
    __tablename__ = "tmon_logs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False)
    wall_time: Mapped[float] = mapped_column(Float(53), nullable=False)
    step: Mapped[int | None] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(16), nullable=False)
    logger: Mapped[str | None] = mapped_column(String(250))
    message: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str | None] = mapped_column(String(32))  # logging|warnings|stdout|stderr

    __table_args__ = (Index("ix_tmon_logs_run_time", "run_id", "wall_time"),)


class ReportRow(Base):
    __tablename__ = "tmon_reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False)
    created_at: Mapped[float] = mapped_column(Float(53), nullable=False)
    health: Mapped[str] = mapped_column(String(16), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)  # JSON


class AlertClaimRow(Base):
    """A condition of a run that a ``tmon watch`` process alerted on (schema 5): one row per run and
    ``key`` (``lost@<heartbeat>``, ``stall@<last step>``, ``ended``, ``seen-running``), inserted in
    the transaction that records the alert, so the UNIQUE index lets one watcher win and the others,
    and a restarted one, send nothing. ``uid`` is the alert's (NULL for ``seen-running``)."""

    __tablename__ = "tmon_alert_claims"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(200), nullable=False)
    uid: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[float] = mapped_column(Float(53), nullable=False)
    watcher: Mapped[str | None] = mapped_column(String(250))  # host:pid of the watcher that claimed it

    __table_args__ = (Index("ux_tmon_alert_claims_run_key", "run_id", "key", unique=True),)


TABLES = Base.metadata.tables
