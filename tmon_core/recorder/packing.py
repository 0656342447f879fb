"""The packed hot path: what ``Recorder.log`` does with a key set it has seen before, and what it
does the first time.

``log()`` packs the step, the wall time and the numbers into one row of bytes for its key set
and appends it to that key set's deque: no SQL, no formatting, no ``.item()`` on a tensor
(tensors ride along as objects). Packing happens in the training thread while the values are
in its cache: the writer thread, on another core, then reads contiguous bytes instead of a
dozen scattered Python objects per step (in a Lightning fit that halved the writer's CPU).
``Recorder.log`` itself stays in ``api.py``, written out in full: every call saved there is
paid at every step.
"""

from __future__ import annotations

import collections
import functools
import math
import operator
import struct
from typing import Any

import numpy as np

from ..keys import check_key
from .conversion import is_tensor, prepare_value

MAX_STEP = 2**63 - 1


@functools.cache
def row_dtype(width: int) -> np.dtype:
    """The numpy view of ``width``-key rows packed by ``Block.pack``."""
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


class Block:
    """What ``log()`` received with one key set and one pattern of value types. Each entry is one
    packed row (step, wall time, the numbers) or, when some values are objects (tensors, other
    lazy values), ``(row, objects)``. Rows are packed in the training thread while the values are
    in its cache, and appended in one call, so the writer never sees half an entry and reads
    contiguous bytes rather than a dozen scattered objects per step. A block lives as long as
    its recorder: one per distinct key set and type pattern."""

    __slots__ = (
        "keys",
        "numbers",
        "objects",
        "tensors",
        "arrays",
        "pick_numbers",
        "pick_objects",
        "pack",
        "rows",
    )

    def __init__(
        self,
        keys: tuple[str, ...],
        objects: tuple[int, ...],
        tensors: tuple[int, ...] = (),
        arrays: tuple[int, ...] = (),
    ):
        self.keys = keys
        self.objects = objects  # positions (in keys) of the values kept as objects
        self.numbers = tuple(i for i in range(len(keys)) if i not in objects)
        self.tensors = tensors  # positions in the objects tuple that hold tensors (checked per call)
        self.arrays = arrays  # ... and numpy arrays (checked per call: a type says nothing of a shape)
        self.pick_numbers = _picker(self.numbers) if objects else None
        self.pick_objects = _picker(objects)
        self.pack = struct.Struct(f"<qd{len(self.numbers)}d").pack
        self.rows: collections.deque = collections.deque()  # appended by log(), popped by the writer


class Packing:
    """The parts of ``Recorder`` that fill the blocks: one entry per ``log()`` call, and the
    checks of a key set, a value pattern, a step or a wall time seen for the first time.
    Expects ``self._blocks``, ``self._ok_keys`` and ``self._next_step`` (set by ``Recorder``)."""

    _blocks: dict[tuple, Block]
    _ok_keys: set[str]
    _next_step: int

    @staticmethod
    def _entry(block: Block, values: tuple, step: int, wall_time: float):
        """One entry of ``block``: the packed row, with the object values where there are some
        (tensors checked: one element each, detached where they carry a graph)."""
        if block.pick_numbers is None:
            return block.pack(step, wall_time, *values)
        objects = block.pick_objects(values)
        if block.arrays:
            for i in block.arrays:
                a = objects[i]
                if a.size != 1 or a.dtype.kind not in "biuf":
                    prepare_value(block.keys[block.objects[i]], a)  # raises the clear error
        if block.tensors:
            detached = None
            for i in block.tensors:
                t = objects[i]
                if t.numel() != 1:  # (dtype and device: checked when the pattern was new, and by the writer)
                    prepare_value(block.keys[block.objects[i]], t)  # raises the clear error
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
            prepare_value(k, v)  # raises on a value tmon cannot record
            if not _packable(t):
                if is_tensor(v):
                    tensors.append(len(objects))
                elif isinstance(v, np.ndarray):
                    arrays.append(len(objects))
                objects.append(i)
        keys, values = tuple(metrics), tuple(metrics.values())
        sig = (keys, tuple(map(type, values)))
        block = self._blocks.get(sig) or self._blocks.setdefault(
            sig, Block(keys, tuple(objects), tuple(tensors), tuple(arrays))
        )
        try:
            entry = self._entry(block, values, step, wall_time)
        except (OverflowError, struct.error):
            # an int beyond float range: every value of the entry goes to the writer as an object
            # (it stores such an int as +-inf)
            sig = (keys, None)
            tensors = [i for i, v in enumerate(values) if is_tensor(v)]
            arrays = [i for i, v in enumerate(values) if isinstance(v, np.ndarray)]
            block = self._blocks.get(sig) or self._blocks.setdefault(
                sig, Block(keys, tuple(range(len(keys))), tuple(tensors), tuple(arrays))
            )
            entry = self._entry(block, values, step, wall_time)
        self._next_step = step + 1
        block.rows.append(entry)

    @staticmethod
    def _check_step(step: Any) -> int:
        if hasattr(step, "__index__") and not isinstance(step, bool):
            step = step.__index__()
            if 0 <= step <= MAX_STEP:
                return step
        raise ValueError(f"step must be a non-negative integer below 2**63, received step={step!r}")

    @staticmethod
    def _check_wall_time(wall_time: Any) -> float:
        if (
            isinstance(wall_time, (int, float))
            and not isinstance(wall_time, bool)
            and math.isfinite(wall_time)
        ):
            return float(wall_time)
        raise ValueError(
            f"wall_time must be seconds since the epoch (a finite number), received wall_time={wall_time!r}"
        )
