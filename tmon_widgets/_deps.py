"""The optional dependencies of tmon_widgets, checked once, at first use, with the fix in the message."""

from __future__ import annotations

import importlib.util

MESSAGE = "tmon_widgets needs ipywidgets and bqplot: pip install 'tmon[widgets]'"


def available() -> bool:
    """True when ipywidgets and bqplot can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("ipywidgets", "bqplot"))


def require() -> None:
    """Import ipywidgets and bqplot or raise ``ImportError`` saying how to install them."""
    try:
        import bqplot  # noqa: F401
        import ipywidgets  # noqa: F401
    except ImportError as exc:
        raise ImportError(MESSAGE) from exc
