"""torch checkpoints: Lightning ``.ckpt``, plain ``state_dict`` files (``.pt``, ``.pth``,
``pytorch_model.bin``) and training-loop dicts holding one (``{"model": ..., "optimizer": ...}``).

Loaded with ``torch.load(weights_only=True, mmap=True)``: the unpickler only builds tensors and
plain containers (anything else is refused, so nothing in the file runs), and tensor data stays
in the file, paged in as the diff reads it.
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import numpy as np

from . import guard
from .base import Budget, Checkpoint, TensorInfo, flatten, optimizer_params, plain, scheduler_params
from .errors import CheckpointError

#: where training loops commonly keep the model's state dict inside a checkpoint dict
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")
OPTIMIZER_KEYS = ("optimizer_states", "optimizer", "optimizer_state_dict", "optim", "optimizers")
SCHEDULER_KEYS = ("lr_schedulers", "scheduler", "lr_scheduler", "scheduler_state_dict", "schedulers")
STEP_KEYS = ("global_step", "step", "iteration", "iter")
#: most bytes of elements a view may have beyond its storage (an ``expand()``ed tensor: reading it
#: makes the copy), and most bytes a sparse tensor may take made dense
MAX_MATERIALIZED = 64 * 1024 * 1024
MAX_DENSE = 1024 * 1024 * 1024
#: how far nested dicts are searched for tensors, and how many values that search may visit
MAX_NESTING = 16
MAX_NESTED_VALUES = 1_000_000


def import_torch(path: str):
    try:
        import torch
    except ImportError:
        raise CheckpointError(path, "reading a torch checkpoint needs torch: pip install torch") from None
    return torch


def safe_load(path: str) -> Any:
    """``torch.load(path, weights_only=True)``, memory-mapped when the file allows; every failure a
    ``CheckpointError`` that says why."""
    guard.entry(path, dir_ok=False)  # torch opens it by name: no FIFO or device past this point
    torch = import_torch(path)
    # torch checks a loaded sparse tensor's indices against its shape only when asked: unchecked, an
    # index out of range crashes the process (a segfault) as soon as the tensor is made dense
    checked = torch.sparse.check_sparse_tensor_invariants(enable=True)
    try:
        try:
            with checked:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # a legacy (pre-1.6, non-zip) file cannot be memory-mapped: read it normally
            with checked:
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg:
            detail = re.search(r"WeightsUnpickler error: ([^\n]*)", msg) or re.search(
                r"([^\n]*unsupported GLOBAL[^\n]*)", msg, re.IGNORECASE
            )
            why = detail.group(1).strip().rstrip(".") if detail else "a type outside the allowed set"
            why = why.split(" was not an allowed global")[
                0
            ]  # torch goes on to suggest allowlisting it: not here
            raise CheckpointError(
                path,
                "refused to unpickle: the file holds objects that torch.load(weights_only=True) "
                f"does not allow ({why}); tmon never fully unpickles a checkpoint, since that "
                "can run code from the file. Re-save the weights as a state_dict or "
                "safetensors.",
            ) from None
        raise CheckpointError(
            path, f"truncated or corrupt pickle: {msg.splitlines()[0] if msg else exc!r}"
        ) from None
    except (EOFError, OSError) as exc:
        raise CheckpointError(
            path, f"truncated or corrupt: {type(exc).__name__}: {exc or 'unexpected end of file'}"
        ) from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if any(s in first for s in ("zip archive", "central directory", "PytorchStreamReader", "file_size")):
            raise CheckpointError(path, f"truncated or corrupt torch zip archive ({first})") from None
        raise CheckpointError(path, f"torch.load failed: {first}") from None
    except Exception as exc:  # a damaged pickle stream can raise nearly anything
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            path, f"not a readable torch checkpoint ({type(exc).__name__}: {first})"
        ) from None


def _is_tensor(v) -> bool:
    return type(v).__name__ in ("Tensor", "Parameter") and hasattr(v, "dtype") and hasattr(v, "shape")


def _tensor_dict(d) -> bool:
    return isinstance(d, dict) and any(_is_tensor(v) for v in d.values())


class TorchCheckpoint(Checkpoint):
    """A torch state dict (flat ``name -> tensor``), with whatever the file holds around it."""

    def __init__(self, path: str, state_dict: dict, fmt: str = "torch"):
        super().__init__(path)
        self.format = fmt
        self._sd: dict = {}
        self._flat_name: str | None = None
        self._flat = None
        skipped = []
        for name, t in state_dict.items():
            if not _is_tensor(t):
                skipped.append(str(name))
                continue
            name = str(name)
            self._sd[name] = t
            self.tensors[name] = TensorInfo(
                tuple(int(s) for s in t.shape), str(t.dtype).removeprefix("torch.")
            )
            if t.device.type == "meta":
                self.unreadable[name] = "a meta tensor (no data saved)"
            else:
                _check_extent(path, name, t)
        if skipped:
            self.notes.append(
                f"{len(skipped)} non-tensor state entries not compared: {', '.join(skipped[:5])}"
                + (" ..." if len(skipped) > 5 else "")
            )

    def add(self, other: TorchCheckpoint) -> None:
        """Merge another shard's tensors into this checkpoint."""
        for name in other._sd:
            if name in self._sd:
                raise CheckpointError(other.path, f"tensor {name!r} is in two shards")
        self._sd.update(other._sd)
        self.tensors.update(other.tensors)
        self.unreadable.update(other.unreadable)

    def _flat_tensor(self, name: str):
        if self._flat_name != name:
            t = self._sd[name]
            if t.layout != __import__("torch").strided:
                t = t.to_dense()
            if t.is_quantized:
                t = t.dequantize()
            self._flat = t.reshape(-1)  # a copy only when the saved tensor is a non-contiguous view
            self._flat_name = name
        return self._flat

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        return to_numpy(self._flat_tensor(name)[start:stop])

    def close(self) -> None:
        self._sd = {}
        self._flat = None  # drops the last reference to the mapped file


def _check_extent(path: str, name: str, t) -> None:
    """Refuse a tensor that claims far more elements than its file holds: a strided view over a
    small storage (stride 0, as ``expand()`` makes), or a sparse tensor with a vast dense shape.
    Comparing either makes the dense copy, so a tiny file could otherwise ask for terabytes."""
    import torch

    nbytes = t.numel() * t.element_size()
    if t.layout != torch.strided:
        if nbytes > MAX_DENSE:
            raise CheckpointError(
                path,
                f"tensor {name!r}: a sparse tensor of shape {list(t.shape)}, "
                f"{guard.human_bytes(nbytes)} once made dense to compare, more than the "
                f"{guard.human_bytes(MAX_DENSE)} accepted",
            )
        return
    held = t.untyped_storage().nbytes()
    if nbytes > held and nbytes > MAX_MATERIALIZED:
        raise CheckpointError(
            path,
            f"tensor {name!r}: shape {list(t.shape)} with strides {list(t.stride())} is "
            f"{guard.human_bytes(nbytes)} of elements over a storage of {held} bytes (an "
            f"overlapping view, as expand() makes); re-save it with .contiguous()",
        )


def to_numpy(t) -> np.ndarray:
    """A 1-d torch tensor as numpy; bfloat16 and float8 widened to float32, complex as (re, im) pairs."""
    import torch

    if t.is_complex():
        t = torch.view_as_real(t).reshape(-1)
    if t.dtype.is_floating_point and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()
    try:
        return t.numpy()
    except TypeError:  # an integer type numpy cannot take directly
        return t.to(torch.int64).numpy()


def open_torch(path: str) -> TorchCheckpoint:
    obj = safe_load(path)
    try:
        return _interpret(path, obj)
    except CheckpointError:
        raise
    except (
        TypeError,
        AttributeError,
        ValueError,
        KeyError,
        IndexError,
        RecursionError,
        OverflowError,
    ) as exc:
        raise CheckpointError(
            path, f"a checkpoint of unexpected structure ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _interpret(path: str, obj) -> TorchCheckpoint:
    if _is_tensor(obj):
        return TorchCheckpoint(path, {"tensor": obj})
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a state dict or a checkpoint dict")
    if "state_dict" in obj and (
        "pytorch-lightning_version" in obj or "optimizer_states" in obj or "global_step" in obj
    ):
        return _lightning(path, obj)
    if all(_is_tensor(v) for v in obj.values()):
        return TorchCheckpoint(path, obj)
    return _training_dict(path, obj)


def _lightning(path: str, obj: dict) -> TorchCheckpoint:
    if not isinstance(obj["state_dict"], dict):
        raise CheckpointError(path, "its 'state_dict' is not a dict")
    ck = TorchCheckpoint(path, obj["state_dict"], "lightning")
    ck.step = _int(obj.get("global_step"))
    ck.epoch = _num(obj.get("epoch"))
    p = ck.params  # global_step and epoch are the checkpoint's position, shown with it, not parameters
    if obj.get("pytorch-lightning_version"):
        p["lightning_version"] = obj["pytorch-lightning_version"]
    flatten("hparams", obj.get("hyper_parameters") or {}, p, budget=ck.budget)
    flatten("datamodule", obj.get("datamodule_hyper_parameters") or {}, p, budget=ck.budget)
    optimizer_params(_list(obj.get("optimizer_states")), p, ck.budget)
    scheduler_params(_list(obj.get("lr_schedulers")), p, ck.budget)
    callbacks = obj.get("callbacks")
    for key, state in callbacks.items() if isinstance(callbacks, dict) else ():
        _callback_state(ck, str(key), state)
    return ck


def _list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else []


def _callback_state(ck: Checkpoint, key: str, state: Any) -> None:
    """What Lightning callbacks keep in the checkpoint: the monitored value, the tmon run."""
    if not isinstance(state, dict):
        return
    if key.startswith("ModelCheckpoint") and state.get("monitor"):
        monitor = state["monitor"]
        if state.get("current_score") is not None:
            ck.metrics[monitor] = (_num(state["current_score"]), ck.step)
        if state.get("best_model_score") is not None:
            ck.metrics[f"best {monitor}"] = (_num(state["best_model_score"]), None)
    elif key.startswith("EarlyStopping"):
        m = re.search(r"'monitor': '([^']+)'", key)
        if m and state.get("best_score") is not None:
            ck.metrics[f"best {m.group(1)} (EarlyStopping)"] = (_num(state["best_score"]), None)
        if "wait_count" in state:
            ck.params["early_stopping.wait_count"] = plain(state["wait_count"], ck.budget)
    elif "TMonCallback" in key and state.get("run_id"):
        ck.params["tmon.run_id"] = state["run_id"]


def _training_dict(path: str, obj: dict) -> TorchCheckpoint:
    """A dict a training loop saved: find the state dict, the optimizer and the counters in it."""
    sd_key = next((k for k in STATE_DICT_KEYS if _tensor_dict(obj.get(k))), None)
    if sd_key is not None:
        sd, rest = obj[sd_key], {k: v for k, v in obj.items() if k != sd_key}
    else:  # tensors at the top level or in nested dicts (e.g. {"encoder": sd, "decoder": sd})
        sd, rest = {}, {}
        try:
            _collect(obj, "", sd, rest, Budget(MAX_NESTED_VALUES))
        except CheckpointError as exc:
            raise CheckpointError(path, exc.reason) from None
        if not sd:
            raise CheckpointError(
                path, f"holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:10]))})"
            )
    ck = TorchCheckpoint(path, sd)
    p = ck.params
    for key, value in rest.items():
        if key in OPTIMIZER_KEYS:
            optimizer_params(value if isinstance(value, (list, tuple)) else [value], p, ck.budget)
        elif key in SCHEDULER_KEYS:
            scheduler_params(value if isinstance(value, (list, tuple)) else [value], p, ck.budget)
        elif not _is_tensor(value) or value.numel() <= 1:
            flatten(str(key), value, p, budget=ck.budget)
    ck.step = next((_int(obj[k]) for k in STEP_KEYS if _int(obj.get(k)) is not None), None)
    ck.epoch = _num(obj.get("epoch"))
    return ck


def _collect(obj: dict, prefix: str, tensors: dict, rest: dict, budget: Budget, depth: int = 0) -> None:
    """Tensors of nested dicts under dotted names; the walk is bounded (a pickle can nest one dict
    in itself, or share it down many levels)."""
    for k, v in obj.items():
        if not budget.take():
            raise CheckpointError(None, f"more than {MAX_NESTED_VALUES} nested values around the tensors")
        name = f"{prefix}{k}"
        if k in OPTIMIZER_KEYS or k in SCHEDULER_KEYS:
            rest[name] = v
        elif _is_tensor(v):
            tensors[name] = v
        elif (
            isinstance(v, dict)
            and depth < MAX_NESTING
            and any(_is_tensor(x) or isinstance(x, dict) for x in v.values())
        ):
            _collect(v, f"{name}.", tensors, rest, budget, depth + 1)
        else:
            rest[name] = v


def _int(v) -> int | None:
    v = plain(v)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def _num(v) -> float | None:
    v = plain(v)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
