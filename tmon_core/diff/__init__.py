"""Checkpoint diffs: what changed between two checkpoints, tensor by tensor.

>>> from tmon_core.diff import diff
>>> d = diff("ckpts/epoch=0-step=12.ckpt", "ckpts/epoch=1-step=24.ckpt")   # doctest: +SKIP
>>> d = diff(3, 7, store="sqlite:///tmon.db")     # recorded checkpoint ids  # doctest: +SKIP
>>> d.summary; d.layers; d.top(10); d.params; d.metrics                      # doctest: +SKIP

Reads Lightning ``.ckpt``, torch ``.pt``/``.pth``/``.bin`` (``weights_only``), ``.safetensors``
(sharded too), Hugging Face checkpoint directories, Keras ``.weights.h5``/``.keras``. Importing
this package imports no framework: torch and h5py are imported when a file needs them.
"""

from .engine import diff
from .errors import CheckpointError
from .formats import Checkpoint, open_checkpoint
from .result import CheckpointDiff

__all__ = ["Checkpoint", "CheckpointDiff", "CheckpointError", "diff", "open_checkpoint"]
