"""tmon_core: the store, recorder, hardware sampler and readers of tmon.

Imports no training framework and no Jupyter package.

>>> import tmon_core
>>> tmon_core.runs()                          # doctest: +SKIP
>>> run = tmon_core.latest_run()              # doctest: +SKIP
>>> run.metrics("loss", max_points=2000)      # doctest: +SKIP
"""

from __future__ import annotations

import os

from . import events, keys
from .analysis import Report, report
from .control import At, Param, Request
from .diff import CheckpointDiff, CheckpointError, diff  # note: tmon_core.diff is the function
from .recorder import Recorder, TMonStoreWarning
from .sampler import HardwareSampler
from .store import Run, Store, StoreVersionError, open_store
from .track import track

__version__ = "0.1.0"

__all__ = [
    "At", "CheckpointDiff", "CheckpointError", "HardwareSampler", "Param", "Recorder", "Report", "Request", "diff", "Run", "Store", "StoreVersionError", "TMonStoreWarning",
    "events", "keys", "latest_run", "open_store", "report", "runs", "track", "__version__",
]


def runs(store: str | os.PathLike | None = None):
    """The runs of the default store (or ``store``), newest first, as a DataFrame."""
    with open_store(store) as s:
        return s.runs()


def latest_run(store: str | os.PathLike | None = None) -> Run | None:
    """The newest run of the default store (or ``store``), or None when it has none."""
    return open_store(store).latest_run()
