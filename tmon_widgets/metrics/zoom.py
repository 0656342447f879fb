"""Pan and zoom on the Metrics tab: the x scale every chart shares, the range the user chose on it,
and the detail re-read of that range (a zoomed line holds ``max_points`` points of the visible steps,
not of the whole run).
"""

from __future__ import annotations

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .._series import Series


class Zoom:
    """The tab's x scale (``scale``), the ``pan/zoom`` toggle and the ``reset zoom`` button.

    ``range`` is the visible x range while zoomed (None otherwise); ``pending`` says it changed since
    the series were last re-read (:meth:`apply`, on the next refresh).
    """

    def __init__(self, tab):
        self.tab = tab
        self.range: tuple[float, float] | None = None
        self.pending = False
        self._setting_scale = False
        self.retired: list = []  # scales no chart uses any more, closed once their charts are
        self.scale = bq.LinearScale()
        self.scale.observe(self._on_domain, names=["min", "max"])
        lay = widgets.Layout
        self.toggle = widgets.ToggleButton(
            value=False,
            description="pan/zoom",
            icon="search",
            tooltip="drag to pan, wheel to zoom: the visible range is re-read in detail",
            layout=lay(width="110px"),
        )
        self.reset_button = widgets.Button(description="reset zoom", layout=lay(width="95px"))
        self.toggle.observe(self._on_toggle, names="value")
        self.reset_button.on_click(lambda _b: self.reset())

    @property
    def on(self) -> bool:
        """The pan/zoom toggle is pressed."""
        return bool(self.toggle.value)

    def interaction(self):
        """What a chart's figure takes as its ``interaction``: a pan-zoom on the x scale while the toggle is on."""
        return bq.interacts.PanZoom(scales={"x": [self.scale]}) if self.toggle.value else None

    # ------------------------------------------------------------------ user actions (main thread)
    def _on_toggle(self, _change) -> None:
        with self.tab.mon.lock:
            for c in self.tab.charts.values():
                c.fig.interaction = self.interaction()

    def _on_domain(self, _change) -> None:
        # only a pan or zoom is a user's range; anything else the browser sends back is not a choice
        if self._setting_scale or not self.toggle.value:
            return
        lo, hi = self.scale.min, self.scale.max
        if lo is not None and hi is not None and hi > lo:
            self.range = (float(lo), float(hi))
            self.pending = True
            self.tab.mon.wake()

    def reset(self) -> None:
        with self.tab.mon.lock:
            self.range = None
            self.set_domain(None, None)
            self.tab.drop_series()
        self.tab.mon.refresh()

    def focus(self, rs, step: int, wall: float | None = None) -> tuple[float, float] | None:
        """Zoom every chart around ``step`` of run ``rs`` (an alert's "show step"): the x range of about
        a tenth of the run centred on it (40 steps at least), re-read in detail; "reset zoom" undoes it.
        Returns the range, or None when the charts hold nothing of the run to place the step by."""
        tab = self.tab
        last = max(int(rs.last_step or 0), int(step))
        half = max(20.0, 0.05 * last)
        lo_step, hi_step = max(0.0, step - half), step + half
        if tab.xaxis.value == "step":
            lo, hi = lo_step, hi_step
        else:  # epoch or time: where the run's own points put those steps
            held = [s for (rid, _k), s in tab.series.items() if rid == rs.id and len(s) >= 2]
            if not held:
                return None
            s = max(held, key=len)
            x = tab.x_values(rs, s.step, s.wall)
            ok = np.isfinite(x)
            if ok.sum() < 2:
                return None
            lo, hi = (float(v) for v in np.interp([lo_step, hi_step], s.step[ok].astype(np.float64), x[ok]))
            if not hi > lo:
                return None
        self.range = (float(lo), float(hi))
        self.set_domain(self.range[0], self.range[1])
        self.apply()
        return self.range

    # ------------------------------------------------------------------ the scale
    def set_domain(self, lo, hi) -> None:
        self._setting_scale = True
        try:
            with self.scale.hold_sync():
                self.scale.min, self.scale.max = lo, hi
        finally:
            self._setting_scale = False

    def renew_scale(self) -> None:
        """A new x scale, unless zoomed: the browser's scale keeps the domain of every mark ever drawn on
        it (closed figures' marks included), so after step -> time the axis would stay on the step range."""
        if self.range is not None:
            return
        self.scale.unobserve(self._on_domain, names=["min", "max"])
        self.retired.append(self.scale)
        self.scale = bq.LinearScale()
        self.scale.observe(self._on_domain, names=["min", "max"])

    def close_retired(self) -> None:
        for sc in self.retired:
            sc.close()
        self.retired = []

    # ------------------------------------------------------------------ detail re-read (monitor lock held)
    def apply(self) -> None:
        """Re-read every series over the steps the zoomed range covers."""
        self.pending = False
        if self.range is None:
            return
        tab = self.tab
        lo, hi = self.range
        for ident, s in list(tab.series.items()):
            rs = next(r for r in tab.mon.runs if r.id == ident[0])
            a, b = self.to_steps(rs, s, lo, hi)
            if a is None:
                continue
            z = Series(rs.run, ident[1], tab.mon.max_points, start=a, end=b)
            try:
                z.load()
            except KeyError:
                continue
            tab.series[ident] = z
        tab.mark_dirty()

    def to_steps(self, rs, s, lo, hi):
        """The step range [a, b] that the x range [lo, hi] covers for series ``s``."""
        if not len(s):
            return None, None
        mode = self.tab.xaxis.value
        if mode == "step":  # one point beyond each edge, so the line runs to the frame
            return max(0, int(np.floor(lo)) - 1), int(np.ceil(hi)) + 1
        x = self.tab.x_values(rs, s.step, s.wall)
        ok = np.isfinite(x)
        if ok.sum() < 2:
            return None, None
        steps = s.step[ok].astype(np.float64)
        a, b = np.interp([lo, hi], x[ok], steps)
        return max(0, int(np.floor(a)) - 1), int(np.ceil(b)) + 1
