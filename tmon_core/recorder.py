"""The Recorder: the training-side hot path and the writer thread behind it.

>>> rec = Recorder("sqlite:///runs.db", run_name="demo")          # doctest: +SKIP
>>> for step in range(100):                                        # doctest: +SKIP
...     rec.log({"loss": 1 / (step + 1)}, step=step)
>>> rec.close()                                                    # doctest: +SKIP

``log()`` packs the step, the wall time and the numbers into one row of bytes for its key set
and appends it to that key set's deque: no SQL, no formatting, no ``.item()`` on a tensor
(tensors ride along as objects). Packing happens in the training thread while the values are
in its cache: the writer thread, on another core, then reads contiguous bytes instead of a
dozen scattered Python objects per step (in a Lightning fit that halved the writer's CPU).
A daemon writer thread drains the deques every ``flush_interval`` seconds, converts tensors
in bulk (one device sync per flush, not per step), and writes each batch in one transaction
together with the run's heartbeat.

A store that fails (locked, unreachable, read-only, disk full) never raises into training:
the recorder warns once, keeps the unwritten batch (at most ``max_buffer`` points; older
points beyond that are dropped and counted in ``dropped`` and in the run row) and retries
at the next flush. A record the store cannot hold costs only itself: the writer makes text
storable (``store/text.py``), refuses a value no column can hold, and when the store refuses a
batch while it takes writes, finds the record to blame by bisection (``StoreWriter.write_each``);
every refused record is a ``record_refused`` event and the rest of the batch is written.
"""

from __future__ import annotations

import atexit
import collections
import functools
import itertools
import logging
import math
import operator
import os
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
import warnings
import weakref
from typing import Any

import numpy as np

from . import events as ev
from .keys import check_key
from .store.engine import create_store_engine, ensure_schema, resolve_url
from .store.records import clean_batch, describe, error_text, store_failure
from .store.text import MAX_NOTES, MAX_RUN_NAME, MAX_TAG, check_text
from .store.writer import Batch, StoreWriter, to_json

log = logging.getLogger("tmon")

_PLAIN = frozenset({float, int})
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)
_MAX_STEP = 2**63 - 1


@functools.cache
def _row_dtype(width: int) -> np.dtype:
    """The numpy view of ``width``-key rows packed by ``_Block.pack``."""
    return np.dtype([("step", "<i8"), ("wall", "<f8"), ("values", "<f8", (width,))])


def _packable(t: type) -> bool:
    """Values of type ``t`` go into a packed row as they are: Python and numpy numbers (their
    ``__float__`` is exact and cheap). Anything else (a tensor: ``__float__`` would sync its
    device; a lazy value) stays an object for the writer."""
    return issubclass(t, (float, int, np.floating, np.integer, np.bool_))


def _picker(idx: tuple[int, ...]):
    """A function returning the values at ``idx`` of a tuple, as a tuple."""
    if len(idx) == 1:
        i = idx[0]
        return lambda t: (t[i],)
    if not idx:
        return lambda t: ()
    return operator.itemgetter(*idx)


class _Block:
    """What ``log()`` received with one key set and one pattern of value types. Each entry is one
    packed row (step, wall time, the numbers) or, when some values are objects (tensors, other
    lazy values), ``(row, objects)``. Rows are packed in the training thread while the values are
    in its cache, and appended in one call, so the writer never sees half an entry and reads
    contiguous bytes rather than a dozen scattered objects per step. A block lives as long as
    its recorder: one per distinct key set and type pattern."""

    __slots__ = ("keys", "numbers", "objects", "tensors", "arrays", "pick_numbers", "pick_objects", "pack", "rows")

    def __init__(self, keys: tuple[str, ...], objects: tuple[int, ...], tensors: tuple[int, ...] = (),
                 arrays: tuple[int, ...] = ()):
        self.keys = keys
        self.objects = objects  # positions (in keys) of the values kept as objects
        self.numbers = tuple(i for i in range(len(keys)) if i not in objects)
        self.tensors = tensors  # positions in the objects tuple that hold tensors (checked per call)
        self.arrays = arrays  # ... and numpy arrays (checked per call: a type says nothing of a shape)
        self.pick_numbers = _picker(self.numbers) if objects else None
        self.pick_objects = _picker(objects)
        self.pack = struct.Struct(f"<qd{len(self.numbers)}d").pack
        self.rows: collections.deque = collections.deque()  # appended by log(), popped by the writer


_now = time.time


class TMonStoreWarning(RuntimeWarning):
    """tmon could not write to its store; training goes on."""


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _is_tensor(v: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(v, torch.Tensor)


def _prepare_value(key: str, v: Any) -> Any:
    """Validate a non-plain metric value on the hot path; detach tensors (no device sync).

    The rule, the same for numpy and torch: a number, or a 0-d or one-element array or tensor of
    real numbers (stored as its value); anything holding more than one element, a complex value,
    a ``meta`` tensor (which has no value) is refused here, naming the key and the type."""
    if type(v) is bool:
        return float(v)
    if _is_tensor(v):
        if v.numel() != 1:
            raise TypeError(f"metric {key!r}: a tensor value must hold one element, received a tensor of shape "
                            f"{tuple(v.shape)}")
        if v.is_complex():
            raise TypeError(f"metric {key!r}: a tensor value must be real, received a {v.dtype} tensor")
        if v.is_meta:
            raise TypeError(f"metric {key!r}: a meta tensor has no value to record (torch.device('meta'))")
        return v.detach() if v.requires_grad else v  # detach only costs where there is a graph to drop
    if isinstance(v, np.ndarray):
        if v.size != 1:
            raise TypeError(f"metric {key!r}: a numpy array value must hold one element, received an array of "
                            f"shape {v.shape}")
        if v.dtype.kind not in "biuf":
            raise TypeError(f"metric {key!r}: a numpy array value must hold a real number, received dtype {v.dtype}")
        return v
    if isinstance(v, (complex, np.complexfloating)):
        raise TypeError(f"metric {key!r}: value must be a real number, received {type(v).__name__}: {v!r:.80}")
    if hasattr(v, "__float__") and not isinstance(v, (str, bytes)):
        return v
    raise TypeError(
        f"metric {key!r}: value must be a number, a numpy scalar or a one-element tensor, "
        f"received {type(v).__name__}: {v!r:.80}"
    )


def _to_floats(values: list) -> tuple[list[float], int]:
    """The values of one series as Python floats, and how many could not be converted.

    numpy converts numbers, numpy scalars and bools in one call; tensors (if any) are converted
    in bulk, one transfer per device. A value whose ``__float__`` fails at flush time (an
    adapter may hand over lazily evaluated values) becomes NaN and is counted: one bad value
    never costs the rest of the batch."""
    torch = sys.modules.get("torch")
    if torch is None or not any(isinstance(v, torch.Tensor) for v in values):
        # (np.fromiter would take tensors too, one __float__ each: a device sync per value on a GPU)
        try:
            return np.fromiter(values, dtype=np.float64, count=len(values)).tolist(), 0
        except (TypeError, ValueError, RuntimeError, OverflowError):
            pass
    out = list(values)
    pending = []
    bad = 0
    for i, v in enumerate(out):
        if _is_tensor(v):
            if v.is_complex() or v.is_meta:  # logged where real tensors were before: no value to keep
                out[i] = math.nan
                bad += 1
                continue
            pending.append((out, i, v))
        elif type(v) is not float:
            try:
                out[i] = float(v.item() if isinstance(v, np.ndarray) else v)  # (numpy 2 refuses float() of 1-d)
            except OverflowError:  # an int beyond float range: the nearest float is ±inf
                out[i] = (math.inf if v > 0 else -math.inf) if isinstance(v, int) else math.nan
            except Exception:
                out[i] = math.nan
                bad += 1
    if pending:
        try:
            _convert_tensors(pending)
        except Exception:  # e.g. a tensor on a device that went away: one at a time
            for target, i, t in pending:
                try:
                    target[i] = float(t)
                except Exception:
                    target[i] = math.nan
                    bad += 1
    return out, bad


def _numpy_safe(torch, dtype) -> bool:
    """A CPU tensor of ``dtype`` has a numpy view (bfloat16 and complex go through ``.to``)."""
    return dtype in (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.int16,
                     torch.int8, torch.uint8, torch.bool)


def _column(values: list, spent=None) -> tuple[np.ndarray, int]:
    """One metric's values from a group of entries as float64, and how many were not numbers.
    The usual columns take one call: all plain numbers (numpy), or all one-element tensors of one
    device and dtype (one stack and one transfer); anything else goes value by value.

    ``spent`` receives the tensors made here, for the training thread to free (see
    ``Recorder._spent``); the returned array then owns its memory."""
    kinds = set(map(type, values))
    if kinds <= _PLAIN:
        try:
            return np.fromiter(values, dtype=np.float64, count=len(values)), 0
        except OverflowError:
            pass
    elif kinds == {np.ndarray}:  # one element each, real (checked by log())
        try:
            return np.fromiter(map(np.ndarray.item, values), dtype=np.float64, count=len(values)), 0
        except (TypeError, ValueError, OverflowError):
            pass
    elif len(kinds) == 1:
        torch = sys.modules.get("torch")
        if torch is not None and issubclass(next(iter(kinds)), torch.Tensor):
            try:
                # as few torch calls as can be: each releases the GIL, which in the writer thread
                # is a hand-off to the training thread and a wait to get it back
                stacked = torch.stack(values)  # fails on mixed shapes, devices or dtypes
                if stacked.is_complex() or stacked.is_meta:
                    raise TypeError  # value by value below: each one NaN and counted
                if stacked.dim() != 1:
                    stacked = stacked.reshape(-1)
                if len(stacked) == len(values):
                    if stacked.device.type != "cpu" or not _numpy_safe(torch, stacked.dtype):
                        stacked = stacked.to(device="cpu", dtype=torch.float64)  # one transfer
                    if spent is not None:
                        spent.append(stacked)  # the array below owns its memory
                    return np.array(stacked.numpy(), dtype=np.float64), 0
            except (RuntimeError, TypeError):
                pass
    floats, bad = _to_floats(values)
    return np.asarray(floats, dtype=np.float64), bad


def _convert_tensors(pending: list[tuple[list, int, Any]]) -> None:
    """Turn the tensors in ``pending`` into floats, one transfer per (device, dtype)."""
    import torch  # only reached when tensors were logged, so torch is already imported

    groups: dict[tuple, list[tuple[list, int, Any]]] = {}
    for item in pending:
        t = item[2]
        groups.setdefault((t.device, t.dtype), []).append(item)
    for items in groups.values():
        stacked = torch.stack([t if t.dim() == 0 else t.reshape(()) for _, _, t in items])
        floats = stacked.to(device="cpu", dtype=torch.float64).tolist()
        for (target, idx, _), f in zip(items, floats):
            target[idx] = f


class Recorder:
    """Records one run into a store.

    Args:
        store: database URL or SQLite file path; default ``$TMON_STORE`` or ``sqlite:///tmon.db``.
        run_name: a readable name; default ``<framework>-<date>-<time>``.
        run_id: attach to an existing run (e.g. a second node of a distributed run) instead of
            creating a new one.
        framework: the framework recorded with the run (``lightning``, ``hf``, ``keras``...).
        config: JSON-safe dict stored with the run (hyperparameters, trainer settings).
        flush_interval: seconds between writes (0.05 to 60).
        heartbeat_timeout: seconds without a heartbeat after which readers call the run ``lost``.
        max_buffer: the most unwritten points kept in memory while the store is failing.
        close_timeout: how long ``close()`` keeps retrying the final write.
        tags, notes: labels and free text stored with the run (for filtering and comparing runs).
        moves_last_step: whether the steps logged here advance the run's ``last_step`` (what
            ``tmon show`` counts as steps done). False for a recorder attached to add evaluation
            after the fit, whose metrics sit at the step after the last training step.
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
    ):
        if not isinstance(flush_interval, (int, float)) or not 0.05 <= flush_interval <= 60:
            raise ValueError(f"flush_interval must be between 0.05 and 60 seconds, received flush_interval={flush_interval!r}")
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
        if not isinstance(max_buffer, int) or max_buffer < 1000:
            raise ValueError(f"max_buffer must be an int >= 1000 points, received max_buffer={max_buffer!r}")
        self.url = resolve_url(store)
        self.run_id = run_id or new_run_id()
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
            "name": run_name or f"{framework or 'run'}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(created))}",
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
        }
        self._attach = run_id is not None
        self._moves_last_step = bool(moves_last_step)
        self._blocks: dict[tuple, _Block] = {}  # (keys, value types) -> what log() received
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
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._open_store()
        self._thread = threading.Thread(target=self._run_writer, name=f"tmon-writer-{self.run_id}", daemon=True)
        self._thread.start()
        _live.add(self)

    # ------------------------------------------------------------------ hot path
    def log(self, metrics: dict[str, Any], step: int | None = None, *, wall_time: float | None = None) -> None:
        """Record ``metrics`` (key -> number, numpy scalar or one-element tensor) at ``step``.

        ``step=None`` means one past the last step logged; ``wall_time`` (seconds since the epoch)
        defaults to now. Costs a few microseconds: the values are converted and written by the
        writer thread.
        """
        if step is None:
            step = self._next_step
        elif type(step) is not int or not 0 <= step <= _MAX_STEP:
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

    @staticmethod
    def _entry(block: _Block, values: tuple, step: int, wall_time: float):
        """One entry of ``block``: the packed row, with the object values where there are some
        (tensors checked: one element each, detached where they carry a graph)."""
        if block.pick_numbers is None:
            return block.pack(step, wall_time, *values)
        objects = block.pick_objects(values)
        if block.arrays:
            for i in block.arrays:
                a = objects[i]
                if a.size != 1 or a.dtype.kind not in "biuf":
                    _prepare_value(block.keys[block.objects[i]], a)  # raises the clear error
        if block.tensors:
            detached = None
            for i in block.tensors:
                t = objects[i]
                if t.numel() != 1:  # (dtype and device: checked when the pattern was new, and by the writer)
                    _prepare_value(block.keys[block.objects[i]], t)  # raises the clear error
                if t.requires_grad:
                    detached = detached or list(objects)
                    detached[i] = t.detach()
            if detached is not None:
                objects = tuple(detached)
        return block.pack(step, wall_time, *block.pick_numbers(values)), objects

    def _log_new(self, metrics: dict[str, Any], step: int, wall_time: float) -> None:
        """``log()`` (step and wall time checked) for a new key set or pattern of value types, or
        an int too big for a float: keys and values are checked one by one, and the pattern gets
        its block."""
        ok = self._ok_keys
        objects, tensors, arrays = [], [], []
        for i, (k, v) in enumerate(metrics.items()):
            if k not in ok:
                ok.add(check_key(k))
            t = type(v)
            if t is float or t is int:
                continue
            _prepare_value(k, v)  # raises on a value tmon cannot record
            if not _packable(t):
                if _is_tensor(v):
                    tensors.append(len(objects))
                elif isinstance(v, np.ndarray):
                    arrays.append(len(objects))
                objects.append(i)
        keys, values = tuple(metrics), tuple(metrics.values())
        sig = (keys, tuple(map(type, values)))
        block = self._blocks.get(sig) or self._blocks.setdefault(
            sig, _Block(keys, tuple(objects), tuple(tensors), tuple(arrays)))
        try:
            entry = self._entry(block, values, step, wall_time)
        except (OverflowError, struct.error):
            # an int beyond float range: every value of the entry goes to the writer as an object
            # (it stores such an int as +-inf)
            sig = (keys, None)
            tensors = [i for i, v in enumerate(values) if _is_tensor(v)]
            arrays = [i for i, v in enumerate(values) if isinstance(v, np.ndarray)]
            block = self._blocks.get(sig) or self._blocks.setdefault(
                sig, _Block(keys, tuple(range(len(keys))), tuple(tensors), tuple(arrays)))
            entry = self._entry(block, values, step, wall_time)
        self._next_step = step + 1
        block.rows.append(entry)

    @staticmethod
    def _check_step(step: Any) -> int:
        if hasattr(step, "__index__") and not isinstance(step, bool):
            step = step.__index__()
            if 0 <= step <= _MAX_STEP:
                return step
        raise ValueError(f"step must be a non-negative integer below 2**63, received step={step!r}")

    @staticmethod
    def _check_wall_time(wall_time: Any) -> float:
        if isinstance(wall_time, (int, float)) and not isinstance(wall_time, bool) and math.isfinite(wall_time):
            return float(wall_time)
        raise ValueError(f"wall_time must be seconds since the epoch (a finite number), received wall_time={wall_time!r}")

    # ------------------------------------------------------------------ everything else (not per step)
    def event(self, type: str, /, *, step: int | None = None, message: str | None = None,
              data: dict | None = None, **fields: Any) -> None:
        """Record an event (see ``tmon_core.events`` for the types tmon writes).

        Its data is ``data`` (any JSON-able dict, whatever its keys) updated with ``fields``."""
        if fields:
            data = {**(data or {}), **fields}
        self._ops.append(("events", {"wall_time": _now(), "step": step, "type": type, "message": message,
                                     "data": to_json(data) if data else None}))

    def checkpoint(self, path: str | os.PathLike, *, step: int | None = None, epoch: float | None = None,
                   monitor: str | None = None, monitor_value: float | None = None, source: str | None = None,
                   description: str | None = None, tags: list[str] | None = None) -> None:
        """Record a checkpoint written at ``path`` (file or directory; its size is taken now).

        Its real directory joins ``checkpoint_dirs``: a rollback of this run loads files there only,
        whatever a checkpoint row in the store (which anyone who can write the store can add) says."""
        path = os.path.abspath(os.fspath(path))
        size = path_size(path)
        self.checkpoint_dirs.add(os.path.realpath(os.path.dirname(path)))
        row = {"wall_time": _now(), "step": step, "epoch": epoch, "path": path, "size_bytes": size,
               "monitor": monitor, "monitor_value": _opt_float(monitor_value), "source": source,
               "description": description, "tags": to_json(list(tags)) if tags else None, "deleted": False}
        self._ops.append(("checkpoints", row))
        self.event(ev.CHECKPOINT, step=step, message=path, path=path, size_bytes=size, epoch=epoch,
                   monitor=monitor, monitor_value=_opt_float(monitor_value), source=source)

    def checkpoint_removed(self, path: str | os.PathLike) -> None:
        """Mark a recorded checkpoint as deleted from disk (e.g. pruned by a top-k policy)."""
        self._ops.append(("removed_checkpoints", os.path.abspath(os.fspath(path))))

    def sample(self, host: dict | None, gpus: list[dict] = ()) -> None:
        """Record one hardware sample (called by ``HardwareSampler``)."""
        if host is not None:
            self._ops.append(("samples", host))
        for g in gpus:
            self._ops.append(("gpu_samples", g))

    def log_record(self, level: str, message: str, *, logger: str | None = None, source: str = "logging",
                   step: int | None = None, wall_time: float | None = None) -> None:
        """Record a captured log line or warning."""
        self._ops.append(("logs", {"wall_time": wall_time or _now(), "step": step, "level": level,
                                   "logger": logger, "message": message, "source": source}))

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

    def update_config(self, **config: Any) -> None:
        """Merge ``config`` into the run's stored configuration."""
        self._config.update(config)
        self._ops.append(("run", {"config": to_json(self._config)}))

    def update_run(self, **fields: Any) -> None:
        """Set run fields such as ``name`` or ``total_steps``."""
        self._ops.append(("run", fields))

    def start_sampler(self, interval: float = 1.0, node_rank: int = 0, gpus: bool = True):
        """Start a ``HardwareSampler`` that writes into this run; it stops with ``close()``."""
        from .sampler import HardwareSampler

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

    # ------------------------------------------------------------------ writer thread
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
                self._engine = create_store_engine(self.url, writer=True, busy_timeout_ms=self._busy_timeout_ms)
            ensure_schema(self._engine)
            writer = StoreWriter(self._engine, self.run_id, self._run_row)
            if self._attach:
                writer._run_created = True
            else:
                writer.write(Batch())  # the run is visible to readers from the start, not the first flush
            self._writer = writer
            return True
        except ValueError:
            raise
        except Exception as exc:
            self._problem(f"tmon cannot open its store {self._safe_url()} ({error_text(exc)}); "
                          f"training continues, tmon keeps the data in memory and retries")
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
                if self._unwritten is None and not any(b.rows for b in list(self._blocks.values())) and not self._ops:
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
            table = np.frombuffer(b"".join(entries), dtype=_row_dtype(len(block.numbers)))
            steps, walls, numbers = np.array(table["step"]), np.array(table["wall"]), table["values"]
            last = max(last, int(steps.max()))
            for i, j in enumerate(block.numbers):
                chunks.setdefault(block.keys[j], []).append((steps, numbers[:, i], walls))
            for i, j in enumerate(block.objects):
                col, bad = _column(list(map(operator.itemgetter(i), objects)), spent)
                if bad:
                    self._problem(f"tmon: {bad} value(s) of metric {block.keys[j]!r} could not be converted to a "
                                  f"number; stored as NaN")
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
                fresh = self._writer.write(batch, poll_requests=self._request_listener is not None, final=final)
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
                self.event(ev.STORE_GAP, message=f"the store could not be written for {_now() - self._failing_since:.1f} s",
                           since=self._failing_since, until=_now(), dropped_points=self.dropped)
                self._failing_since = None
                self._problem(f"tmon store recovered: {self._safe_url()} is writable again; backlog written")
        except Exception as exc:
            if not isinstance(exc, _StoreUnavailable):
                self._problem(f"tmon could not write to {self._safe_url()} ({error_text(exc)}); "
                              f"training continues, tmon keeps the data in memory and retries")
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
            self._problem(f"tmon could not store a {describe(refusal)}; the run's other records were written "
                          f"(each record refused is a {ev.RECORD_REFUSED!r} event of run {self.run_id})")

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
            self._problem(f"tmon dropped the {dropped} oldest unwritten points of run {self.run_id}: "
                          f"the store has been failing and the buffer holds at most {self.max_buffer}")
        self._unwritten = batch


class _StoreUnavailable(Exception):
    pass


def _opt_float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def path_size(path: str) -> int | None:
    """Size on disk of a file, or of every file under a directory."""
    try:
        if os.path.isdir(path):
            total = 0
            for root, _dirs, files in os.walk(path):
                for f in files:
                    try:
                        total += os.path.getsize(os.path.join(root, f))
                    except OSError:
                        pass
            return total
        return os.path.getsize(path)
    except (OSError, ValueError):  # ValueError: a path no file can have (NUL, a lone surrogate)
        return None


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error, from any framework or device."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"OutOfMemoryError", "MemoryError", "ResourceExhaustedError"}:
        return True
    text = str(exc).lower()
    return "out of memory" in text or "cuda_error_out_of_memory" in text or "oom when allocating" in text


def describe_exception(exc: BaseException) -> dict:
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:10_000],
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-50_000:],
        "oom": is_oom(exc),
    }


# Runs still open when the interpreter exits (a script that never called close()) are closed
# as interrupted, so their last points are written and their status is not left "running".
_live: weakref.WeakSet[Recorder] = weakref.WeakSet()


@atexit.register
def _close_live() -> None:
    for rec in list(_live):
        try:
            rec.close(ev.INTERRUPTED, {"type": "exit", "message": "the process exited before the run was closed"})
        except Exception:
            pass
