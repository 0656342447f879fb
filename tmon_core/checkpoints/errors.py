"""The one exception reading or comparing a checkpoint raises for input it cannot take."""

from __future__ import annotations

import os


class CheckpointError(ValueError):
    """A checkpoint could not be read or compared: missing, truncated or corrupt, an unsupported
    format, a pickle ``torch.load(weights_only=True)`` refuses, or two unrelated models; a header
    field that does not hold up (a shape that is not non-negative integers or does not fit its bytes,
    an offset outside the file, an unknown dtype, JSON nested too deep), an HDF5 dataset the file
    does not hold (unallocated, virtual, external), a zip bomb, a path that is not a regular file or
    directory (FIFO, device, socket), or a recorded checkpoint whose file was overwritten or deleted.

    ``path`` is the file (or the recorded checkpoint id) at fault, ``reason`` says what is wrong.
    """

    def __init__(self, path: str | os.PathLike | int | None, reason: str):
        self.path = os.fspath(path) if isinstance(path, os.PathLike) else path
        self.reason = reason
        where = f"checkpoint {self.path}" if isinstance(self.path, int) else str(self.path)
        super().__init__(f"{where}: {reason}" if self.path is not None else reason)
