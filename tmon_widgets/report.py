"""The Report tab: the report card of ``tmon_core.report`` (health, findings, recommendations, log
errors); during a run, the findings so far. Says "report not available" where this tmon has none."""

from __future__ import annotations

import threading
import time

import ipywidgets as widgets

from . import _format as f

#: seconds between two reports computed on their own while the run is running and the tab is shown
LIVE_EVERY = 30.0


def report_function():
    """``tmon_core.report`` (or ``tmon_core.analysis.report``), or None when this tmon has none."""
    try:
        import tmon_core

        fn = getattr(tmon_core, "report", None)
        if fn is None:
            from tmon_core.analysis import report as fn
        return fn if callable(fn) else None
    except Exception:
        return None


class ReportTab:
    def __init__(self, monitor):
        self.mon = monitor
        self.button = widgets.Button(
            description="refresh report", icon="refresh", layout=widgets.Layout(width="140px")
        )
        self.button.on_click(lambda _b: self.compute(force=True))
        self.status = widgets.HTML()
        self.body = widgets.HTML(
            f.note(
                "the report is computed when this tab is opened (and again when the run "
                "ends, or with <i>refresh report</i>)"
            )
        )
        self.widget = widgets.VBox([widgets.HBox([self.button, self.status]), self.body])
        self.report = None
        self._computed_at = 0.0
        self._computed_status = None
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Called when the tab is shown (monitor lock held): compute when stale."""
        rs = self.mon.runs[0] if self.mon.runs else None
        if rs is None:
            return
        stale = (
            (self.report is None and self._computed_status is None)
            or rs.status != self._computed_status
            or (rs.running and time.time() - self._computed_at > LIVE_EVERY)
        )
        if stale:
            self.compute()

    def compute(self, force: bool = False, wait: bool = False) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        rs = self.mon.runs[0] if self.mon.runs else None
        if rs is None:
            return
        self._computed_status = rs.status
        self._computed_at = time.time()
        self.status.value = '<span style="color:#777">computing…</span>'
        others = list(self.mon.runs[1:])
        self._thread = threading.Thread(
            target=self._work, args=(rs, others), name="tmon-widget-report", daemon=True
        )
        self._thread.start()
        if wait:
            self._thread.join()

    def _work(self, rs, others=()) -> None:
        fn = report_function()
        if fn is None:
            self.body.value = f.note(
                "report not available: this tmon has no <code>tmon_core.report</code> "
                "(the analysis module is missing or failed to import)",
                "warn",
            )
            self.status.value = ""
            return
        try:
            try:  # a report of a run still going is a preview: not saved with the run
                r = fn(rs.id, store=self.mon.store.url, save=not rs.running)
            except TypeError:
                r = fn(rs.id, store=self.mon.store.url)
        except Exception as exc:
            self.body.value = f.note(
                f"report not available: {f.esc(f'{type(exc).__name__}: {exc}')}", "error"
            )
            self.status.value = ""
            return
        if r is None:
            self.body.value = f.note("report not available for this run", "warn")
            self.status.value = ""
            return
        self.report = r
        when = "findings so far (the run is still going)" if rs.running else f"the run is {rs.status}"
        try:
            body = r._repr_html_()
        except Exception as exc:
            body = f.note(f"the report could not be drawn: {f.esc(f'{type(exc).__name__}: {exc}')}", "error")
        # compared runs: each one's card below the first (the tab showed only the first run's)
        for o in others:
            try:
                try:
                    card = fn(o.id, store=self.mon.store.url, save=not o.running)
                except TypeError:
                    card = fn(o.id, store=self.mon.store.url)
                body += f"<div style='margin-top:8px'>{card._repr_html_()}</div>" if card is not None else ""
            except Exception as exc:
                body += f.note(
                    f"{f.esc(o.name)}: report not available: {f.esc(f'{type(exc).__name__}: {exc}')}", "error"
                )
        self.body.value = f"<div style='color:#777'>{f.esc(when)}</div>{body}"
        self.status.value = f'<span style="color:#777">computed at {f.clock(time.time())}</span>'
