"""The writer thread behind ``Recorder``: it drains what ``log()`` and the other calls queued,
converts tensors in bulk (one device sync per flush, not per step), and writes each batch in
one transaction together with the run's heartbeat.

A store that fails (locked, unreachable, read-only, disk full) never raises into training:
the recorder warns once, keeps the unwritten batch (at most ``max_buffer`` points; older
points beyond that are dropped and counted in ``dropped`` and in the run row) and retries
at the next flush. A record the store cannot hold costs only itself: the writer makes text
storable (``store/text.py``), refuses a value no column can hold, and when the store refuses a
batch while it takes writes, finds the record to blame by bisection (``StoreWriter.write_each``);
every refused record is a ``record_refused`` event and the rest of the batch is written.
"""

from __future__ import annotations

import itertools
import logging
import operator
import threading
import time
import warnings

import numpy as np

from .. import events as ev
from ..store.batch import Batch
from ..store.engine import create_store_engine, ensure_schema
from ..store.records import clean_batch, describe, error_text, store_failure
from ..store.writer import StoreWriter
from .conversion import column
from .packing import row_dtype

log = logging.getLogger("tmon")

_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)
_now = time.time


class TMonStoreWarning(RuntimeWarning):
    """tmon could not write to its store; training goes on."""


# its public home: a captured warning is stored under "<module>.<name>" (tmon_core.recorder.TMonStoreWarning)
TMonStoreWarning.__module__ = "tmon_core.recorder"


class _StoreUnavailable(Exception):
    pass


class WriterThread:
    """The writer-thread half of ``Recorder``: ``_run_writer`` is the thread's loop; the rest runs
    in that thread, except ``_open_store`` (first called by ``Recorder.__init__``) and ``_problem``.
    Uses the recorder's state: ``_blocks``, ``_ops``, ``_spent``, ``_unwritten``, ``_writer``,
    ``_engine``, ``_wake``, ``_stop`` and the counters ``dropped``, ``problems``."""

    def _safe_url(self) -> str:
        if self._engine is not None:
            return self._engine.url.render_as_string(hide_password=True)
        return self.url.split("@")[-1] if "@" in self.url else self.url

    def _problem(self, message: str, force: bool = False) -> None:
        """Say what went wrong, once: a ``TMonStoreWarning`` (one channel: a logging line as well
        printed every message twice), then only counted while it repeats."""
        if self.problems and self.problems[-1] == message and not force:
            self.repeated_problems += 1
            return
        self.problems.append(message)
        del self.problems[:-100]  # a days-long outage must not grow memory
        try:
            warnings.warn(message, TMonStoreWarning, stacklevel=2)
        except Exception:  # warnings turned into errors (-W error): still never raise into training
            log.warning(message)

    def _open_store(self) -> bool:
        try:
            if self._engine is None:
                self._engine = create_store_engine(
                    self.url, writer=True, busy_timeout_ms=self._busy_timeout_ms
                )
            ensure_schema(self._engine)
            writer = StoreWriter(self._engine, self.run_id, self._run_row, run_exists=self._attach)
            if not self._attach:
                writer.write(Batch())  # the run is visible to readers from the start, not the first flush
            self._writer = writer
            return True
        except ValueError:
            raise
        except Exception as exc:
            self._problem(
                f"tmon cannot open its store {self._safe_url()} ({error_text(exc)}); "
                f"training continues, tmon keeps the data in memory and retries"
            )
            self._reconnect()
            return False

    def _run_writer(self) -> None:
        deadline = None
        while True:
            stopping = self._stop.is_set()
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._flush_once()
            except Exception as exc:  # never let the writer thread die
                self._problem(f"tmon writer error: {type(exc).__name__}: {exc}")
            if stopping or self._stop.is_set():
                if (
                    self._unwritten is None
                    and not any(b.rows for b in list(self._blocks.values()))
                    and not self._ops
                ):
                    return
                deadline = deadline or _now() + self.close_timeout
                if _now() > deadline:
                    return
                time.sleep(min(0.2, self.flush_interval))

    def _drain(self) -> tuple[Batch, list[threading.Event]]:
        batch = Batch()
        waiters: list[threading.Event] = []
        points = batch.points
        # each block's rows are one 2-D array; its object values (tensors, lazy values) are
        # converted column by column, a column of tensors in one call
        chunks: dict[str, list[tuple]] = {}
        last = -1
        if self._spent:  # nothing was logged since the last flush: free them here after all
            self._spent.clear()
        spent: list = []  # what this flush converts, handed back in one piece (see _spent)
        for block in list(self._blocks.values()):
            rows = block.rows
            entries = list(itertools.starmap(rows.popleft, itertools.repeat((), len(rows))))
            if not entries:
                continue
            if block.objects:
                objects = list(map(_SECOND, entries))
                entries = map(_FIRST, entries)
            table = np.frombuffer(b"".join(entries), dtype=row_dtype(len(block.numbers)))
            steps, walls, numbers = np.array(table["step"]), np.array(table["wall"]), table["values"]
            last = max(last, int(steps.max()))
            for i, j in enumerate(block.numbers):
                chunks.setdefault(block.keys[j], []).append((steps, numbers[:, i], walls))
            for i, j in enumerate(block.objects):
                col, bad = column(list(map(operator.itemgetter(i), objects)), spent)
                if bad:
                    self._problem(
                        f"tmon: {bad} value(s) of metric {block.keys[j]!r} could not be converted to a "
                        f"number; stored as NaN"
                    )
                chunks.setdefault(block.keys[j], []).append((steps, col, walls))
            if block.objects:
                spent.append(objects)
        if spent:
            self._spent.append(spent)
        for key, parts in chunks.items():
            points[key] = parts[0] if len(parts) == 1 else tuple(np.concatenate(p) for p in zip(*parts))
        batch.last_step = last if last >= 0 and self._moves_last_step else None
        ops = self._ops
        for _ in range(len(ops)):
            kind, payload = ops.popleft()
            if kind == "flush":
                waiters.append(payload)
            elif kind == "reject_pending":
                batch.reject_pending = payload
            elif kind == "run":
                batch.run_update.update(payload)
            elif kind == "removed_checkpoints":
                batch.removed_checkpoints.append((payload, len(batch.checkpoints)))
            else:
                getattr(batch, kind).append(payload)
        return batch, waiters

    def _flush_once(self) -> None:
        batch, waiters = self._drain()
        if self._alerts is not None:  # what this batch raises is written with it
            self._alerts.on_flush(batch)
        for listener in list(self._flush_listeners):
            try:
                listener(batch)
            except Exception as exc:  # a listener is never worth a lost flush
                self._flush_listeners.remove(listener)
                log.warning("tmon: a flush listener of run %s failed and is dropped: %s", self.run_id, exc)
        # each record is checked once, before it can join a backlog: a record the store cannot
        # hold leaves the batch here and costs only itself
        refused = clean_batch(batch)
        if self._unwritten is not None:
            self._unwritten.absorb(batch)
            batch = self._unwritten
            self._unwritten = None
        try:
            if self._writer is None and not self._open_store():
                raise _StoreUnavailable
            if self.dropped:
                batch.run_update["dropped_points"] = self.dropped
            # closing: the last write brings the summaries up to date (close() queued everything first)
            final = self._stop.is_set()
            try:
                fresh = self._writer.write(
                    batch, poll_requests=self._request_listener is not None, final=final
                )
            except Exception as exc:
                if store_failure(exc) or not self._writer.probe():
                    raise
                # the store takes writes, so a record of this batch is what fails: write the others
                fresh = None
                more, rest, error = self._writer.write_each(batch, final=final)
                refused += more
                if rest is not None:  # the store itself failed meanwhile: the rest waits
                    batch = rest
                    raise error from None
            if self._failing_since is not None:
                # the run record shows the outage: when, how long, what could not be kept
                self.event(
                    ev.STORE_GAP,
                    message=f"the store could not be written for {_now() - self._failing_since:.1f} s",
                    since=self._failing_since,
                    until=_now(),
                    dropped_points=self.dropped,
                )
                self._failing_since = None
                self._problem(f"tmon store recovered: {self._safe_url()} is writable again; backlog written")
        except Exception as exc:
            if not isinstance(exc, _StoreUnavailable):
                self._problem(
                    f"tmon could not write to {self._safe_url()} ({error_text(exc)}); "
                    f"training continues, tmon keeps the data in memory and retries"
                )
                self._reconnect()
            self._keep_unwritten(batch)
            if self._failing_since is None:
                self._failing_since = _now()
            fresh = None
        for r in refused:
            self._refused(r)
        if fresh:
            try:
                self._request_listener(fresh)
            except Exception as exc:  # the batch is written: a listener error must not rewrite it
                # nor leave the requests pending for ever (the poll has moved past them)
                reason = f"the run could not take the request: {type(exc).__name__}: {exc}"[:1000]
                for r in fresh:
                    self.resolve_request(r["id"], status="rejected", applied_at=_now(), reason=reason)
                self._problem(f"tmon control: could not take requests {[r['id'] for r in fresh]}: {exc}")
        for w in waiters:
            w.set()

    def _refused(self, refusal: dict) -> None:
        """Say that the store refused one record (the others were written): a ``record_refused``
        event for each, a warning for the first of each table and field."""
        if refusal.get("type") != ev.RECORD_REFUSED:  # (a refused refusal is not reported again)
            self.event(ev.RECORD_REFUSED, message=f"tmon could not store a {describe(refusal)}", data=refusal)
        seen = (refusal["table"], refusal.get("field"))
        self._refusals[seen] = self._refusals.get(seen, 0) + 1
        if self._refusals[seen] == 1:
            self._problem(
                f"tmon could not store a {describe(refusal)}; the run's other records were written "
                f"(each record refused is a {ev.RECORD_REFUSED!r} event of run {self.run_id})"
            )

    def _reconnect(self) -> None:
        """After a failed write: every pooled connection goes. SQLite opens a file read-only for
        good when it was read-only at connect time, so a store made writable again is only seen
        by new connections (the engine's ``connect`` hook also makes the -wal/-shm files it
        created while the file was read-only writable again)."""
        if self._writer is not None:
            self._writer.close(broken=True)
        if self._engine is not None:
            try:
                self._engine.dispose()
            except Exception:
                pass

    def _keep_unwritten(self, batch: Batch) -> None:
        """Hold a batch for the next try, dropping the oldest points beyond ``max_buffer``."""
        total = batch.n_points()
        excess = total - self.max_buffer
        if excess > 0:
            dropped = 0
            for key, (s, v, w) in list(batch.points.items()):
                cut = min(len(s), -(-excess * len(s) // total))  # each series gives up its share
                keep = np.argsort(w, kind="stable")[cut:]  # the oldest go
                keep.sort()
                batch.points[key] = (s[keep], v[keep], w[keep])
                dropped += cut
            self.dropped += dropped
            self._problem(
                f"tmon dropped the {dropped} oldest unwritten points of run {self.run_id}: "
                f"the store has been failing and the buffer holds at most {self.max_buffer}"
            )
        self._unwritten = batch
