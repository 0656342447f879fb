"""Schema upgrades, run programmatically with Alembic's operations (no migration scripts folder).

Each entry of ``UPGRADES`` takes a store from version ``v - 1`` to ``v``. A store older than
this code is upgraded when it is opened, inside one write transaction (SQLite takes its write
lock first, so two processes opening an old store at once upgrade it once). A store newer than
this code is refused by ``engine._check_version``.

History:
    1  first schema
    2  runs gain ``tags`` (JSON list) and ``notes``
"""

from __future__ import annotations

import time

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Engine, Text, select

from .schema import SCHEMA_VERSION, SchemaVersion


def _v2(op: Operations) -> None:
    op.add_column("tmon_runs", Column("tags", Text(), nullable=True))
    op.add_column("tmon_runs", Column("notes", Text(), nullable=True))


UPGRADES = {2: _v2}
assert max(UPGRADES) == SCHEMA_VERSION, "every schema version needs its upgrade"


def upgrade(engine: Engine) -> int:
    """Bring the store to ``SCHEMA_VERSION``; returns the version it had."""
    from .engine import lock_schema

    with engine.begin() as conn:
        lock_schema(conn)
        current = conn.execute(select(SchemaVersion.version).order_by(SchemaVersion.id.desc())).scalar()
        if current is None or current >= SCHEMA_VERSION:
            return current
        op = Operations(MigrationContext.configure(conn))
        for version in range(current + 1, SCHEMA_VERSION + 1):
            UPGRADES[version](op)
            conn.execute(SchemaVersion.__table__.insert().values(version=version, created_at=time.time()))
        return current
