"""The Monitor that appears by itself when a tmon callback starts a run in a notebook.

An adapter calls :func:`maybe_display` once the run is open (global rank 0 only); it displays a
``Monitor`` when, and only when, it runs in a Jupyter kernel's own process with ipywidgets and
bqplot installed, outside a ``fit_in_background`` thread (which shows its own), and
``$TMON_WIDGET`` is not ``0``/``off``. It never raises: a widget problem must not stop a fit.
Importing this module imports neither ipywidgets nor IPython.
"""

from __future__ import annotations

import os
import threading
import warnings

from . import _deps, _live

OFF = ("0", "off", "false", "no")


def enabled() -> bool:
    """Would :func:`maybe_display` display a Monitor here, now?"""
    if os.environ.get("TMON_WIDGET", "").strip().lower() in OFF:
        return False
    if getattr(threading.current_thread(), "_tmon_background", False):
        return False
    return _live.in_kernel() and _deps.available()


def maybe_display(run_id: str, store_url: str | None = None, **kwargs):
    """Display a live ``Monitor(run_id, store=store_url)`` in the running notebook; return it, or None
    when not in a notebook (or widgets are missing, turned off, or failed: a warning says why)."""
    if not run_id or not enabled():
        return None
    try:
        from .monitor import Monitor

        try:
            mon = Monitor(run_id, store=store_url, **kwargs)
        except KeyError:  # the run row is not written yet (the store was busy): show it when it is
            holder: list = []

            def resolve():
                try:
                    return holder[0].store.run(run_id).id
                except (KeyError, IndexError):
                    return None

            mon = Monitor(
                store=store_url,
                _resolve=resolve,
                _waiting=f"waiting for run {run_id} to reach the store",
                **kwargs,
            )
            holder.append(mon)
        _live.display(mon)
        return mon
    except Exception as exc:  # never take the fit down
        warnings.warn(
            f"tmon: the Monitor widget could not be shown ({type(exc).__name__}: {exc}); training continues",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
