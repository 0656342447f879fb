"""tmon_widgets: the Jupyter views of tmon (ipywidgets + bqplot).

>>> from tmon_widgets import Monitor, fit_in_background
>>> fit = fit_in_background(trainer.fit, model, dm)     # train in a thread; a live Monitor shows   # doctest: +SKIP
>>> Monitor()                                           # the latest run of the default store         # doctest: +SKIP
>>> Monitor(run_id, store="postgresql+psycopg://...")   # any run, live if it is still running         # doctest: +SKIP
>>> Monitor(runs=[a, b])                                # compare runs                               # doctest: +SKIP

Needs ipywidgets and bqplot (``pip install 'tmon[widgets]'``): importing ``Monitor`` or
``fit_in_background`` without them raises ``ImportError`` with that fix. ``tmon_widgets.auto``
(what the callbacks call to show a Monitor by themselves) imports without them.
"""

from __future__ import annotations

__all__ = ["BackgroundFit", "Monitor", "fit_in_background", "maybe_display"]


def __getattr__(name: str):
    if name in ("Monitor", "BackgroundFit", "fit_in_background"):
        from ._deps import require

        require()
        if name == "Monitor":
            from .monitor import Monitor

            return Monitor
        from . import background

        return getattr(background, name)
    if name == "maybe_display":
        from .auto import maybe_display

        return maybe_display
    raise AttributeError(f"module 'tmon_widgets' has no attribute {name!r}")
