"""Checkpoint diffs: what changed between two checkpoints, tensor by tensor.

>>> import tmon_core
>>> d = tmon_core.diff("ckpts/epoch=0-step=12.ckpt", "ckpts/epoch=1-step=24.ckpt")  # doctest: +SKIP
>>> d = tmon_core.diff(3, 7, store="sqlite:///tmon.db")     # recorded checkpoint ids  # doctest: +SKIP
>>> d.summary; d.layers; d.top(10); d.params; d.metrics                               # doctest: +SKIP

Two safetensors files written by hand, one weight changed:

>>> import json, os, struct, tempfile
>>> import numpy as np
>>> def save(path, w):
...     data = np.asarray(w, dtype=np.float32).tobytes()
...     head = json.dumps({"w": {"dtype": "F32", "shape": [len(w)], "data_offsets": [0, len(data)]}}).encode()
...     with open(path, "wb") as f:
...         _ = f.write(struct.pack("<Q", len(head)) + head + data)
>>> folder = tempfile.mkdtemp()
>>> a, b = os.path.join(folder, "a.safetensors"), os.path.join(folder, "b.safetensors")
>>> save(a, [1.0, 2.0, 3.0]); save(b, [1.0, 2.0, 5.0])
>>> d = tmon_core.diff(a, b)
>>> d.summary["changed"], d.summary["elements_changed"], float(d.layers.max_abs_diff[0])
(1, 1, 2.0)

``tmon_core.diff`` is this package, and calling it is calling ``tmon_core.diff.diff`` (the same
function ``from tmon_core.diff import diff`` gives): the documented call ``tmon_core.diff(a, b)``
works, and ``tmon_core.diff.cli``, ``import tmon_core.diff as d`` and ``mock.patch`` paths through
it find the package, not a function standing in its place.

Reads Lightning ``.ckpt``, torch ``.pt``/``.pth``/``.bin`` (``weights_only``), ``.safetensors``
(sharded too), Hugging Face checkpoint directories, Keras ``.weights.h5``/``.keras``, through
``tmon_core.checkpoints`` (``open_checkpoint``). Importing this package imports no framework:
torch and h5py are imported when a file needs them.
"""

import sys
import types

from ..checkpoints import Checkpoint, CheckpointError, open_checkpoint
from .engine import diff
from .result import CheckpointDiff

__all__ = ["Checkpoint", "CheckpointDiff", "CheckpointError", "diff", "open_checkpoint"]


class _DiffPackage(types.ModuleType):
    """This package, callable as its ``diff`` function."""

    def __call__(self, a, b, *, store=None) -> CheckpointDiff:
        return diff(a, b, store=store)

    __call__.__doc__ = diff.__doc__


sys.modules[__name__].__class__ = _DiffPackage
