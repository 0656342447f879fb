"""The tmon store: schema, engines, the batch writer and the query API."""

from .engine import DEFAULT_URL, ENV_VAR, StoreVersionError, resolve_url
from .run import Run
from .schema import SCHEMA_VERSION
from .store import Store, open_store

__all__ = ["DEFAULT_URL", "ENV_VAR", "SCHEMA_VERSION", "Run", "Store", "StoreVersionError", "open_store", "resolve_url"]
