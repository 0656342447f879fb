"""The tmon store: schema, engines, the batch writer and the query API."""

from .engine import DEFAULT_URL, ENV_VAR, StoreVersionError, resolve_url
from .query import Run, Store, open_store
from .schema import SCHEMA_VERSION

__all__ = ["DEFAULT_URL", "ENV_VAR", "SCHEMA_VERSION", "Run", "Store", "StoreVersionError", "open_store", "resolve_url"]
