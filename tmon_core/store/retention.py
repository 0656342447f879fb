"""Retention: delete a run, or prune the bulky data of old runs, and reclaim the space.

``prune`` keeps each old run's record, events, checkpoint records, control requests and
reports (what a report or a comparison needs) and removes its metric points and summaries,
hardware samples and captured logs, and, unless asked to keep them, its checkpoint files.
``delete_run`` removes everything of one run. Both take ``dry_run=True`` to only count.
"""

from __future__ import annotations

import os
import re
import shutil
import time

from sqlalchemy import delete, func, select, text, update

from ..events import RUNNING
from .schema import (
    CheckpointRow,
    ChunkRow,
    EventRow,
    GpuSampleRow,
    LogRow,
    ReportRow,
    RequestRow,
    RunRow,
    SampleRow,
    SeriesRow,
    SummaryRow,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text_: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` -> seconds."""
    m = _DURATION.match(text_ or "")
    if not m:
        raise ValueError(f"a duration like 30d, 12h, 90m or 3600s is expected, received {text_!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _counts(conn, run_ids: list[str], tables) -> dict[str, int]:
    series = select(SeriesRow.id).where(SeriesRow.run_id.in_(run_ids)).scalar_subquery()
    out = {}
    for model in tables:
        if model in (ChunkRow, SummaryRow):
            q = select(func.count()).select_from(model).where(model.series_id.in_(series))
        else:
            q = select(func.count()).select_from(model).where(model.run_id.in_(run_ids))
        out[model.__tablename__] = conn.execute(q).scalar() or 0
        if model is ChunkRow:  # what the user logged, not how it is packed
            out["points"] = (
                conn.execute(select(func.sum(ChunkRow.n)).where(ChunkRow.series_id.in_(series))).scalar() or 0
            )
    return out


def _remove_files(conn, run_ids: list[str], dry_run: bool) -> list[str]:
    rows = conn.execute(
        select(CheckpointRow.id, CheckpointRow.path).where(
            CheckpointRow.run_id.in_(run_ids), CheckpointRow.deleted.is_(False)
        )
    ).all()
    gone = []
    for _, path in rows:
        if os.path.exists(path):
            gone.append(path)
            if not dry_run:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if not dry_run and rows:
        conn.execute(update(CheckpointRow).where(CheckpointRow.run_id.in_(run_ids)).values(deleted=True))
    return gone


BULKY = (ChunkRow, SummaryRow, SampleRow, GpuSampleRow, LogRow)
EVERYTHING = BULKY + (SeriesRow, EventRow, CheckpointRow, RequestRow, ReportRow)


def _delete_rows(conn, run_ids: list[str], tables) -> None:
    series = select(SeriesRow.id).where(SeriesRow.run_id.in_(run_ids)).scalar_subquery()
    for model in tables:  # points and summaries first: they hang off the series
        if model in (ChunkRow, SummaryRow):
            conn.execute(delete(model).where(model.series_id.in_(series)))
        else:
            conn.execute(delete(model).where(model.run_id.in_(run_ids)))


def delete_run(store, run_id: str, *, delete_checkpoints: bool = True, dry_run: bool = False) -> dict:
    """Remove run ``run_id`` and all its rows (and its checkpoint files unless told to keep them)."""
    run = store.run(run_id)
    if run.status == RUNNING:
        raise ValueError(f"run {run.id} is still running: stop it before deleting it")
    with store.write_engine.begin() as conn:
        report = {"runs": [run.id], "rows": _counts(conn, [run.id], EVERYTHING), "files": []}
        if delete_checkpoints:
            report["files"] = _remove_files(conn, [run.id], dry_run)
        if not dry_run:
            _delete_rows(conn, [run.id], EVERYTHING)
            conn.execute(delete(RunRow).where(RunRow.id == run.id))
    if not dry_run:
        reclaim(store)
    return report


def prune(store, older_than: float | str, *, keep_checkpoints: bool = False, dry_run: bool = False) -> dict:
    """Remove the points, summaries, samples and logs (and checkpoint files unless
    ``keep_checkpoints``) of runs that ended more than ``older_than`` seconds (or ``"30d"``) ago."""
    seconds = parse_duration(older_than) if isinstance(older_than, str) else float(older_than)
    if seconds < 0:
        raise ValueError(f"older_than must be >= 0, received {older_than!r}")
    cutoff = time.time() - seconds
    with store.write_engine.begin() as conn:
        ids = (
            conn.execute(
                select(RunRow.id).where(
                    RunRow.status != RUNNING,
                    func.coalesce(RunRow.ended_at, RunRow.heartbeat_at, RunRow.created_at) < cutoff,
                )
            )
            .scalars()
            .all()
        )
        # a run still marked running whose heartbeat stopped long ago (lost) is old too
        lost = (
            conn.execute(
                select(RunRow.id).where(
                    RunRow.status == RUNNING,
                    RunRow.heartbeat_at < cutoff,
                    RunRow.heartbeat_at < time.time() - RunRow.heartbeat_timeout,
                )
            )
            .scalars()
            .all()
        )
        ids = sorted(set(ids) | set(lost))
        report = {"runs": ids, "rows": _counts(conn, ids, BULKY) if ids else {}, "files": []}
        if ids and not keep_checkpoints:
            report["files"] = _remove_files(conn, ids, dry_run)
        if ids and not dry_run:
            _delete_rows(conn, ids, BULKY)
            conn.execute(delete(SeriesRow).where(SeriesRow.run_id.in_(ids)))
    if ids and not dry_run:
        reclaim(store)
    return report


def reclaim(store) -> None:
    """Give freed pages back to the file system (SQLite ``VACUUM``; PostgreSQL ``VACUUM`` too)."""
    engine = store.write_engine
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            raw.driver_connection.execute("VACUUM")  # in WAL mode it writes through the log...
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # ...which this empties
        finally:
            raw.close()
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM"))
