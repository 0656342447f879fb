"""The tmon store: one SQL database (SQLite or PostgreSQL) that every run writes and every reader reads.

Where things are:

* ``schema`` (tables, version, limits), ``engine`` (URLs, SQLite pragmas, creating and checking
  the schema), ``migrations`` (upgrades of older stores, each with its own SQL);
* the write side: ``writer`` (``StoreWriter``: one transaction per ``batch.Batch``), ``records``
  and ``text`` (what a row may hold), ``chunks`` and ``summaries`` (how points are stored);
* the read side: ``store`` (``Store``), ``run`` (``Run``), ``points`` (one series' chunks and
  summaries), ``downsample`` (the min/max downsampler, also used by the charts);
* the rows others ask for: ``requests`` (control requests), ``checkpoints``, ``reports``;
  ``retention`` (pruning and deleting runs).
"""

from .engine import DEFAULT_URL, ENV_VAR, StoreVersionError, resolve_url
from .run import Run
from .schema import SCHEMA_VERSION
from .store import Store, open_store

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "SCHEMA_VERSION",
    "Run",
    "Store",
    "StoreVersionError",
    "open_store",
    "resolve_url",
]
