"""Open a checkpoint of any supported format as a ``Checkpoint``: tensor names, shapes and dtypes
up front, tensor data on demand, a slice at a time.

=============================================  ==============================================
what                                           reader
=============================================  ==============================================
Lightning ``.ckpt``, torch ``.pt``/``.pth``/``.bin``  ``torch.load(weights_only=True, mmap=True)``
``.safetensors`` (one file)                    header parsed here, data read with ``pread``
HF checkpoint directory                        ``model.safetensors`` / shards + index /
                                               ``pytorch_model.bin``; ``config.json``,
                                               ``trainer_state.json``, ``optimizer.pt``
Keras ``.weights.h5``, ``.h5``, ``.keras``     h5py (a ``.keras`` zip is read in place)
=============================================  ==============================================

The format is found from the file's first bytes (a ``.ckpt`` that is really safetensors still
opens); the extension only picks the reader that explains a damaged file best. Nothing here
unpickles beyond what ``torch.load(weights_only=True)`` allows, so nothing executes code from a
checkpoint. torch, h5py and the rest are imported only when a file of theirs is opened.

A checkpoint's header is a set of claims, checked before any of them is acted on (``guard.py``):
only regular files and directories are opened (a FIFO or a device is refused unopened); shapes
are non-negative integers whose product, in Python ints, matches the bytes the file gives them;
offsets lie inside the file; dtypes are known; JSON nesting, header sizes, zip member counts and
inflation are bounded; HDF5 datasets the file does not hold are refused. Whatever a hostile file
says, a diff ends in bounded time and memory, or in a ``CheckpointError`` naming the file and field.

>>> with open_checkpoint("epoch=1-step=24.ckpt") as ck:          # doctest: +SKIP
...     ck.tensors["head.weight"], ck.read("head.weight", 0, 4)
"""

from __future__ import annotations

import math
import os
import stat
import struct
from typing import Any, NamedTuple

import numpy as np

from . import guard
from .errors import CheckpointError

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".tar")
H5_SUFFIXES = (".h5", ".hdf5")
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

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


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open ``path`` (a checkpoint file or a HF checkpoint directory) with the reader its content needs.

    Only a regular file or a directory is opened (symlinks followed, then checked): a FIFO, a
    device or a socket is refused before ``open()``, which could otherwise block or never end."""
    path = os.path.abspath(os.fspath(path))
    try:
        if stat.S_ISDIR(guard.entry(path).st_mode):
            from .hf_format import open_directory

            ck = open_directory(path)
        else:
            ck = _open_file(path)
    except CheckpointError:
        raise
    except (TypeError, AttributeError, KeyError, IndexError, OverflowError, RecursionError, UnicodeError,
            MemoryError) as exc:  # content no reader foresaw: still the file and one line, never a traceback
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(path, f"unexpected content ({type(exc).__name__}: {first})") from None
    if ck.budget.spent:
        ck.notes.append(f"parameters: more than {MAX_PARAM_VALUES} values; the rest were not read")
    return ck


def _open_file(path: str) -> Checkpoint:
    fd, size = guard.open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            head = f.read(16)
            if size == 0:
                raise CheckpointError(path, "the file is empty")
            kind = sniff(head, size, path, f)
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if kind == "safetensors":
        from .safetensors_format import SafetensorsCheckpoint

        return SafetensorsCheckpoint([path])
    if kind == "keras":
        from .keras_format import open_keras_archive

        return open_keras_archive(path)
    if kind == "h5":
        from .keras_format import open_h5

        return open_h5(path)
    if kind == "torch":
        from .torch_format import open_torch

        return open_torch(path)
    raise CheckpointError(path, "unsupported format: not a torch checkpoint (zip or pickle), safetensors, HDF5 "
                                "or a Keras archive (expected .ckpt, .pt, .pth, .bin, .safetensors, .weights.h5, "
                                f".h5, .keras or a Hugging Face checkpoint directory); the file starts with {head[:8]!r}")


def sniff(head: bytes, size: int, path: str, f=None) -> str | None:
    """The reader for a file starting with ``head``: safetensors, keras, h5, torch, or None.
    ``f``: the file, open, for a zip's member list."""
    lower = path.lower()
    if head.startswith(ZIP_MAGIC) or lower.endswith(".keras"):
        return "keras" if _is_keras_zip(path, f, size) else "torch"
    if head.startswith(HDF5_MAGIC) or lower.endswith(H5_SUFFIXES):
        return "h5"
    if lower.endswith(".safetensors"):
        return "safetensors"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80" or lower.endswith(TORCH_SUFFIXES):
        return "torch"  # a legacy (pre-zip) torch file is a pickle: protocol 2+ starts with 0x80
    return None


def _is_keras_zip(path: str, f=None, size: int | None = None) -> bool:
    import zipfile

    try:
        if f is None:
            with open(path, "rb") as own:
                return _is_keras_zip(path, own, os.fstat(own.fileno()).st_size)
        guard.check_zip(path, f, size)
        with zipfile.ZipFile(f) as z:
            names = set(z.namelist())
            for info in z.infolist():  # torch's own reader would inflate a bomb just the same
                guard.check_inflation(path, info)
    except zipfile.BadZipFile:
        if path.lower().endswith(".keras"):
            raise CheckpointError(path, "truncated or corrupt: not a readable zip archive (a .keras file is one)") \
                from None
        return False  # let torch say what is wrong with it
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the file: {exc}") from None
    return "config.json" in names and any(n.endswith(".weights.h5") for n in names)


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
        return value.item() if value.ndim == 0 else (value.tolist() if value.size <= MAX_PARAM_LIST
                                                     else f"<array {list(value.shape)} {value.dtype}>")
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
        return {str(k): plain(v, budget, _depth + 1) if budget.take() else "<not read>" for k, v in value.items()}
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, (set, frozenset)):
        if len(value) > MAX_PARAM_LIST or not all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
            return f"<set of {len(value)}>"
    return repr(value)


def flatten(prefix: str, value: Any, out: dict[str, Any], skip: frozenset = frozenset(),
            budget: Budget | None = None, _depth: int = 0) -> dict[str, Any]:
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
                    out[f"{prefix}.pg{j}.n_params"] = len(v) if isinstance(v, (list, tuple)) else plain(v, budget)
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
