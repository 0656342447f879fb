"""The checkpoint rows of a store (``tmon_checkpoints``): found by id or by path, tagged, marked deleted.

``store`` is an open ``Store``. Rows come back as plain dicts of the table's columns (``tags`` as
stored: JSON text). The recorder's writer writes the rows; ``Run.checkpoints()`` lists a run's.
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select, update

from .schema import CheckpointRow

__all__ = ["checkpoint_row", "live_at_path", "mark_deleted", "newer_at_path", "newest_id_at_path", "set_tags"]


def checkpoint_row(store, checkpoint_id: int, run_id: str | None = None) -> dict | None:
    """The row of checkpoint ``checkpoint_id`` (of run ``run_id`` only, when given), or None."""
    where = [CheckpointRow.id == checkpoint_id]
    if run_id is not None:
        where.append(CheckpointRow.run_id == run_id)
    with store.engine.connect() as conn:
        row = conn.execute(select(CheckpointRow).where(*where)).mappings().first()
    return dict(row) if row is not None else None


def newest_id_at_path(store, path: str) -> int | None:
    """The id of the last checkpoint recorded at ``path`` (absolute), deleted or not, or None."""
    with store.engine.connect() as conn:
        return conn.execute(
            select(CheckpointRow.id)
            .where(CheckpointRow.path == path)
            .order_by(CheckpointRow.id.desc())
            .limit(1)
        ).scalar()


def live_at_path(store, path: str) -> dict | None:
    """The newest checkpoint recorded at ``path`` (absolute) not marked deleted, or None."""
    with store.engine.connect() as conn:
        row = (
            conn.execute(
                select(CheckpointRow)
                .where(CheckpointRow.path == path, CheckpointRow.deleted.is_(False))
                .order_by(CheckpointRow.wall_time.desc(), CheckpointRow.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    return dict(row) if row is not None else None


def newer_at_path(store, row: dict) -> dict | None:
    """The newest checkpoint recorded at ``row``'s path after it (any run), or None."""
    with store.engine.connect() as conn:
        newer = (
            conn.execute(
                select(CheckpointRow)
                .where(
                    CheckpointRow.path == row["path"],
                    or_(
                        CheckpointRow.wall_time > row["wall_time"],
                        and_(CheckpointRow.wall_time == row["wall_time"], CheckpointRow.id > row["id"]),
                    ),
                )
                .order_by(CheckpointRow.wall_time.desc(), CheckpointRow.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    return dict(newer) if newer is not None else None


def set_tags(store, checkpoint_id: int, tags_json: str | None, description: str | None = None) -> None:
    """Replace a checkpoint's tags (JSON text) and, when given, its description."""
    values: dict = {"tags": tags_json}
    if description is not None:
        values["description"] = description
    with store.write_engine.begin() as conn:
        conn.execute(update(CheckpointRow).where(CheckpointRow.id == checkpoint_id).values(**values))


def mark_deleted(store, checkpoint_id: int) -> None:
    """Mark a checkpoint's row deleted (its file is gone or holds something else)."""
    with store.write_engine.begin() as conn:
        conn.execute(update(CheckpointRow).where(CheckpointRow.id == checkpoint_id).values(deleted=True))
