"""The Recorder: what training calls to record a run into a store.

>>> rec = Recorder("sqlite:///runs.db", run_name="demo")          # doctest: +SKIP
>>> for step in range(100):                                        # doctest: +SKIP
...     rec.log({"loss": 1 / (step + 1)}, step=step)
>>> rec.close()                                                    # doctest: +SKIP

``log()`` is the hot path (see ``packing.py``); everything else (events, checkpoints, logs,
samples, control outcomes) is queued as an operation for the writer thread (``thread.py``),
which writes each batch in one transaction together with the run's heartbeat.
"""

from __future__ import annotations

import atexit
import collections
import math
import os
import socket
import struct
import threading
import time
import uuid
import weakref
from typing import Any

from .. import events as ev
from ..checkpoints import path_size
from ..errors import describe_exception
from ..jsonable import to_json
from ..run_groups import check_group, resolve_group
from ..store.batch import Batch
from ..store.engine import resolve_url
from ..store.text import MAX_NOTES, MAX_RUN_NAME, MAX_TAG, check_text
from ..store.writer import StoreWriter
from .alerting import RecorderAlerts, alert_data, alert_options
from .packing import MAX_STEP, Block, Packing
from .thread import WriterThread

_now = time.time


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class Recorder(Packing, WriterThread):
    """Records one run into a store.

    Args:
        store: database URL or SQLite file path; default ``$TMON_STORE`` or ``sqlite:///tmon.db``.
        run_name: a readable name; default ``<framework>-<date>-<time>``.
        run_id: attach to an existing run (e.g. a second node of a distributed run) instead of
            creating a new one.
        resume: with ``run_id``: record into run ``run_id`` as its owner, creating it when the store
            has none (a run that outlives its process: a Ray trial restarted after a failure, whose
            id is derived from the trial). Its ``group`` is resolved as for a new run.
        framework: the framework recorded with the run (``lightning``, ``hf``, ``keras``...).
        config: JSON-safe dict stored with the run (hyperparameters, trainer settings).
        flush_interval: seconds between writes (0.05 to 60).
        heartbeat_timeout: seconds without a heartbeat after which readers call the run ``lost``.
        max_buffer: the most unwritten points kept in memory while the store is failing.
        close_timeout: how long ``close()`` keeps retrying the final write.
        tags, notes: labels and free text stored with the run (for filtering and comparing runs).
        moves_last_step: whether the steps logged here advance the run's ``last_step`` (what
            ``tmon show`` counts as steps done). False for a recorder attached to add evaluation
            after the fit, whose metrics sit at the step after the last training step
            (``Recorder.attach``).
        alerts: live alerts over what is recorded (``tmon_core.alerts``): True for the default rules
            (NaN/inf, divergence, recurring spikes, memory, stalls, how the run ended), a list of
            rule names and ``Alert`` rules, False for none; None (default): on when ``notify`` or
            ``$TMON_NOTIFY`` gives somewhere to deliver them. Alerts are ``alert`` events.
        notify: apprise URLs to deliver alerts to (``slack://...``, ``mailto://...``,
            ``json://host/path``...); None reads ``$TMON_NOTIFY``. Needs ``pip install "tmon[alerts]"``.
        group: the group the run belongs to (a sweep, an experiment; ``tmon_core.run_groups``); None
            reads ``$TMON_GROUP`` (unset: no group). Ignored by a recorder attached to an existing run.
    """

    def __init__(
        self,
        store: str | os.PathLike | None = None,
        *,
        run_name: str | None = None,
        run_id: str | None = None,
        framework: str | None = None,
        config: dict | None = None,
        flush_interval: float = 1.0,
        heartbeat_timeout: float = 30.0,
        max_buffer: int = 1_000_000,
        close_timeout: float = 15.0,
        busy_timeout: float = 5.0,
        tags: list[str] | None = None,
        notes: str | None = None,
        moves_last_step: bool = True,
        alerts=None,
        notify=None,
        group: str | None = None,
        resume: bool = False,
    ):
        if not isinstance(flush_interval, (int, float)) or not 0.05 <= flush_interval <= 60:
            raise ValueError(
                f"flush_interval must be between 0.05 and 60 seconds, received flush_interval={flush_interval!r}"
            )
        if not isinstance(heartbeat_timeout, (int, float)) or heartbeat_timeout <= flush_interval:
            raise ValueError(
                f"heartbeat_timeout must be a number of seconds above flush_interval={flush_interval}, "
                f"received heartbeat_timeout={heartbeat_timeout!r}"
            )
        if tags is not None and (isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags)):
            raise ValueError(f"tags must be a list of non-empty strings, received tags={tags!r}")
        if notes is not None and not isinstance(notes, str):
            raise ValueError(f"notes must be a string, received notes={notes!r}")
        if run_name is not None:
            check_text("run_name", run_name, MAX_RUN_NAME)
        for tag in tags or ():
            check_text("tags", tag, MAX_TAG)
        if notes is not None:
            check_text("notes", notes, MAX_NOTES)
        if framework is not None:
            check_text("framework", framework, 64)
        if run_id is None or resume:
            group = resolve_group(group)  # the option, else $TMON_GROUP
        elif group is not None:  # an attached recorder adds to a run that has its group already
            check_group(group)
        alert_rules, alert_custom, alert_urls = alert_options(alerts, notify)
        if not isinstance(max_buffer, int) or max_buffer < 1000:
            raise ValueError(f"max_buffer must be an int >= 1000 points, received max_buffer={max_buffer!r}")
        self.url = resolve_url(store)
        self.run_id = run_id or new_run_id()
        self.group = group
        self.flush_interval = float(flush_interval)
        self.close_timeout = float(close_timeout)
        self.max_buffer = max_buffer
        self.dropped = 0  # points lost because the store failed for too long
        self.problems: list[str] = []  # the store problems seen, in order (the last 100)
        self.repeated_problems = 0  # how often the last problem repeated without being logged again
        self.closed = False
        created = _now()
        self._config: dict = dict(config or {})
        self._run_row = {
            "id": self.run_id,
            "name": run_name
            or f"{framework or 'run'}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(created))}",
            "status": ev.RUNNING,
            "framework": framework,
            "created_at": created,
            "heartbeat_at": created,
            "heartbeat_timeout": float(heartbeat_timeout),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "config": to_json(self._config),
            "dropped_points": 0,
            "tags": to_json(list(tags)) if tags else None,
            "notes": notes,
            "group_name": group,
        }
        self._attach = run_id is not None and not resume  # (resume: the writer inserts the run when missing)
        self._moves_last_step = bool(moves_last_step)
        self._blocks: dict[tuple, Block] = {}  # (keys, value types) -> what log() received
        # what the writer has converted and no longer needs, for log() to free: freeing a tensor
        # releases the GIL, and in the writer each release is a hand-off to the training thread
        # and a wait to get it back (in a Lightning fit, 27 of the writer's 46 waits per flush)
        self._spent: collections.deque = collections.deque()
        self._ops: collections.deque = collections.deque()
        self._ok_keys: set[str] = set()
        self._next_step = 0
        self._unwritten: Batch | None = None
        self._refusals: dict[tuple, int] = {}  # (table, field) -> records the store refused
        self._failing_since: float | None = None
        self._writer: StoreWriter | None = None
        self._engine = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sampler = None
        self._request_listener = None
        self.checkpoint_dirs: set[str] = set()  # where checkpoint() recorded files: what rollback may load
        self._flush_listeners: list = []  # fn(batch) on the writer thread, after the live alerts
        self._alerts = None
        if alert_rules or alert_custom:
            self._alerts = RecorderAlerts(
                self,
                alert_rules,
                alert_custom,
                alert_urls,
                label=f"{self._run_row['name']} ({self.run_id[:8]})",
            )
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._open_store()
        self._thread = threading.Thread(
            target=self._run_writer, name=f"tmon-writer-{self.run_id}", daemon=True
        )
        self._thread.start()
        _live.add(self)

    @classmethod
    def attach(cls, url: str, run_id: str, *, like: Recorder | None = None, **kw: Any) -> Recorder:
        """A recorder that adds to run ``run_id`` of store ``url`` after another one recorded it
        (evaluation after the fit). Its steps do not advance the run's ``last_step``
        (``moves_last_step=False``); with ``like`` (the recorder of the fit), a metric logged
        without a step follows ``like``'s last one. Other keyword arguments go to ``Recorder``.

        Unlike a recorder that creates its run, it is not closed as ``interrupted`` when the
        process exits (the run's status is not its to set): its owner closes it, usually with
        ``close(None)``."""
        kw.setdefault("moves_last_step", False)
        rec = cls(url, run_id=run_id, **kw)
        _live.discard(rec)
        if like is not None:
            rec._next_step = like.next_step
        return rec

    # ------------------------------------------------------------------ hot path
    def log(
        self, metrics: dict[str, Any], step: int | None = None, *, wall_time: float | None = None
    ) -> None:
        """Record ``metrics`` (key -> number, numpy scalar or one-element tensor) at ``step``.

        ``step=None`` means one past the last step logged; ``wall_time`` (seconds since the epoch)
        defaults to now. Costs a few microseconds: the values are converted and written by the
        writer thread.
        """
        if step is None:
            step = self._next_step
        elif type(step) is not int or not 0 <= step <= MAX_STEP:
            step = self._check_step(step)
        if wall_time is None:
            wall_time = _now()
        elif type(wall_time) is not float or not math.isfinite(wall_time):
            wall_time = self._check_wall_time(wall_time)
        # the usual call: a key set and value types seen before
        values = tuple(metrics.values())
        block = self._blocks.get((tuple(metrics), tuple(map(type, values))))
        if block is None:
            return self._log_new(metrics, step, wall_time)
        try:
            entry = self._entry(block, values, step, wall_time)
        except (OverflowError, struct.error):  # an int beyond float range
            return self._log_new(metrics, step, wall_time)
        self._next_step = step + 1
        block.rows.append(entry)  # one append: the writer never sees half an entry
        if self._spent:  # tensors the writer is done with, freed here (see _spent)
            try:
                self._spent.popleft()
            except IndexError:  # the writer emptied it in between
                pass

    @property
    def next_step(self) -> int:
        """The step a metric logged without one gets: one past the last step logged (0 at first)."""
        return self._next_step

    # ------------------------------------------------------------------ everything else (not per step)
    def event(
        self,
        type: str,
        /,
        *,
        step: int | None = None,
        message: str | None = None,
        data: dict | None = None,
        **fields: Any,
    ) -> None:
        """Record an event (see ``tmon_core.events`` for the types tmon writes).

        Its data is ``data`` (any JSON-able dict, whatever its keys) updated with ``fields``."""
        if fields:
            data = {**(data or {}), **fields}
        self._ops.append(
            (
                "events",
                {
                    "wall_time": _now(),
                    "step": step,
                    "type": type,
                    "message": message,
                    "data": to_json(data) if data else None,
                },
            )
        )

    def checkpoint(
        self,
        path: str | os.PathLike,
        *,
        step: int | None = None,
        epoch: float | None = None,
        monitor: str | None = None,
        monitor_value: float | None = None,
        source: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        """Record a checkpoint written at ``path`` (file or directory; its size is taken now).

        Its real directory joins ``checkpoint_dirs``: a rollback of this run loads files there only,
        whatever a checkpoint row in the store (which anyone who can write the store can add) says."""
        path = os.path.abspath(os.fspath(path))
        size = path_size(path)
        self.checkpoint_dirs.add(os.path.realpath(os.path.dirname(path)))
        row = {
            "wall_time": _now(),
            "step": step,
            "epoch": epoch,
            "path": path,
            "size_bytes": size,
            "monitor": monitor,
            "monitor_value": _opt_float(monitor_value),
            "source": source,
            "description": description,
            "tags": to_json(list(tags)) if tags else None,
            "deleted": False,
        }
        self._ops.append(("checkpoints", row))
        self.event(
            ev.CHECKPOINT,
            step=step,
            message=path,
            path=path,
            size_bytes=size,
            epoch=epoch,
            monitor=monitor,
            monitor_value=_opt_float(monitor_value),
            source=source,
        )

    def checkpoint_removed(self, path: str | os.PathLike) -> None:
        """Mark a recorded checkpoint as deleted from disk (e.g. pruned by a top-k policy)."""
        self._ops.append(("removed_checkpoints", os.path.abspath(os.fspath(path))))

    def sample(self, host: dict | None, gpus: list[dict] = ()) -> None:
        """Record one hardware sample (called by ``HardwareSampler``)."""
        if host is not None:
            self._ops.append(("samples", host))
        for g in gpus:
            self._ops.append(("gpu_samples", g))

    def log_record(
        self,
        level: str,
        message: str,
        *,
        logger: str | None = None,
        source: str = "logging",
        step: int | None = None,
        wall_time: float | None = None,
    ) -> None:
        """Record a captured log line or warning."""
        self._ops.append(
            (
                "logs",
                {
                    "wall_time": wall_time or _now(),
                    "step": step,
                    "level": level,
                    "logger": logger,
                    "message": message,
                    "source": source,
                },
            )
        )

    def resolve_request(self, request_id: int, **fields: Any) -> None:
        """Write a control request's outcome (status, applied_step, old/new value, reason)."""
        for k in ("old", "new"):
            if k in fields:
                fields[f"{k}_value"] = to_json(fields.pop(k))
        self._ops.append(("request_updates", {"id": request_id, **fields}))

    def on_requests(self, listener) -> None:
        """Poll the store for this run's pending control requests at every flush; ``listener``
        receives each new one (a dict) on the writer thread."""
        self._request_listener = listener

    def on_flush(self, listener) -> None:
        """Call ``listener(batch)`` on the writer thread with what each flush holds (``batch.points``:
        key -> (steps, values, wall times) arrays; ``batch.events``...), before it is written. A
        listener that raises is dropped with a warning, never the flush. (A guard's divergence
        detector reads the loss here, off the training thread.)"""
        self._flush_listeners.append(listener)

    def alert(
        self,
        rule: str,
        level: str,
        title: str,
        text: str,
        *,
        step: int | None = None,
        evidence: dict | None = None,
    ) -> None:
        """Raise an alert from the training thread (a guard's action): an ``alert`` event like the
        live rules' (``run.alerts()`` lists it), delivered where they are when ``notify`` gave somewhere,
        whether or not the live rules are on. ``level``: info, warning or critical."""
        alert = {
            "rule": rule,
            "level": level,
            "title": title,
            "text": text,
            "step": step,
            "wall_time": _now(),
            "evidence": evidence or {},
        }
        if self._alerts is not None:
            self._alerts.say(alert)
        else:
            self.event(ev.ALERT, step=step, message=text, data=alert_data(alert))

    def update_config(self, **config: Any) -> None:
        """Merge ``config`` into the run's stored configuration."""
        self._config.update(config)
        self._ops.append(("run", {"config": to_json(self._config)}))

    def update_run(self, **fields: Any) -> None:
        """Set run fields such as ``name`` or ``total_steps``."""
        self._ops.append(("run", fields))

    def start_sampler(self, interval: float = 1.0, node_rank: int = 0, gpus: bool = True):
        """Start a ``HardwareSampler`` that writes into this run; it stops with ``close()``."""
        from ..sampler import HardwareSampler

        if self._sampler is None:
            self._sampler = HardwareSampler(self, interval=interval, node_rank=node_rank, gpus=gpus)
            self._sampler.start()
        return self._sampler

    @property
    def sampler(self):
        return self._sampler

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything recorded so far now; True when it reached the store."""
        done = threading.Event()
        self._ops.append(("flush", done))
        self._wake.set()
        return done.wait(timeout) and self._unwritten is None

    def close(self, status: str | None = ev.COMPLETED, error: BaseException | dict | None = None) -> None:
        """End the run with ``status`` (completed, failed, interrupted) and write everything left.

        ``status=None`` writes what is left without ending the run (a process that only added
        samples to a run another process owns)."""
        if self.closed:
            return
        self.closed = True
        _live.discard(self)
        if self._sampler is not None:
            self._sampler.stop()
        if self._alerts is not None:
            # the last points' alerts, then how the run ended, then their delivery: all before the last flush
            self.flush(timeout=min(self.close_timeout, 5.0))
            self._alerts.finish(
                status,
                None if error is None else error if isinstance(error, dict) else describe_exception(error),
            )
            self._alerts.close(timeout=min(self.close_timeout, 10.0))
        if status is not None:
            if self._request_listener is not None:
                self._ops.append(("reject_pending", f"run ended ({status}) before the request was applied"))
            fields: dict[str, Any] = {"status": status, "ended_at": _now()}
            if error is not None:
                fields["error"] = to_json(error if isinstance(error, dict) else describe_exception(error))
            self._ops.append(("run", fields))
        self._stop.set()
        self._wake.set()
        self._thread.join(self.close_timeout + 5)
        self._spent.clear()
        if self._unwritten is not None:
            n = self._unwritten.n_points()
            self.dropped += n
            self._problem(
                f"tmon could not write the last {n} points and {self._unwritten.n_rows() - n} other records of run "
                f"{self.run_id} to {self._safe_url()}: they are lost",
                force=True,
            )
        if self._writer is not None:
            self._writer.close()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.close(ev.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else ev.FAILED, exc)


def _opt_float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# Runs still open when the interpreter exits (a script that never called close()) are closed
# as interrupted, so their last points are written and their status is not left "running".
_live: weakref.WeakSet[Recorder] = weakref.WeakSet()


@atexit.register
def _close_live() -> None:
    for rec in list(_live):
        try:
            rec.close(
                ev.INTERRUPTED, {"type": "exit", "message": "the process exited before the run was closed"}
            )
        except Exception:
            pass
