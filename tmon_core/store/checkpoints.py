"""The checkpoint rows of a store (``tmon_checkpoints``): found by id or by path, tagged, marked deleted.

``store`` is an open ``Store``. Rows come back as plain dicts of the table's columns (``tags`` as
stored: JSON text). The recorder's writer writes the rows; ``Run.checkpoints()`` lists a run's.
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select, update

from .run import ONE_BASED_STEPS
from .schema import CheckpointRow

__all__ = [
    "checkpoint_row",
    "live_at_path",
    "mark_deleted",
    "newer_at_path",
    "newest_id_at_path",
    "saved_after_step",
    "set_tags",
]

#: sources whose recorded step is already the index of the last step the checkpoint holds: the plain
#: loop's ``t.checkpoint`` (recorded after the steps it counts, at the step of its last ``t.step()``)
SAVED_AT_LAST_STEP = frozenset({"t.checkpoint"})


def saved_after_step(step, framework: str | None, source: str | None = None) -> int | None:
    """The metric step a checkpoint was saved after: the last step whose update it holds, numbered as
    the run's metrics are (the step its marker and table row sit at in the Monitor and the report).

    A checkpoint's ``step`` is what its framework counted when it was saved: the steps done
    (Lightning's and HF's ``global_step``, Keras' iterations, a checkpoint made on request at a step
    boundary), the number in its file name (``epoch=0-step=4.ckpt``, ``checkpoint-4``). It is stored as
    such, and rollback and diff read it so. Steps done are one past the last step's index where metrics
    count from 0 (Lightning, Keras, the plain loop): a checkpoint at the end of a 4-step epoch is
    recorded at 4 and holds the update of metric step 3. HF counts its steps from 1, so its count is
    the step. None: no step (or none done yet).

    >>> saved_after_step(4, "lightning"), saved_after_step(4, "hf"), saved_after_step(3, "pytorch", "t.checkpoint")
    (3, 4, 3)
    """
    if step is None or step != step or str(step) == "<NA>":
        return None
    step = int(step)
    if framework in ONE_BASED_STEPS or source in SAVED_AT_LAST_STEP:
        return step
    return step - 1 if step > 0 else None


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
