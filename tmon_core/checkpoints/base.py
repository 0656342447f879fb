"""What every checkpoint format gives the diff: ``Checkpoint`` (tensor names, shapes and dtypes
up front, data a slice at a time), ``TensorInfo``, and the bounded flattening of the parameters
around the tensors (hyperparameters, optimizer param groups, scheduler counters) into dotted keys.

The format modules (``torch.py``, ``safetensors.py``, ``hf.py``, ``keras.py``) build on this
module; ``opener.py`` picks one of them for a path. Nothing here imports them.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

#: parameter values longer than this are summarised, not kept
MAX_PARAM_LIST = 32


class TensorInfo(NamedTuple):
    shape: tuple[int, ...]
    dtype: str  # torch-style name: float32, bfloat16, int64, bool, ...

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class Checkpoint:
    """One opened checkpoint.

    ``tensors`` maps each tensor name to its shape and dtype (file order); ``read(name, start,
    stop)`` returns the flat elements ``[start, stop)`` as a numpy array (bfloat16 and float8
    already widened to float32); ``params`` holds flattened hyperparameters and configuration,
    ``metrics`` maps a metric name to ``(value, step or None)``; ``notes`` says what was skipped.
    """

    format = "?"

    def __init__(self, path: str):
        self.path = path
        self.tensors: dict[str, TensorInfo] = {}
        self.params: dict[str, Any] = {}
        self.metrics: dict[str, tuple[float, int | None]] = {}
        self.step: int | None = None
        self.epoch: float | None = None
        self.notes: list[str] = []
        #: names that are present but cannot be compared (non-numeric): name -> why
        self.unreadable: dict[str, str] = {}
        #: what reading the parameters may still visit (see ``MAX_PARAM_VALUES``)
        self.budget = Budget()

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.path!r}: {len(self.tensors)} tensors>"


# ------------------------------------------------------------------ parameters
#: values one checkpoint's parameters may visit in all: a pickle can share one container many times
#: over, so a small file can describe a tree too large to walk
MAX_PARAM_VALUES = 200_000
#: deepest nesting of dicts flattened into dotted keys, and of lists kept as lists
MAX_PARAM_DEPTH = 32
MAX_LIST_DEPTH = 3


class Budget:
    """What is left of ``MAX_PARAM_VALUES`` for one checkpoint; ``spent`` once it ran out."""

    def __init__(self, values: int = MAX_PARAM_VALUES):
        self.left = values
        self.spent = False

    def take(self) -> bool:
        self.left -= 1
        if self.left < 0:
            self.spent = True
        return not self.spent


def plain(value: Any, budget: Budget | None = None, _depth: int = 0) -> Any:
    """A JSON-friendly, comparable form of a parameter value (small tensors become lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return (
            value.item()
            if value.ndim == 0
            else (
                value.tolist()
                if value.size <= MAX_PARAM_LIST
                else f"<array {list(value.shape)} {value.dtype}>"
            )
        )
    if type(value).__name__ in ("Tensor", "Parameter") and hasattr(value, "numel"):
        if value.numel() == 1 and value.ndim == 0:
            return value.item()
        if value.numel() <= MAX_PARAM_LIST:
            return value.tolist()
        return f"<tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}>"
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_PARAM_LIST or _depth >= MAX_LIST_DEPTH:
            return f"<list of {len(value)}>"
        budget = budget or Budget()
        return [plain(v, budget, _depth + 1) if budget.take() else "<not read>" for v in value]
    if isinstance(value, dict):  # repr() of a dict sharing its values could run for ever: walk it, bounded
        if len(value) > MAX_PARAM_LIST or _depth >= MAX_LIST_DEPTH:
            return f"<dict of {len(value)}>"
        budget = budget or Budget()
        return {
            str(k): plain(v, budget, _depth + 1) if budget.take() else "<not read>" for k, v in value.items()
        }
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, (set, frozenset)):
        if len(value) > MAX_PARAM_LIST or not all(
            v is None or isinstance(v, (bool, int, float, str)) for v in value
        ):
            return f"<set of {len(value)}>"
    return repr(value)


def flatten(
    prefix: str,
    value: Any,
    out: dict[str, Any],
    skip: frozenset = frozenset(),
    budget: Budget | None = None,
    _depth: int = 0,
) -> dict[str, Any]:
    """Flatten nested dicts (and lists of dicts) into ``out`` under dotted keys; at most
    ``budget``'s values visited and ``MAX_PARAM_DEPTH`` levels followed."""
    budget = budget or Budget()
    if not budget.take():
        return out
    if _depth >= MAX_PARAM_DEPTH and isinstance(value, (dict, list, tuple)):
        out[prefix] = f"<nested more than {MAX_PARAM_DEPTH} levels deep: not read>"
    elif isinstance(value, dict):
        for k, v in value.items():
            if k in skip:
                continue
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out, skip, budget, _depth + 1)
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            flatten(f"{prefix}.{i}", v, out, skip, budget, _depth + 1)
    else:
        out[prefix] = plain(value, budget)
    return out


def optimizer_params(states: list, out: dict[str, Any], budget: Budget | None = None) -> None:
    """The hyperparameters of each param group of torch optimizer state dicts (not the state tensors)."""
    several = len(states) > 1
    for i, state in enumerate(states):
        if not isinstance(state, dict):
            continue
        prefix = f"optimizer{i}" if several else "optimizer"
        for j, group in enumerate(state.get("param_groups") or []):
            if not isinstance(group, dict):
                continue
            for k, v in group.items():
                if k == "params":
                    out[f"{prefix}.pg{j}.n_params"] = (
                        len(v) if isinstance(v, (list, tuple)) else plain(v, budget)
                    )
                else:
                    out[f"{prefix}.pg{j}.{k}"] = plain(v, budget)


def scheduler_params(states: list, out: dict[str, Any], budget: Budget | None = None) -> None:
    """The scalar state of LR schedulers (``last_epoch``, ``base_lrs``, ``_last_lr``...)."""
    several = len(states) > 1
    for i, state in enumerate(states):
        if not isinstance(state, dict):
            continue
        prefix = f"scheduler{i}" if several else "scheduler"
        for k, v in state.items():
            if k in ("lr_lambdas", "_get_lr_called_within_step", "_is_initial") or isinstance(v, dict):
                continue
            out[f"{prefix}.{str(k).lstrip('_')}"] = plain(v, budget)
