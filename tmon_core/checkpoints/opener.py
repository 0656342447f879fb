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

import os
import stat
import struct

from . import guard
from .base import MAX_PARAM_VALUES, Checkpoint
from .errors import CheckpointError
from .hf import open_directory
from .keras import open_h5, open_keras_archive
from .safetensors import SafetensorsCheckpoint
from .torch import open_torch

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".tar")
H5_SUFFIXES = (".h5", ".hdf5")
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open ``path`` (a checkpoint file or a HF checkpoint directory) with the reader its content needs.

    Only a regular file or a directory is opened (symlinks followed, then checked): a FIFO, a
    device or a socket is refused before ``open()``, which could otherwise block or never end."""
    path = os.path.abspath(os.fspath(path))
    try:
        if stat.S_ISDIR(guard.entry(path).st_mode):
            ck = open_directory(path, open_checkpoint)
        else:
            ck = _open_file(path)
    except CheckpointError:
        raise
    except (
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        OverflowError,
        RecursionError,
        UnicodeError,
        MemoryError,
    ) as exc:  # content no reader foresaw: still the file and one line, never a traceback
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
        return SafetensorsCheckpoint([path])
    if kind == "keras":
        return open_keras_archive(path)
    if kind == "h5":
        return open_h5(path)
    if kind == "torch":
        return open_torch(path)
    raise CheckpointError(
        path,
        "unsupported format: not a torch checkpoint (zip or pickle), safetensors, HDF5 "
        "or a Keras archive (expected .ckpt, .pt, .pth, .bin, .safetensors, .weights.h5, "
        f".h5, .keras or a Hugging Face checkpoint directory); the file starts with {head[:8]!r}",
    )


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
            raise CheckpointError(
                path, "truncated or corrupt: not a readable zip archive (a .keras file is one)"
            ) from None
        return False  # let torch say what is wrong with it
    except OSError as exc:
        raise CheckpointError(path, f"cannot read the file: {exc}") from None
    return "config.json" in names and any(n.endswith(".weights.h5") for n in names)
