"""tmon_core: the store, recorder, hardware sampler and readers of tmon.

Imports no training framework and no Jupyter package.

>>> import os, tempfile, tmon_core
>>> store = os.path.join(tempfile.mkdtemp(), "tmon.db")
>>> with tmon_core.Recorder(store, run_name="doc", flush_interval=0.1) as rec:
...     for step in range(3):
...         rec.log({"loss": 1.0 / (step + 1)}, step)
>>> run = tmon_core.latest_run(store)
>>> run.status, run.info()["name"]
('completed', 'doc')
>>> run.metrics("loss")["value"].round(3).tolist()
[1.0, 0.5, 0.333]
>>> tmon_core.runs(store)["name"].tolist()
['doc']
"""

from __future__ import annotations

import os

from . import diff, events, keys  # diff: the package, callable as tmon_core.diff(a, b)
from .analysis import Report, report
from .analysis.group_report import GroupReport, group_report
from .control import At, Param, Request
from .diff import CheckpointDiff, CheckpointError
from .guard import Guard
from .recorder import Recorder, TMonStoreWarning
from .run_groups import groups
from .sampler import HardwareSampler
from .store import Run, Store, StoreVersionError, open_store
from .track import track

__version__ = "0.1.0"

__all__ = [
    "At",
    "CheckpointDiff",
    "CheckpointError",
    "GroupReport",
    "Guard",
    "HardwareSampler",
    "Param",
    "Recorder",
    "Report",
    "Request",
    "Run",
    "Store",
    "StoreVersionError",
    "TMonStoreWarning",
    "__version__",
    "diff",
    "events",
    "group_report",
    "groups",
    "keys",
    "latest_run",
    "open_store",
    "report",
    "runs",
    "track",
]


def runs(store: str | os.PathLike | None = None, *, group: str | None = None):
    """The runs of the default store (or ``store``), newest first, as a DataFrame; ``group``: only
    that group's runs (``TMonCallback(group=...)``, ``$TMON_GROUP``)."""
    with open_store(store) as s:
        return s.runs(group=group)


def latest_run(store: str | os.PathLike | None = None) -> Run | None:
    """The newest run of the default store (or ``store``), or None when it has none."""
    return open_store(store).latest_run()
