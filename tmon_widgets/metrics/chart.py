"""One chart of the Metrics tab: a bqplot figure with the lines of one family of metrics, their
smoothed twins, the event markers, and the legend above the plot.

A chart knows how to draw; what to draw (which series, which x, which markers) is the tab's job.
"""

from __future__ import annotations

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from tmon_core.events import CHECKPOINT, PARAM_CHANGE, ROLLBACK, STOPPED

from .. import _format as f
from .._series import ema, nice_ticks

LINE_STYLES = ("solid", "dashed", "dotted", "dash_dotted")
#: marker kinds drawn on the charts: event type -> colour (none of the lines' palette: a marker never
#: reads as a metric)
MARKERS = {PARAM_CHANGE: "#b8860b", CHECKPOINT: "#444444", ROLLBACK: "#8b0000", STOPPED: "#000000"}
#: the markers are short ticks in this top fraction of the plot, never lines across the data
MARKER_STRIP = 0.06
LINE_DASH = {"solid": "", "dashed": "6,3", "dotted": "2,3", "dash_dotted": "6,3,2,3"}
#: While its kernel is busy a Monitor puts every tab in the page (the kernel cannot hear which one is
#: shown), and the tabs not shown are ``display: none``: a bqplot figure first drawn there measures a
#: width of 0, subtracts its margins and sets its background, event and clip rects to negative sizes
#: (Chromium logs "<rect> attribute width: A negative value is not valid" for each, 6 per figure).
#: This style lays hidden tabs out at full width instead, invisible, of no height and unclickable, so a
#: figure is drawn at the size it will be shown at. A ``<style>`` in an HTML widget applies while it is
#: in the page; the Metrics tab carries it (every tab is in the page while busy, and when the kernel
#: hears the tab clicks only the shown tab is filled).
HIDDEN_TABS_CSS = (
    "<style>.tmon-monitor .widget-tab-contents > .lm-Widget.lm-mod-hidden {display: block !important; "
    "visibility: hidden; height: 0; overflow: hidden; pointer-events: none}</style>"
)


class Chart:
    """One bqplot figure: the lines of one family, and the markers."""

    def __init__(self, fam: str, xs, log: bool, xlabel: str):
        self.family = fam
        self.xs = xs
        self.ys = bq.LogScale() if log else bq.LinearScale()
        self.rule_scale = bq.LinearScale(min=0.0, max=1.0)
        # a format from the start: without one bqplot guesses it from the domain, and a line of one
        # point (a zero-width domain) makes that "invalid format: .undefinedg" in the browser
        self.x_axis = bq.Axis(scale=xs, label=xlabel, grid_lines="dashed", num_ticks=6, tick_format="~g")
        self.y_axis = bq.Axis(scale=self.ys, side="left", tick_format=".3~g", grid_lines="dashed")
        # the legend is HTML above the plot (bqplot's sits on the data and is clipped in compare mode)
        self.fig = bq.Figure(
            marks=[],
            axes=[self.x_axis, self.y_axis],
            animation_duration=0,
            fig_margin={"top": 8, "bottom": 42, "left": 64, "right": 28},
            layout=widgets.Layout(height="250px", width="auto", min_width="320px"),
        )
        self.legend = widgets.HTML()
        self.box = widgets.VBox([self.legend, self.fig], layout=widgets.Layout(min_width="320px"))
        self.lines: dict[tuple[str, str], tuple] = {}
        self.same: dict[tuple[str, str], tuple[str, str]] = {}  # a line hidden -> the identical one drawn
        self.markers: dict[str, tuple] = {}
        for kind, color in MARKERS.items():
            # ticks only: a Scatter (even hidden) makes bqplot pad the x domain (-19 ... 1,518 for 0 ... 1,499)
            rules = bq.Lines(
                x=np.zeros((1, 2)),
                y=np.array([[1.0 - MARKER_STRIP, 1.0]]),
                scales={"x": xs, "y": self.rule_scale},
                colors=[color],
                stroke_width=2.5,
                visible=False,
                preserve_domain={"x": True},
                enable_hover=True,
                tooltip=bq.Tooltip(fields=["name"], labels=[kind.replace("_", " ")]),
            )
            self.markers[kind] = rules

    def close(self) -> None:
        """Close the figure and its marks, so the browser drops their views (and their domains)."""
        for m in self.marks():
            m.close()
        for w in (self.box, self.legend, self.fig, self.x_axis, self.y_axis, self.ys, self.rule_scale):
            w.close()
        self.lines.clear()

    def marks(self) -> list:
        raw = [pair[0] for pair in self.lines.values()]
        smooth = [pair[1] for pair in self.lines.values()]
        return raw + smooth + list(self.markers.values())

    def new_line(self, label: str, color: str, style: str) -> tuple:
        """A (raw, smoothed) pair of empty lines; the smoothed one hidden until smoothing is on."""
        raw = bq.Lines(
            x=np.zeros(0),
            y=np.zeros(0),
            scales={"x": self.xs, "y": self.ys},
            colors=[color],
            labels=[label],
            line_style=style,
            stroke_width=1.6,
            enable_hover=False,
        )
        smooth = bq.Lines(
            x=np.zeros(0),
            y=np.zeros(0),
            scales={"x": self.xs, "y": self.ys},
            colors=[color],
            labels=[label + " (smoothed)"],
            line_style=style,
            stroke_width=2.0,
            visible=False,
            enable_hover=False,
        )
        return raw, smooth

    def show_lines(self, lines: dict, markers_shown: bool) -> None:
        """Draw exactly these (raw, smoothed) pairs, keyed by (run id, key)."""
        self.lines = lines
        self.same = {}
        self.render_legend(markers_shown)
        marks = self.marks()
        if self.fig.marks != marks:
            self.fig.marks = marks

    def set_points(self, ident, x: np.ndarray, y: np.ndarray, log: bool, weight: float) -> None:
        """One line's points (x may hold NaN where a point has no x); its smoothed twin when
        ``weight`` > 0."""
        raw, smooth = self.lines[ident]
        y = np.where(np.isfinite(y), y, np.nan)
        if log:
            y = np.where(y > 0, y, np.nan)
        ok = np.isfinite(x)
        x, y = x[ok], y[ok]
        # a line ending on NaN: bqplot places its end at (x, undefined) and logs an SVG error; the
        # gap inside a line stays (NaN breaks it), the header and Events tab say where NaN began
        fin = np.flatnonzero(np.isfinite(y))
        end = int(fin[-1]) + 1 if len(fin) else 0
        x, y = x[:end], y[:end]
        with raw.hold_sync():
            raw.x, raw.y = x, y
            raw.opacities = [0.3 if weight > 0 else 1.0]
        with smooth.hold_sync():
            if weight > 0:
                smooth.x, smooth.y = x, ema(y, weight)
            smooth.visible = weight > 0 and ident not in self.same

    def render_legend(self, markers_shown: bool) -> None:
        """The chart's title and its lines' names, above the plot: one entry per line drawn (identical
        series share one line and one entry), and the marker kinds when markers are shown."""
        items = []
        for ident, (raw, _smooth) in self.lines.items():
            if ident in self.same:
                continue
            names = [raw.labels[0]] + [o[1] for o, p in self.same.items() if p == ident]
            dash = LINE_DASH.get(raw.line_style, "")
            swatch = (
                f'<svg width="22" height="8" style="vertical-align:middle"><line x1="0" y1="4" x2="22" y2="4" '
                f'stroke="{raw.colors[0]}" stroke-width="2.5" stroke-dasharray="{dash}"/></svg>'
            )
            items.append(
                f'<span style="margin-right:12px;white-space:nowrap">{swatch} {f.esc(" = ".join(names))}</span>'
            )
        if markers_shown:
            for kind, color in MARKERS.items():
                if self.markers[kind].visible:
                    items.append(
                        f'<span style="margin-right:12px;white-space:nowrap;color:#555">'
                        f'<span style="color:{color};font-weight:900">|</span> {kind.replace("_", " ")}</span>'
                    )
        html = (
            f'<div class="tmon-legend" style="font-size:0.85em;line-height:1.4;padding-left:64px">'
            f'<b style="font-size:1.1em;margin-right:12px">{f.esc(self.family)}</b>{"".join(items)}</div>'
        )
        if self.legend.value != html:
            self.legend.value = html

    def dedupe(self, series: dict, markers_shown: bool) -> None:
        """Hide a line whose points equal another's of the same run (Lightning logs ``loss`` and
        ``train_loss`` with the same values): one line, named by both. ``series``: (run id, key) ->
        the points held."""
        same: dict = {}
        held = [(ident, series.get(ident)) for ident in self.lines]
        for i, (ident, s) in enumerate(held):
            if s is None or not len(s) or ident in same:
                continue
            for other, t in held[i + 1 :]:
                if (
                    other[0] == ident[0]
                    and other not in same
                    and t is not None
                    and len(t) == len(s)
                    and np.array_equal(t.step, s.step)
                    and np.array_equal(t.value, s.value, equal_nan=True)
                ):
                    same[other] = ident
        if same != self.same:
            self.same = same
            for ident, (raw, smooth) in self.lines.items():
                hide = ident in same
                if raw.visible == hide:
                    raw.visible = not hide
                if hide and smooth.visible:
                    smooth.visible = False
            self.render_legend(markers_shown)

    def fit_y(self, log: bool) -> None:
        """A flat chart (a constant lr) gets a y range around its value: bqplot would stretch a zero-width
        domain over the whole height and label every tick with the same number."""
        lo, hi = np.inf, -np.inf
        for raw, _smooth in self.lines.values():
            y = raw.y
            if len(y):
                fin = y[np.isfinite(y)]
                if len(fin):
                    lo, hi = min(lo, float(fin.min())), max(hi, float(fin.max()))
        flat = np.isfinite(lo) and hi - lo <= 1e-9 * max(abs(hi), abs(lo), 1e-300)
        if flat and log:
            dom = (lo / 2.0, hi * 2.0)
        elif flat:
            pad = abs(hi) * 0.5 if hi != 0 else 1.0
            dom = (lo - pad, hi + pad)
        else:
            dom = (None, None)
        if (self.ys.min, self.ys.max) != dom:
            with self.ys.hold_sync():
                self.ys.min, self.ys.max = dom

    def hide_markers(self, kind: str, markers_shown: bool) -> None:
        rules = self.markers[kind]
        if rules.visible:
            rules.visible = False
            self.render_legend(markers_shown)

    def place_markers(self, kind: str, x: np.ndarray, names: list[str], markers_shown: bool) -> None:
        """Ticks of ``kind`` at ``x`` (finite), ``names`` their hover texts."""
        rules = self.markers[kind]
        if not len(x):
            rules.visible = False
            return
        was = rules.visible
        with rules.hold_sync():
            rules.x = np.repeat(x[:, None], 2, axis=1)
            rules.y = np.tile(np.array([[1.0 - MARKER_STRIP, 1.0]]), (len(x), 1))
            rules.labels = names  # the hover text of each tick
            rules.colors = [MARKERS[kind]] * len(x)
            rules.visible = True
        if not was:
            self.render_legend(markers_shown)


def round_x_ticks(charts, mode: str, auto: bool) -> None:
    """Round tick values (0, 300, 600 ... not -19, 320, 658) over the lines' x range; bqplot's own
    ticks follow a domain it pads by the stroke width. ``auto``: left to bqplot (pan/zoom is on)."""
    lo, hi = np.inf, -np.inf
    if not auto:
        for chart in charts:
            for raw, _smooth in chart.lines.values():
                x = raw.x
                if len(x):
                    lo, hi = min(lo, float(np.nanmin(x))), max(hi, float(np.nanmax(x)))
    ticks = nice_ticks(lo, hi) if np.isfinite(lo) and hi > lo else None
    fmt = (",d" if hi < 1e6 else "~s") if mode == "step" else "~g"
    for chart in charts:
        ax = chart.x_axis
        cur = ax.tick_values
        if ticks is None and (cur is None or not len(cur)):
            continue
        if (
            ticks is not None
            and cur is not None
            and len(cur) == len(ticks)
            and np.array_equal(cur, ticks)
            and ax.tick_format == fmt
        ):
            continue
        with ax.hold_sync():
            ax.tick_values = ticks if ticks is not None else np.zeros(0)
            ax.tick_format = fmt
