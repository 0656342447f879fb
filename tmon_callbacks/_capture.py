"""Moved to ``tmon_core.capture`` (framework-free); re-exported here while importers switch."""

from tmon_core.capture import MAX_MESSAGE, MAX_RECORDS, LogCapture, _Handler  # noqa: F401
