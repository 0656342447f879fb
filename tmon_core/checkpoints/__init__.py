"""Checkpoint files, read one way for everyone: the rollbacks of the adapters and ``tmon diff``.

- ``open_checkpoint(path)``: any supported format as a ``Checkpoint`` (names, shapes, dtypes up
  front, tensor data a slice at a time, every header field checked first): what ``diff`` reads.
- ``read_torch_checkpoint``, ``read_torch_weights``, ``read_loop_checkpoint``,
  ``read_hf_checkpoint``: a whole state dict (and optimizer state) in memory, to load back into a
  model on a rollback (``rollback.py``).
- ``path_size(path)``: bytes on disk of a checkpoint file or directory.

Importing this package imports no framework: torch, safetensors and h5py are imported when a file
needs them. Every refusal is a ``CheckpointError`` (a ``ValueError``) naming the file and the reason.

>>> import json, os, struct, tempfile
>>> import numpy as np
>>> from tmon_core.checkpoints import CheckpointError, open_checkpoint, path_size
>>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")   # a safetensors file, by hand
>>> data = np.arange(6, dtype=np.float32).tobytes()
>>> header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode()
>>> with open(path, "wb") as f:
...     _ = f.write(struct.pack("<Q", len(header)) + header + data)
>>> with open_checkpoint(path) as ck:
...     ck.format, ck.tensors["w"], ck.read("w", 1, 4).tolist()
('safetensors', TensorInfo(shape=(2, 3), dtype='float32'), [1.0, 2.0, 3.0])
>>> path_size(path) == 8 + len(header) + 24
True
>>> try:
...     open_checkpoint(path + ".missing")
... except CheckpointError as exc:
...     print(exc.reason)
no such file or directory
"""

from __future__ import annotations

import os

from .base import Checkpoint, TensorInfo
from .errors import CheckpointError
from .opener import open_checkpoint
from .rollback import read_hf_checkpoint, read_loop_checkpoint, read_torch_checkpoint, read_torch_weights


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


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "TensorInfo",
    "open_checkpoint",
    "path_size",
    "read_hf_checkpoint",
    "read_loop_checkpoint",
    "read_torch_checkpoint",
    "read_torch_weights",
]
