"""Writes one ``Batch`` of recorded data into the store in a single transaction.

Only the recorder's writer thread calls this; nothing here runs on the training hot path.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable

import numpy as np
from sqlalchemy import Connection, Engine, false, select, update

from . import chunks
from .batch import Batch
from .records import clean_row, error_text, refusal, store_failure
from .requests import parse_request_row
from .schema import (
    SUMMARY_EVERY_FLUSHES,
    SUMMARY_EVERY_POINTS,
    CheckpointRow,
    EventRow,
    GpuSampleRow,
    LogRow,
    RequestRow,
    RunRow,
    SampleRow,
)
from .summaries import SUMMARY_INSERT, SUMMARY_WIDTH, summarize, upsert_clause


def _placeholder(engine: Engine) -> str | None:
    style = engine.dialect.paramstyle
    return {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(style)


CHUNK_INSERT = (
    "INSERT INTO tmon_chunks (series_id, n, first_step, last_step, first_wall, last_wall, steps, vals, walls)"
)
CHUNK_WIDTH = 9
SERIES_INSERT = "INSERT INTO tmon_series (run_id, key)"


def raw_cursor(conn):
    """A DBAPI cursor inside ``conn``'s transaction. The writer's per-flush statements go through it:
    SQLAlchemy's execution context costs tens of microseconds per statement, paid again in GIL
    hand-offs while a fit runs, and these statements need none of it (their SQL is fixed text)."""
    return conn.connection.dbapi_connection.cursor()


def insert_rows(conn, head: str, width: int, rows: list[tuple], ph: str, tail: str = "", cursor=None) -> None:
    """``head VALUES (...), (...), ... tail`` for ``rows`` of ``width`` values, in a few statements.

    Not ``executemany``: it runs one statement per row, and Python's sqlite3 module releases and
    re-takes the GIL around each, so in a training process every row waits for the training
    thread to hand the GIL back (measured in a Lightning fit: ~40 us per row instead of ~1).
    Statements hold 2**k rows (``rows`` is cut by its binary digits), so their SQL text repeats
    from flush to flush and the driver's statement cache keeps them compiled."""
    limit = (
        32_766 if conn.dialect.name == "sqlite" else 65_535
    ) // width  # the drivers' bound-parameter caps
    size = 1 << (limit.bit_length() - 1)
    cur = cursor if cursor is not None else raw_cursor(conn)
    i = 0
    while i < len(rows):
        while size > len(rows) - i:
            size >>= 1
        cur.execute(
            _statement(head, width, size, ph, tail), tuple(itertools.chain.from_iterable(rows[i : i + size]))
        )
        i += size


@functools.lru_cache(maxsize=256)
def _statement(head: str, width: int, size: int, ph: str, tail: str) -> str:
    values = ", ".join(["(" + ", ".join([ph] * width) + ")"] * size)
    return f"{head} VALUES {values}{tail}"


class StoreWriter:
    """Owns the write side of one run: interned series ids, the fast insert statements."""

    def __init__(self, engine: Engine, run_id: str, run_row: dict, *, run_exists: bool = False):
        """``run_exists``: the run's row is in the store already (a recorder attached to an existing
        run): it is never inserted, only updated."""
        self.engine = engine
        self.run_id = run_id
        row, refused = clean_row(RunRow, run_row)
        if refused is not None:
            raise ValueError(f"tmon cannot create run {run_id}: its {refused['field']} {refused['reason']}")
        self._run_row = row
        self._run_created = run_exists
        self._last_request = 0
        self._series: dict[str, int] = {}
        ph = _placeholder(engine)
        if ph is None:
            raise ValueError(
                f"tmon stores run on SQLite or PostgreSQL (psycopg); the driver {engine.dialect.driver!r} "
                f"uses paramstyle {engine.dialect.paramstyle!r}, which tmon does not support"
            )
        self._heartbeat_sql = f"UPDATE tmon_runs SET heartbeat_at = {ph}, last_step = {ph} WHERE id = {ph}"
        self._poll_sql = (
            f"SELECT id, kind, payload, requested_by FROM tmon_requests WHERE run_id = {ph} "
            f"AND status = 'pending' AND id > {ph} ORDER BY id"
        )
        self._ph = ph
        self._summary_tail = upsert_clause()
        self._heads: dict[tuple, str] = {}  # (table, columns) -> "INSERT INTO table (columns)"
        # points written as chunks but not yet in the summaries: (series id, steps, values, walls)
        self._unsummarized: list[tuple] = []
        self._unsummarized_points = 0
        self._unsummarized_flushes = 0
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        """The writer's own connection, kept from flush to flush: a pool checkout and return (and
        the pool's reset) cost as much as a small flush's statements."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self.engine.connect()
        return conn

    def close(self, broken: bool = False) -> None:
        """Give the connection back (the engine's owner disposes of the engine). ``broken``: after
        a failed write, throw it away instead, so the next write starts on a fresh one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if broken:
                    conn.invalidate()
                conn.close()
            except Exception:  # a broken connection: nothing left to give back
                pass

    def write(
        self, batch: Batch, heartbeat: bool = True, poll_requests: bool = False, final: bool = False
    ) -> list[dict]:
        """Write ``batch`` in one transaction; with ``poll_requests``, return the run's control
        requests that became pending since the last call (rollbacks with their checkpoint row).
        ``final``: the run's last write, which brings the summaries up to date."""
        try:
            return self._write(batch, heartbeat, poll_requests, final)
        except BaseException:
            self.close(broken=True)
            raise

    def probe(self) -> bool:
        """Whether the store takes a write now (the run's heartbeat, nothing else): after a batch
        failed, tells "a record of the batch is bad" from "the store is down"."""
        try:
            self.write(Batch())
            return True
        except Exception:
            return False

    def write_each(
        self, batch: Batch, final: bool = False
    ) -> tuple[list[dict], Batch | None, BaseException | None]:
        """Write what the store takes of ``batch``, whose write failed while the store itself takes
        writes (``probe()``): the batch is written in halves, a failing half in halves again, down
        to the record that fails alone, which is refused. The other records are written, in
        their order, a bad one costing about two failed writes per halving (log2 of the batch).

        Returns the refusals (``records.refusal``), and, when the store itself failed meanwhile,
        what is left unwritten (from the first record not written, in order) and that error."""
        parts = batch.records()
        last = batch.last_step
        refused: list[dict] = []
        error: list[BaseException] = []

        def attempt(lo: int, hi: int) -> int:  # the index of the first record left unwritten
            try:
                self.write(Batch.of(parts[lo:hi], last), final=final)
                return hi
            except Exception as exc:
                if store_failure(exc):
                    error.append(exc)
                    return lo
                if hi - lo == 1:
                    if not self.probe():  # the store went away meanwhile: the record is not to blame
                        error.append(exc)
                        return lo
                    refused.append(_refusal(parts[lo][2], parts[lo][3], exc))
                    return hi
                mid = (lo + hi) // 2
                done = attempt(lo, mid)
                return done if done < mid else attempt(mid, hi)

        done = attempt(0, len(parts)) if parts else 0
        if done < len(parts):
            return refused, Batch.of(parts[done:], last), error[0]
        return refused, None, None

    def _write(self, batch: Batch, heartbeat: bool, poll_requests: bool, final: bool) -> list[dict]:
        fresh: list[dict] = []
        conn = self._connection()
        with conn.begin():
            cur = raw_cursor(conn)
            if not self._run_created:
                exists = conn.execute(select(RunRow.id).where(RunRow.id == self.run_id)).scalar()
                if exists is None:
                    conn.execute(RunRow.__table__.insert().values(**self._run_row))
            committed = self._write_points(conn, cur, batch.points, final)
            self._insert(conn, cur, EventRow, batch.events)
            self._insert(conn, cur, SampleRow, batch.samples)
            self._insert(conn, cur, GpuSampleRow, batch.gpu_samples)
            if batch.checkpoints or batch.removed_checkpoints:
                self._write_checkpoints(conn, cur, batch.checkpoints, batch.removed_checkpoints)
            self._insert(conn, cur, LogRow, batch.logs)
            for upd in batch.request_updates:
                upd = dict(upd)
                rid = upd.pop("id")
                conn.execute(
                    update(RequestRow)
                    .where(
                        RequestRow.id == rid, RequestRow.run_id == self.run_id, RequestRow.status == "pending"
                    )
                    .values(**upd)
                )
            if batch.reject_pending:
                conn.execute(
                    update(RequestRow)
                    .where(RequestRow.run_id == self.run_id, RequestRow.status == "pending")
                    .values(status="rejected", reason=batch.reject_pending, applied_at=time.time())
                )
            elif poll_requests:
                fresh = self._pending_requests(conn, cur)
            values = dict(batch.run_update)
            if heartbeat and batch.last_step is not None and not values:
                # every flush of a training run: a prepared statement, no SQL construction
                cur.execute(self._heartbeat_sql, (time.time(), batch.last_step, self.run_id))
            else:
                if heartbeat:
                    values["heartbeat_at"] = time.time()
                if batch.last_step is not None:
                    values["last_step"] = batch.last_step
                if values:
                    conn.execute(update(RunRow).where(RunRow.id == self.run_id).values(**values))
        self._run_created = True
        committed()
        if fresh:
            self._last_request = max(r["id"] for r in fresh)
        return fresh

    def _pending_requests(self, conn, cur) -> list[dict]:
        cur.execute(self._poll_sql, (self.run_id, self._last_request))
        rows = [dict(zip(("id", "kind", "payload", "requested_by"), r)) for r in cur.fetchall()]
        out = []
        for r in rows:
            # a request row is data from anyone who can write the store: whatever it holds, it ends
            # here as a request for the controller or rejected with the reason, never as an error
            # that fails the batch (and so every later flush) of a training run
            try:
                req = parse_request_row(r)
                if req["kind"] == "rollback":
                    cid = req["payload"].get("checkpoint_id")
                    ck = None
                    if isinstance(cid, int) and not isinstance(cid, bool):  # bounded to 64 bits by the parser
                        ck = (
                            conn.execute(select(CheckpointRow).where(CheckpointRow.id == cid))
                            .mappings()
                            .first()
                        )
                    req["payload"]["checkpoint"] = dict(ck) if ck else None
            except Exception as exc:
                reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                # (not counted in _last_request: should this transaction fail, the row is pending
                # again and the next poll rejects it again)
                conn.execute(
                    update(RequestRow)
                    .where(RequestRow.id == r["id"])
                    .values(status="rejected", applied_at=time.time(), reason=reason[:1000])
                )
                continue
            out.append(req)
        return out

    def _write_checkpoints(self, conn, cur, saves: list[dict], removals: list[tuple[str, int]]) -> None:
        """A path saved again or removed no longer holds the step its older rows name (Keras'
        ``ModelCheckpoint("best.keras", save_best_only=True)``, Lightning's ``last.ckpt``): those
        rows end deleted, in this transaction, before this batch's rows go in. Of this batch's
        saves of one path, the last stays live unless a removal of the path came after it."""
        last_save = {r["path"]: i for i, r in enumerate(saves)}
        removed_after: dict[str, int] = {}  # path -> saves recorded before its last removal
        for path, pos in removals:
            removed_after[path] = max(removed_after.get(path, -1), pos)
        paths = sorted(last_save.keys() | removed_after.keys())
        for i in range(0, len(paths), 500):
            conn.execute(
                update(CheckpointRow)
                .where(
                    CheckpointRow.run_id == self.run_id,
                    CheckpointRow.deleted == false(),
                    CheckpointRow.path.in_(paths[i : i + 500]),
                )
                .values(deleted=True)
            )
        rows = []
        for i, r in enumerate(saves):
            deleted = last_save[r["path"]] != i or removed_after.get(r["path"], -1) > i
            rows.append(r if r.get("deleted") is deleted else {**r, "deleted": deleted})
        self._insert(conn, cur, CheckpointRow, rows)

    def _insert(self, conn, cur, model, rows: list[dict]) -> None:
        """Rows of a side table (events, samples...), grouped by the columns they name (a column a
        row leaves out gets its default), in multi-row statements of fixed text."""
        if not rows:
            return
        groups: dict[tuple, list[tuple]] = {}
        run_id = self.run_id
        for r in rows:
            groups.setdefault(tuple(r), []).append((run_id, *r.values()))
        for names, values in groups.items():
            head = self._heads.get((model, names))
            if head is None:
                table = model.__table__
                unknown = [c for c in names if c not in table.columns or c == "run_id"]
                if unknown:
                    raise ValueError(f"{table.name} has no column(s) {unknown} that tmon can write")
                head = f"INSERT INTO {table.name} (run_id, {', '.join(names)})"
                self._heads[(model, names)] = head
            insert_rows(conn, head, len(names) + 1, values, self._ph, cursor=cur)

    def _resolve_series(self, conn, cur, keys: list[str], new: dict[str, int]) -> None:
        """Put the ids of the series of ``keys`` this writer does not know yet into ``new``,
        creating those the run does not have: a few statements for all of them (a fit's first
        flush meets a dozen keys at once; one SELECT and one INSERT each cost a writer in a
        training process about a millisecond)."""
        missing = [k for k in keys if k not in self._series]
        if not missing:
            return
        new.update(self._select_series(cur, missing))  # made by an earlier writer of this run
        todo = [k for k in missing if k not in new]
        if todo:
            insert_rows(conn, SERIES_INSERT, 2, [(self.run_id, k) for k in todo], self._ph, cursor=cur)
            new.update(self._select_series(cur, todo))
        # (cached once the transaction commits: a rolled-back id must not be reused)

    def _select_series(self, cur, keys: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        ph = self._ph
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            cur.execute(
                f"SELECT key, id FROM tmon_series WHERE run_id = {ph} AND key IN ({', '.join([ph] * len(part))})",
                (self.run_id, *part),
            )
            out.update(cur.fetchall())
        return out

    def _write_points(
        self, conn, cur, points: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], final: bool
    ) -> Callable[[], None]:
        """Insert the points' chunks; bring the summaries up to date when they are due. Returns
        what to remember once the transaction has committed."""
        rows: list[tuple] = []
        parts = []
        new: dict[str, int] = {}
        memo: dict = {}
        self._resolve_series(conn, cur, [k for k, p in points.items() if len(p[0])], new)
        known = self._series
        for key, (s, v, w) in points.items():
            if len(s):
                sid = known.get(key) or new[key]
                rows += chunks.encode(sid, s, v, w, memo)
                parts.append((sid, s, v, w))
        if rows:
            insert_rows(conn, CHUNK_INSERT, CHUNK_WIDTH, rows, self._ph, cursor=cur)
        pending = self._unsummarized + parts
        n_pending = self._unsummarized_points + sum(len(p[1]) for p in parts)
        flushes = self._unsummarized_flushes + bool(parts)
        if pending and (final or flushes >= SUMMARY_EVERY_FLUSHES or n_pending >= SUMMARY_EVERY_POINTS):
            insert_rows(
                conn,
                SUMMARY_INSERT,
                SUMMARY_WIDTH,
                summarize(_by_series(pending)),
                self._ph,
                self._summary_tail,
                cur,
            )
            # the largest chunk id now: this transaction holds the write lock (SQLite) and wrote
            # every chunk of these series, so each of them is in the summaries up to it
            cur.execute("SELECT MAX(id) FROM tmon_chunks")
            top = cur.fetchone()[0]
            sids = sorted({p[0] for p in pending})
            cur.execute(
                f"UPDATE tmon_series SET summarized_chunk = {int(top)} "
                f"WHERE id IN ({', '.join(str(int(i)) for i in sids)})"
            )
            pending, n_pending, flushes = [], 0, 0

        def committed() -> None:
            self._series.update(new)
            self._unsummarized, self._unsummarized_points, self._unsummarized_flushes = (
                pending,
                n_pending,
                flushes,
            )

        return committed


def _refusal(table: str, ident: dict, exc: BaseException) -> dict:
    """The refusal of a record the database would not take: the field when its error names a
    column of the table (a constraint, a trigger's message), else the field is unknown."""
    reason = f"refused by the database ({error_text(exc)})"
    if table == "tmon_runs":
        return refusal(table, ident["field"], reason, {})
    if table == "tmon_series":
        return refusal(table, "key", reason, ident)
    from .schema import TABLES

    names = [c.name for c in TABLES[table].columns if c.name != "run_id"]
    named = [n for n in names if f".{n}" in reason or f'"{n}"' in reason or f"column {n}" in reason]
    return refusal(table, named[0] if len(named) == 1 else None, reason, ident)


def _by_series(parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> list[tuple]:
    """One part per series id, the arrays of its parts concatenated in write order."""
    grouped: dict[int, list[tuple]] = {}
    for p in parts:
        grouped.setdefault(p[0], []).append(p[1:])
    return [
        (sid, *(ps[0] if len(ps) == 1 else (np.concatenate(c) for c in zip(*ps))))
        for sid, ps in grouped.items()
    ]
