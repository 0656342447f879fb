"""Schema upgrades, run programmatically with Alembic's operations (no migration scripts folder).

Each entry of ``UPGRADES`` takes a store from version ``v - 1`` to ``v``. A store older than
this code is upgraded when it is opened, inside one write transaction (SQLite takes its write
lock first, so two processes opening an old store at once upgrade it once). A store newer than
this code is refused by ``engine._check_version``.

History:
    1  first schema
    2  runs gain ``tags`` (JSON list) and ``notes``
    3  metric points move from one row per point (``tmon_points``) to chunks of arrays
       (``tmon_chunks``): the writer's CPU per point falls ~100x (see schema.py)
    4  series gain ``summarized_chunk``: the summaries are brought up to date every few flushes,
       not at every flush, and readers add the chunks above that id (see schema.py)
    5  ``tmon_alert_claims``: what ``tmon watch`` processes alerted on, one row per run and
       condition under a UNIQUE index, so several watchers, or one restarted, send each alert once
    6  runs gain ``group_name`` (indexed): the group of runs one belongs to (a sweep, an
       experiment), for ``runs(group=...)``, ``tmon groups`` and the group report; NULL for the
       runs written before (they belong to no group)

Each upgrade carries its own SQL, written for the tables as they were at its version: none
imports the writer's statements, so a later change of the writer leaves the old upgrades as they
were. The chunk and summary formats they compute (``chunks.encode``, ``summaries.summarize``) are
those of schema 3 and 4, still current; a schema that changes one converts in its own upgrade.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    select,
    text,
)

from . import chunks, summaries
from .schema import SCHEMA_VERSION, SchemaVersion, StoreVersionError, lock_schema


def _v2(op: Operations) -> None:
    op.add_column("tmon_runs", Column("tags", Text(), nullable=True))
    op.add_column("tmon_runs", Column("notes", Text(), nullable=True))


# schema 3's statements, as the writer wrote them then
_V3_CHUNK_INSERT = (
    "INSERT INTO tmon_chunks (series_id, n, first_step, last_step, first_wall, last_wall, steps, vals, walls)"
)
_V3_CHUNK_WIDTH = 9
_V3_SUMMARY_INSERT = (
    "INSERT INTO tmon_summaries (series_id, level, bucket, n, n_nan, min_value, min_step, min_wall, "
    "max_value, max_step, max_wall)"
)
_V3_SUMMARY_WIDTH = 11
_V3_SUMMARY_UPSERT = (
    " ON CONFLICT (series_id, level, bucket) DO UPDATE SET "
    "n = tmon_summaries.n + excluded.n, n_nan = tmon_summaries.n_nan + excluded.n_nan, "
    + ", ".join(
        f"{c} = CASE WHEN (tmon_summaries.min_value IS NULL OR excluded.min_value < tmon_summaries.min_value) "
        f"THEN excluded.{c} ELSE tmon_summaries.{c} END"
        for c in ("min_value", "min_step", "min_wall")
    )
    + ", "
    + ", ".join(
        f"{c} = CASE WHEN (tmon_summaries.max_value IS NULL OR excluded.max_value > tmon_summaries.max_value) "
        f"THEN excluded.{c} ELSE tmon_summaries.{c} END"
        for c in ("max_value", "max_step", "max_wall")
    )
)


def _v3_insert(conn, head: str, width: int, rows: list[tuple], ph: str, tail: str = "") -> None:
    """``head VALUES (...), (...), ... tail`` for ``rows``, at most the driver's bound-parameter cap a statement."""
    limit = (32_766 if conn.dialect.name == "sqlite" else 65_535) // width
    cur = conn.connection.dbapi_connection.cursor()
    for i in range(0, len(rows), limit):
        part = rows[i : i + limit]
        values = ", ".join(["(" + ", ".join([ph] * width) + ")"] * len(part))
        cur.execute(f"{head} VALUES {values}{tail}", tuple(itertools.chain.from_iterable(part)))


def _v3(op: Operations) -> None:
    op.create_table(
        "tmon_chunks",
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("series_id", Integer, nullable=False),
        Column("n", Integer, nullable=False),
        Column("first_step", BigInteger, nullable=False),
        Column("last_step", BigInteger, nullable=False),
        Column("first_wall", Float(53), nullable=False),
        Column("last_wall", Float(53), nullable=False),
        Column("steps", LargeBinary, nullable=False),
        Column("vals", LargeBinary, nullable=False),
        Column("walls", LargeBinary, nullable=False),
    )
    op.create_index("ix_tmon_chunks_series_steps", "tmon_chunks", ["series_id", "first_step", "last_step"])
    conn = op.get_bind()
    ph = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    # summary buckets widened (16 -> 256 steps at the finest level): rebuilt from the points
    conn.execute(text("DELETE FROM tmon_summaries"))
    series = (
        conn.execute(text("SELECT DISTINCT series_id FROM tmon_points ORDER BY series_id")).scalars().all()
    )
    for sid in series:
        result = conn.execute(
            text("SELECT step, value, wall_time FROM tmon_points WHERE series_id = :s ORDER BY step, seq"),
            {"s": sid},
            execution_options={"stream_results": True},
        )  # a server-side cursor on PostgreSQL
        for part in result.partitions(chunks.CHUNK_POINTS):
            steps = np.array([r[0] for r in part], dtype=np.int64)
            values = np.array(
                [math.nan if r[1] is None else r[1] for r in part], dtype=np.float64
            )  # NULL was NaN
            walls = np.array([r[2] for r in part], dtype=np.float64)
            _v3_insert(conn, _V3_CHUNK_INSERT, _V3_CHUNK_WIDTH, chunks.encode(sid, steps, values, walls), ph)
            _v3_insert(
                conn,
                _V3_SUMMARY_INSERT,
                _V3_SUMMARY_WIDTH,
                summaries.summarize([(sid, steps, values, walls)]),
                ph,
                _V3_SUMMARY_UPSERT,
            )
    op.drop_table("tmon_points")


def _v4(op: Operations) -> None:
    op.add_column("tmon_series", Column("summarized_chunk", BigInteger, nullable=False, server_default="0"))
    # every chunk written so far is in the summaries (schema 3 summarized at every flush)
    op.get_bind().execute(
        text(
            "UPDATE tmon_series SET summarized_chunk = COALESCE("
            "(SELECT MAX(id) FROM tmon_chunks WHERE tmon_chunks.series_id = tmon_series.id), 0)"
        )
    )


def _v5(op: Operations) -> None:
    op.create_table(
        "tmon_alert_claims",
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(32), ForeignKey("tmon_runs.id", ondelete="CASCADE"), nullable=False),
        Column("key", String(200), nullable=False),
        Column("uid", String(32), nullable=True),
        Column("claimed_at", Float(53), nullable=False),
        Column("watcher", String(250), nullable=True),
    )
    op.create_index("ux_tmon_alert_claims_run_key", "tmon_alert_claims", ["run_id", "key"], unique=True)


def _v6(op: Operations) -> None:
    op.add_column("tmon_runs", Column("group_name", String(250), nullable=True))
    op.create_index("ix_tmon_runs_group_name", "tmon_runs", ["group_name"])


UPGRADES = {2: _v2, 3: _v3, 4: _v4, 5: _v5, 6: _v6}
assert max(UPGRADES) == SCHEMA_VERSION, "every schema version needs its upgrade"


def upgrade(engine: Engine) -> int:
    """Bring the store to ``SCHEMA_VERSION``; returns the version it had."""
    with engine.begin() as conn:
        lock_schema(conn)
        current = conn.execute(select(SchemaVersion.version).order_by(SchemaVersion.id.desc())).scalar()
        if current is not None and (type(current) is not int or current < 1):  # no tmon wrote it
            raise StoreVersionError(
                f"cannot upgrade a tmon store from schema version {current!r}: tmon's versions "
                f"are 1 to {SCHEMA_VERSION}"
            )
        if current is None or current >= SCHEMA_VERSION:
            return current
        op = Operations(MigrationContext.configure(conn))
        for version in range(current + 1, SCHEMA_VERSION + 1):
            UPGRADES[version](op)
            conn.execute(SchemaVersion.__table__.insert().values(version=version, created_at=time.time()))
        return current
