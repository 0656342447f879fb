"""Checkpoints recorded in a store: find the row of a checkpoint id (or of a file path), and read
the run's metrics as they stood when the checkpoint was written.

Which point belongs to a checkpoint: a checkpoint recorded at ``step`` N holds the weights after N
optimizer steps. The Lightning and Keras adapters log a batch's metrics at its 0-based index (so
the last batch inside the checkpoint is N-1, and epoch-end metrics land on N-1, sometimes written
just after the checkpoint row); the HF adapter logs at HF's 1-based ``global_step`` (so it is N,
written before ``on_save``). Taking the last point with ``step < N``, or with ``step == N`` written
no later than the checkpoint row, is right for both, and never picks a batch that ran after the save.
"""

from __future__ import annotations

import os
from typing import Any

from ..checkpoints import CheckpointError
from ..store import Run, Store, checkpoints

#: the step window searched first for the last point before a checkpoint; widened x16 until found
FIRST_WINDOW = 256


def open_store_for(store: Any) -> tuple[Store, bool]:
    """``(store, owned)``: a ``Store`` given as is, else one opened (never created) at the URL."""
    if isinstance(store, Store):
        return store, False
    try:
        return Store(store, create=False), True
    except FileNotFoundError as exc:
        raise CheckpointError(None, f"cannot look up recorded checkpoints: {exc}") from None


def checkpoint_row(store: Store, ckpt_id: int) -> dict:
    row = checkpoints.checkpoint_row(store, int(ckpt_id))
    if row is None:
        raise CheckpointError(
            ckpt_id,
            f"no checkpoint with id {ckpt_id} in {store} (ids are the 'id' column of Run.checkpoints())",
        )
    return row


def row_for_path(store: Store, path: str) -> dict | None:
    """The newest recorded checkpoint at ``path`` (absolute) not marked deleted, or None: a deleted
    row's file is gone or was written again, so what is there now is not that checkpoint."""
    return checkpoints.live_at_path(store, os.path.abspath(path))


def newer_at_path(store: Store, row: dict) -> dict | None:
    """The newest checkpoint recorded at ``row``'s path after it (any run), or None."""
    return checkpoints.newer_at_path(store, row)


def check_current(store: Store, row: dict) -> None:
    """Refuse a recorded checkpoint whose file is gone or holds something else now: its row is
    marked deleted, or a later checkpoint was written to the same path. Reading the path would
    label this record with another checkpoint's weights."""
    where = f"recorded at {row['path']} (run {row['run_id']}, step {row['step']})"
    newer = newer_at_path(store, row)
    if newer is not None:
        raise CheckpointError(
            row["id"],
            f"{where}, but that file was overwritten since: checkpoint {newer['id']} "
            f"(run {newer['run_id']}, step {newer['step']}) was written to the same path; "
            f"diff {newer['id']}, or pass the path to compare the file as it is now",
        )
    if not os.path.exists(row["path"]):
        gone = " (removed by the checkpoint callback's top-k policy)" if row.get("deleted") else ""
        raise CheckpointError(row["id"], f"{where}, but that file no longer exists{gone}")
    if row.get("deleted"):
        raise CheckpointError(
            row["id"],
            f"{where}, but the store marks it deleted or overwritten: the file there now "
            "is not that checkpoint; pass the path to compare the file as it is now",
        )


def metrics_at(run: Run, step: int | None, wall_time: float) -> dict[str, tuple[float, int | None]]:
    """Every metric of ``run`` at the checkpoint: key -> (value, the step it was logged at)."""
    out = {}
    for key in run.metric_keys():
        if step is None:
            df = run.metrics(key, x="time", end=wall_time)
            if len(df):
                out[key] = (float(df.value.iloc[-1]), int(df.step.iloc[-1]))
            continue
        window = FIRST_WINDOW
        while True:
            lo = max(0, step - window)
            df = run.metrics(key, start=lo, end=step)
            df = df[(df.step < step) | (df.wall_time <= wall_time)]
            if len(df):
                out[key] = (float(df.value.iloc[-1]), int(df.step.iloc[-1]))
                break
            if lo == 0:
                break
            window *= 16
    return out
