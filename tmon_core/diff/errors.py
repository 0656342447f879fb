"""Moved: ``CheckpointError`` lives in ``tmon_core.checkpoints.errors`` (kept here for old imports)."""

from ..checkpoints.errors import CheckpointError  # noqa: F401
