"""The one exception a checkpoint diff raises for input it cannot compare."""

from __future__ import annotations

import os


class CheckpointError(ValueError):
    """A checkpoint could not be read or compared: missing, truncated or corrupt, an unsupported
    format, a pickle ``torch.load(weights_only=True)`` refuses, or two unrelated models.

    ``path`` is the file (or the recorded checkpoint id) at fault, ``reason`` says what is wrong.
    """

    def __init__(self, path: str | os.PathLike | int | None, reason: str):
        self.path = os.fspath(path) if isinstance(path, os.PathLike) else path
        self.reason = reason
        where = f"checkpoint {self.path}" if isinstance(self.path, int) else str(self.path)
        super().__init__(f"{where}: {reason}" if self.path is not None else reason)
