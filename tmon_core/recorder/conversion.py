"""What a metric value may be, and how the writer turns logged values into float64 columns.

The value rule (``prepare_value``, checked by ``log()`` on the hot path without a device sync):
a number, or a 0-d or one-element numpy array or tensor of real numbers. The conversions
(``column``, ``to_floats``) run in the writer thread, tensors in bulk: one stack and one transfer
per device and dtype, never a ``.item()`` per value.

torch is not imported to find out: a tensor can only have been logged once its user imported
torch, so ``sys.modules`` tells whether one may be present.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

PLAIN = frozenset({float, int})


def is_tensor(v: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(v, torch.Tensor)


def prepare_value(key: str, v: Any) -> Any:
    """Validate a non-plain metric value on the hot path; detach tensors (no device sync).

    The rule, the same for numpy and torch: a number, or a 0-d or one-element array or tensor of
    real numbers (stored as its value); anything holding more than one element, a complex value,
    a ``meta`` tensor (which has no value) is refused here, naming the key and the type."""
    if type(v) is bool:
        return float(v)
    if is_tensor(v):
        if v.numel() != 1:
            raise TypeError(
                f"metric {key!r}: a tensor value must hold one element, received a tensor of shape "
                f"{tuple(v.shape)}"
            )
        if v.is_complex():
            raise TypeError(f"metric {key!r}: a tensor value must be real, received a {v.dtype} tensor")
        if v.is_meta:
            raise TypeError(f"metric {key!r}: a meta tensor has no value to record (torch.device('meta'))")
        return v.detach() if v.requires_grad else v  # detach only costs where there is a graph to drop
    if isinstance(v, np.ndarray):
        if v.size != 1:
            raise TypeError(
                f"metric {key!r}: a numpy array value must hold one element, received an array of "
                f"shape {v.shape}"
            )
        if v.dtype.kind not in "biuf":
            raise TypeError(
                f"metric {key!r}: a numpy array value must hold a real number, received dtype {v.dtype}"
            )
        return v
    if isinstance(v, (complex, np.complexfloating)):
        raise TypeError(
            f"metric {key!r}: value must be a real number, received {type(v).__name__}: {v!r:.80}"
        )
    if hasattr(v, "__float__") and not isinstance(v, (str, bytes)):
        return v
    raise TypeError(
        f"metric {key!r}: value must be a number, a numpy scalar or a one-element tensor, "
        f"received {type(v).__name__}: {v!r:.80}"
    )


def to_floats(values: list) -> tuple[list[float], int]:
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
        if is_tensor(v):
            if v.is_complex() or v.is_meta:  # logged where real tensors were before: no value to keep
                out[i] = math.nan
                bad += 1
                continue
            pending.append((out, i, v))
        elif type(v) is not float:
            try:
                out[i] = float(
                    v.item() if isinstance(v, np.ndarray) else v
                )  # (numpy 2 refuses float() of 1-d)
            except OverflowError:  # an int beyond float range: the nearest float is ±inf
                out[i] = (math.inf if v > 0 else -math.inf) if isinstance(v, int) else math.nan
            except Exception:
                out[i] = math.nan
                bad += 1
    if pending:
        try:
            convert_tensors(pending)
        except Exception:  # e.g. a tensor on a device that went away: one at a time
            for target, i, t in pending:
                try:
                    target[i] = float(t)
                except Exception:
                    target[i] = math.nan
                    bad += 1
    return out, bad


def numpy_safe(torch, dtype) -> bool:
    """A CPU tensor of ``dtype`` has a numpy view (bfloat16 and complex go through ``.to``)."""
    return dtype in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )


def column(values: list, spent=None) -> tuple[np.ndarray, int]:
    """One metric's values from a group of entries as float64, and how many were not numbers.
    The usual columns take one call: all plain numbers (numpy), or all one-element tensors of one
    device and dtype (one stack and one transfer); anything else goes value by value.

    ``spent`` receives the tensors made here, for the training thread to free (see
    ``Recorder._spent``); the returned array then owns its memory."""
    kinds = set(map(type, values))
    if kinds <= PLAIN:
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
                    if stacked.device.type != "cpu" or not numpy_safe(torch, stacked.dtype):
                        stacked = stacked.to(device="cpu", dtype=torch.float64)  # one transfer
                    if spent is not None:
                        spent.append(stacked)  # the array below owns its memory
                    return np.array(stacked.numpy(), dtype=np.float64), 0
            except (RuntimeError, TypeError):
                pass
    floats, bad = to_floats(values)
    return np.asarray(floats, dtype=np.float64), bad


def convert_tensors(pending: list[tuple[list, int, Any]]) -> None:
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
