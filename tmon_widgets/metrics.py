"""The Metrics tab: bqplot lines of the chosen metrics, live.

One chart per family of metrics (``loss``, ``train_loss_step`` and ``val_loss`` share the ``loss``
chart; ``lr`` and ``lr/pg1`` the ``lr`` chart). Each line is a :class:`~tmon_widgets._series.Series`:
at most ``max_points`` points, grown by incremental reads. Options: metrics (grouped train / val /
optimizer / system), EMA smoothing, x by step / epoch / time, linear / log y, timeframe (all, last
N steps, pan-zoom with detail re-read for the visible range), overlay other runs, markers at
parameter changes, checkpoints and rollbacks, a table of the latest values, CSV export.
"""

from __future__ import annotations

import base64
import os
import time
import zlib

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from . import _format as f
from ._series import Series, ema, epoch_axis, nice_ticks

OPTIMIZER_KEYS = ("lr", "momentum", "weight_decay", "betas", "eps")
SYSTEM_KEYS = ("step_time", "data_time", "epoch", "grad_norm")
GROUP_ORDER = ("train", "val", "optimizer", "system")
_PREFIXES = ("train_", "train/", "training_", "val_", "val/", "valid_", "validation_", "eval_", "eval/", "test_",
             "test/")
_SUFFIXES = ("_step", "_epoch")
LINE_STYLES = ("solid", "dashed", "dotted", "dash_dotted")
#: marker kinds drawn on the charts: event type -> colour (none of the lines' palette: a marker never
#: reads as a metric)
MARKERS = {"param_change": "#b8860b", "checkpoint": "#444444", "rollback": "#8b0000", "stopped": "#000000"}
#: the markers are short ticks in this top fraction of the plot, never lines across the data
MARKER_STRIP = 0.06
LINE_DASH = {"solid": "", "dashed": "6,3", "dotted": "2,3", "dash_dotted": "6,3,2,3"}
TIMEFRAMES = [("all steps", None), ("last 100 steps", 100), ("last 1,000 steps", 1000),
              ("last 10,000 steps", 10000), ("last 100,000 steps", 100000)]
X_LABELS = {"step": "step", "epoch": "epoch", "time": "seconds since the run started"}


def family(key: str) -> str:
    """The chart a key goes on: ``train_loss_step``, ``val_loss``, ``loss`` -> ``loss``; ``lr/pg1`` -> ``lr``."""
    base = key.split("/")[0]
    if base in OPTIMIZER_KEYS:
        return base
    k = key
    for p in _PREFIXES:
        if k.startswith(p) and len(k) > len(p):
            k = k[len(p):]
            break
    for s in _SUFFIXES:
        if k.endswith(s) and len(k) > len(s):
            k = k[: -len(s)]
            break
    return k


def group(key: str) -> str:
    """``train``, ``val``, ``optimizer`` or ``system``."""
    if key.split("/")[0] in OPTIMIZER_KEYS:
        return "optimizer"
    if key in SYSTEM_KEYS:
        return "system"
    low = key.lower()
    if low.startswith(("val", "eval", "valid", "test")) or "_val" in low or "/val" in low:
        return "val"
    return "train"


def default_keys(keys: list[str], limit: int = 4) -> list[str]:
    """What a chart shows first: the loss family, the validation metrics, the learning rate."""
    fams: list[str] = []
    for k in sorted(keys, key=lambda k: (family(k) != "loss", group(k) != "val", k)):
        g, fam = group(k), family(k)
        if (fam == "loss" or g == "val") and fam not in fams:
            fams.append(fam)
    if "lr" in keys:
        fams = fams[: limit - 1] + ["lr"]
    fams = fams[:limit]
    out = [k for k in keys if family(k) in fams and (group(k) != "optimizer" or k == "lr")]
    return sorted(out, key=lambda k: (fams.index(family(k)), GROUP_ORDER.index(group(k)), k))


class _Chart:
    """One bqplot figure: the lines of one family, and the markers."""

    def __init__(self, fam: str, xs, log: bool, xlabel: str):
        self.family = fam
        self.ys = bq.LogScale() if log else bq.LinearScale()
        self.rule_scale = bq.LinearScale(min=0.0, max=1.0)
        self.x_axis = bq.Axis(scale=xs, label=xlabel, grid_lines="dashed", num_ticks=6)
        self.y_axis = bq.Axis(scale=self.ys, side="left", tick_format=".3g", grid_lines="dashed")
        # the legend is HTML above the plot (bqplot's sits on the data and is clipped in compare mode)
        self.fig = bq.Figure(marks=[], axes=[self.x_axis, self.y_axis], animation_duration=0,
                             fig_margin={"top": 8, "bottom": 42, "left": 64, "right": 28},
                             layout=widgets.Layout(height="250px", width="auto", min_width="320px"))
        self.legend = widgets.HTML()
        self.box = widgets.VBox([self.legend, self.fig], layout=widgets.Layout(min_width="320px"))
        self.lines: dict[tuple[str, str], tuple] = {}
        self.same: dict[tuple[str, str], tuple[str, str]] = {}  # a line hidden -> the identical one drawn
        self.markers: dict[str, tuple] = {}
        for kind, color in MARKERS.items():
            # ticks only: a Scatter (even hidden) makes bqplot pad the x domain (-19 ... 1,518 for 0 ... 1,499)
            rules = bq.Lines(x=np.zeros((1, 2)), y=np.array([[1.0 - MARKER_STRIP, 1.0]]),
                             scales={"x": xs, "y": self.rule_scale}, colors=[color], stroke_width=2.5, visible=False,
                             preserve_domain={"x": True}, enable_hover=True,
                             tooltip=bq.Tooltip(fields=["name"], labels=[kind.replace("_", " ")]))
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


class MetricsTab:
    def __init__(self, monitor, metrics: list[str] | None = None, x: str = "step"):
        if x not in X_LABELS:
            raise ValueError(f"x must be 'step', 'epoch' or 'time', received x={x!r}")
        self.mon = monitor
        self.series: dict[tuple[str, str], Series] = {}
        self.epochs: dict[str, Series] = {}
        self.charts: dict[str, _Chart] = {}
        self.keys: list[str] = []  # the primary run's metric keys
        self.user_chose = metrics is not None
        self._requested = list(metrics or [])
        self._zoom: tuple[float, float] | None = None  # the visible x range while zoomed
        self._zoom_pending = False
        self._setting_scale = False
        self._colors: dict[str, str] = {}
        self._written: dict[str, tuple] = {}  # run id -> what the run row said at the last read
        self._dirty = True  # lines must be redrawn (options changed)
        self._retired: list[_Chart] = []
        self._retired_scales: list = []
        self.xs = bq.LinearScale()
        self.xs.observe(self._on_domain, names=["min", "max"])

        lay = widgets.Layout
        self.select = widgets.SelectMultiple(options=[], rows=10, layout=lay(width="250px"))
        self.select.observe(self._on_select, names="value")
        self.overlay = widgets.SelectMultiple(options=[], rows=4, layout=lay(width="250px"))
        self.overlay.observe(self._on_overlay, names="value")
        self.smoothing = widgets.FloatSlider(value=0.0, min=0.0, max=0.99, step=0.01, description="smoothing",
                                             continuous_update=False, readout_format=".2f",
                                             style={"description_width": "70px"}, layout=lay(width="260px"))
        self.xaxis = widgets.ToggleButtons(options=["step", "epoch", "time"], value=x, tooltips=[
            "optimizer steps", "epochs (fractional within an epoch)", "seconds since the run started"],
            style={"button_width": "64px"})
        self.yscale = widgets.ToggleButtons(options=["linear", "log"], value="linear", style={"button_width": "64px"})
        self.timeframe = widgets.Dropdown(options=TIMEFRAMES, index=0, layout=lay(width="150px"))
        self.panzoom = widgets.ToggleButton(value=False, description="pan/zoom", icon="search",
                                            tooltip="drag to pan, wheel to zoom: the visible range is re-read in detail",
                                            layout=lay(width="110px"))
        self.reset_zoom = widgets.Button(description="reset zoom", layout=lay(width="95px"))
        # off by default: dozens of checkpoints make a comb over every chart
        self.show_markers = widgets.Checkbox(value=False, description="markers", indent=False, layout=lay(width="90px"),
                                             tooltip="ticks at the top of each chart: parameter changes, checkpoints, "
                                                     "rollbacks, a stop (hover for what)")
        self.export = widgets.Button(description="export CSV", icon="download", layout=lay(width="110px"),
                                     tooltip="the visible series, every point: a CSV to download")
        self.export_out = widgets.HTML()
        self.status = widgets.HTML()
        self.latest = widgets.HTML()
        for w, name in ((self.smoothing, "value"), (self.xaxis, "value"), (self.yscale, "value"),
                        (self.timeframe, "value"), (self.show_markers, "value")):
            w.observe(self._on_option, names=name)
        self.panzoom.observe(self._on_panzoom, names="value")
        self.reset_zoom.on_click(lambda _b: self._reset_zoom())
        self.export.on_click(lambda _b: self._export_clicked())

        self.grid = widgets.GridBox(layout=lay(grid_template_columns="repeat(auto-fill, minmax(380px, 1fr))",
                                               width="100%", grid_gap="4px"))
        toolbar = widgets.HBox([self.xaxis, self.yscale, self.timeframe, self.smoothing, self.show_markers,
                                self.panzoom, self.reset_zoom, self.export],
                               layout=lay(flex_flow="row wrap", align_items="center"))
        side = widgets.VBox([widgets.HTML("<b>metrics</b>"), self.select,
                             widgets.HTML("<b>overlay runs</b>"), self.overlay],
                            layout=lay(width="260px", min_width="260px"))
        main = widgets.VBox([toolbar, self.status, self.grid, self.export_out, self.latest],
                            layout=lay(flex="1 1 auto", width="100%"))
        self.widget = widgets.HBox([side, main], layout=lay(width="100%"))

    # ------------------------------------------------------------------ user actions (main thread)
    def _on_select(self, change) -> None:
        if self.mon.updating:
            return
        self.user_chose = True
        self._requested = list(change["new"])
        self._changed()

    def _on_overlay(self, change) -> None:
        if self.mon.updating:
            return
        self.mon.set_overlays(list(change["new"]))

    def _on_option(self, _change) -> None:
        if self.mon.updating:
            return
        self._changed(reload=True)

    def _on_panzoom(self, change) -> None:
        with self.mon.lock:
            for c in self.charts.values():
                c.fig.interaction = bq.interacts.PanZoom(scales={"x": [self.xs]}) if change["new"] else None

    def _on_domain(self, _change) -> None:
        # only a pan or zoom is a user's range; anything else the browser sends back is not a choice
        if self._setting_scale or not self.panzoom.value:
            return
        lo, hi = self.xs.min, self.xs.max
        if lo is not None and hi is not None and hi > lo:
            self._zoom = (float(lo), float(hi))
            self._zoom_pending = True
            self.mon.wake()

    def _reset_zoom(self) -> None:
        with self.mon.lock:
            self._zoom = None
            self._set_domain(None, None)
            self._drop_series()
        self.mon.refresh()

    def _changed(self, reload: bool = False) -> None:
        with self.mon.lock:
            if reload:
                self._drop_series()
            self._dirty = True
        self.mon.refresh()

    def _drop_series(self) -> None:
        self._dirty = True
        self.series.clear()
        self.epochs.clear()
        # closed once the grid no longer shows them (a closed child would fail the browser's grid view)
        self._retired.extend(self.charts.values())
        self.charts.clear()
        if self._zoom is None:
            # A new x scale: the browser's scale keeps the domain of every mark ever drawn on it (closed
            # figures' marks included), so after step -> time the axis would stay on the step range.
            self.xs.unobserve(self._on_domain, names=["min", "max"])
            self._retired_scales.append(self.xs)
            self.xs = bq.LinearScale()
            self.xs.observe(self._on_domain, names=["min", "max"])

    def _set_domain(self, lo, hi) -> None:
        self._setting_scale = True
        try:
            with self.xs.hold_sync():
                self.xs.min, self.xs.max = lo, hi
        finally:
            self._setting_scale = False

    # ------------------------------------------------------------------ selection
    @property
    def selected(self) -> list[str]:
        if self.user_chose:
            return [k for k in self._requested if k in self.keys] or [k for k in self._requested]
        return default_keys(self.keys)

    def _options(self) -> list[tuple[str, str]]:
        return [(f"{group(k)}: {k}", k) for k in sorted(self.keys, key=lambda k: (GROUP_ORDER.index(group(k)), k))]

    def update_keys(self, keys: list[str]) -> None:
        if keys == self.keys:
            return
        self.keys = keys
        opts = self._options()
        with self.mon.quiet():
            self.select.options = opts
            self.select.value = tuple(k for k in self.selected if k in keys)
        self._dirty = True

    def update_overlay_options(self, runs_df) -> None:
        primary = self.mon.runs[0].id if self.mon.runs else None
        opts = [(f"{r.name} · {r.status} · {r.id[:8]}", r.id) for r in runs_df.itertuples() if r.id != primary]
        if opts != list(self.overlay.options):
            chosen = tuple(v for v in self.overlay.value if v in {o[1] for o in opts})
            with self.mon.quiet():
                self.overlay.options = opts
                self.overlay.value = chosen

    # ------------------------------------------------------------------ refresh (monitor lock held)
    def color(self, rs, key: str, taken: set[str] = frozenset()) -> str:
        """A run's colour in compare mode; else the metric's own colour, the same in every Monitor (from
        its name), moved on to the next free one when another line of the chart has it."""
        if len(self.mon.runs) > 1:
            return rs.color
        if key not in self._colors:
            i = zlib.crc32(key.encode()) % len(f.PALETTE)
            for j in range(len(f.PALETTE)):
                c = f.PALETTE[(i + j) % len(f.PALETTE)]
                if c not in taken:
                    break
            self._colors[key] = c
        return self._colors[key]

    def refresh(self, slow: bool) -> None:
        mon = self.mon
        if not mon.runs:
            return
        if slow or not self.keys:
            self.update_keys(mon.runs[0].run.metric_keys())
        selected = self.selected
        if self._zoom_pending and self.panzoom.value:
            self._apply_zoom()
        window = self.timeframe.value
        changed: set[tuple[str, str]] = set()
        for rs in mon.runs:
            # nothing was written since the last read (no flush moved the heartbeat or the last step)
            written = (rs.last_step, rs.info.get("heartbeat_at"), rs.status, tuple(selected), window)
            if not self._dirty and not slow and self._written.get(rs.id) == written:
                continue
            self._written[rs.id] = written
            for key in selected:
                ident = (rs.id, key)
                s = self.series.get(ident)
                if s is None:
                    s = self.series[ident] = Series(rs.run, key, mon.max_points, window=window)
                try:
                    if s.update(rs.last_step):
                        changed.add(ident)
                except KeyError:  # this run has no such metric (yet)
                    continue
                for step, value in s.nonfinite:
                    mon.alerts.nonfinite(rs.id, key, step, value)
                s.nonfinite.clear()
            if self.xaxis.value == "epoch":
                e = self.epochs.get(rs.id)
                if e is None:
                    e = self.epochs[rs.id] = Series(rs.run, "epoch", mon.max_points)
                try:
                    if e.update(rs.last_step):
                        changed.update((rs.id, k) for k in selected)
                except KeyError:
                    pass
        for ident in list(self.series):
            if ident[1] not in selected or ident[0] not in {rs.id for rs in mon.runs}:
                del self.series[ident]
        if self._dirty:
            self._layout(selected)
            changed = set(self.series)
        self._draw(changed)
        if slow or self._dirty:
            self._draw_markers()
            self._latest()
        self._dirty = False
        self.status.value = "" if selected else f.note("no metrics recorded yet" if not self.keys else
                                                       "choose metrics on the left")

    def _layout(self, selected: list[str]) -> None:
        fams: list[str] = []
        for k in selected:
            if family(k) not in fams:
                fams.append(family(k))
        log = self.yscale.value == "log"
        for fam in list(self.charts):
            if fam not in fams:
                del self.charts[fam]
        for fam in fams:
            if fam not in self.charts:
                self.charts[fam] = _Chart(fam, self.xs, log, X_LABELS[self.xaxis.value])
                if self.panzoom.value:
                    self.charts[fam].fig.interaction = bq.interacts.PanZoom(scales={"x": [self.xs]})
        compare = len(self.mon.runs) > 1
        for fam, chart in self.charts.items():
            want = {}
            fam_keys = [k for k in selected if family(k) == fam]
            taken: set[str] = set()
            for rs in self.mon.runs:
                for i, key in enumerate(fam_keys):
                    ident = (rs.id, key)
                    pair = chart.lines.get(ident)
                    if pair is None:
                        label = f"{rs.name}: {key}" if compare else key
                        color = self.color(rs, key, taken)
                        style = LINE_STYLES[i % len(LINE_STYLES)] if compare else "solid"
                        raw = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": self.xs, "y": chart.ys},
                                       colors=[color], labels=[label], line_style=style,
                                       stroke_width=1.6, enable_hover=False)
                        smooth = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": self.xs, "y": chart.ys},
                                          colors=[color], labels=[label + " (smoothed)"], line_style=style,
                                          stroke_width=2.0, visible=False, enable_hover=False)
                        pair = (raw, smooth)
                    taken.add(pair[0].colors[0])
                    want[ident] = pair
            chart.lines = want
            chart.same = {}
            self._legend(chart)
            marks = chart.marks()
            if chart.fig.marks != marks:
                chart.fig.marks = marks
        figs = [c.box for c in self.charts.values()]
        if list(self.grid.children) != figs:
            self.grid.children = figs
        for c in self._retired:
            c.close()
        for sc in self._retired_scales:
            sc.close()
        self._retired, self._retired_scales = [], []

    def _legend(self, chart) -> None:
        """The chart's title and its lines' names, above the plot: one entry per line drawn (identical
        series share one line and one entry), and the marker kinds when markers are shown."""
        items = []
        for ident, (raw, _smooth) in chart.lines.items():
            if ident in chart.same:
                continue
            names = [raw.labels[0]] + [o[1] for o, p in chart.same.items() if p == ident]
            dash = LINE_DASH.get(raw.line_style, "")
            swatch = (f'<svg width="22" height="8" style="vertical-align:middle"><line x1="0" y1="4" x2="22" y2="4" '
                      f'stroke="{raw.colors[0]}" stroke-width="2.5" stroke-dasharray="{dash}"/></svg>')
            items.append(f'<span style="margin-right:12px;white-space:nowrap">{swatch} {f.esc(" = ".join(names))}</span>')
        if self.show_markers.value:
            for kind, color in MARKERS.items():
                if chart.markers[kind].visible:
                    items.append(f'<span style="margin-right:12px;white-space:nowrap;color:#555">'
                                 f'<span style="color:{color};font-weight:900">|</span> {kind.replace("_", " ")}</span>')
        html = (f'<div class="tmon-legend" style="font-size:0.85em;line-height:1.4;padding-left:64px">'
                f'<b style="font-size:1.1em;margin-right:12px">{f.esc(chart.family)}</b>{"".join(items)}</div>')
        if chart.legend.value != html:
            chart.legend.value = html

    def _dedupe(self, chart) -> None:
        """Hide a line whose points equal another's of the same run (Lightning logs ``loss`` and
        ``train_loss`` with the same values): one line, named by both."""
        same: dict = {}
        held = [(ident, self.series.get(ident)) for ident in chart.lines]
        for i, (ident, s) in enumerate(held):
            if s is None or not len(s) or ident in same:
                continue
            for other, t in held[i + 1:]:
                if (other[0] == ident[0] and other not in same and t is not None and len(t) == len(s)
                        and np.array_equal(t.step, s.step) and np.array_equal(t.value, s.value, equal_nan=True)):
                    same[other] = ident
        if same != chart.same:
            chart.same = same
            for ident, (raw, smooth) in chart.lines.items():
                hide = ident in same
                if raw.visible == hide:
                    raw.visible = not hide
                if hide and smooth.visible:
                    smooth.visible = False
            self._legend(chart)

    def x_values(self, rs, step: np.ndarray, wall: np.ndarray) -> np.ndarray:
        mode = self.xaxis.value
        if mode == "time":
            return wall - float(rs.info.get("created_at") or (wall[0] if len(wall) else 0.0))
        if mode == "epoch":
            e = self.epochs.get(rs.id)
            if e is None or not len(e):
                return np.full(len(step), np.nan)
            return epoch_axis(step.astype(np.float64), e.step.astype(np.float64), e.value)
        return step.astype(np.float64)

    def _draw(self, idents) -> None:
        log = self.yscale.value == "log"
        weight = float(self.smoothing.value)
        runs = {rs.id: rs for rs in self.mon.runs}
        drawn = False
        for chart in self.charts.values():
            if not any(ident in idents for ident in chart.lines):
                continue
            drawn = True
            for ident, (raw, smooth) in chart.lines.items():
                if ident not in idents:
                    continue
                s = self.series.get(ident)
                if s is None:
                    continue
                x = self.x_values(runs[ident[0]], s.step, s.wall)
                y = np.where(np.isfinite(s.value), s.value, np.nan)
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
                    smooth.visible = weight > 0 and ident not in chart.same
            self._dedupe(chart)
            self._y_domain(chart, log)
        if drawn:
            self._x_ticks()

    def _x_ticks(self) -> None:
        """Round tick values (0, 300, 600 ... not -19, 320, 658) over the lines' x range; bqplot's own
        ticks follow a domain it pads by the stroke width. Left to bqplot while pan/zoom is on."""
        lo, hi = np.inf, -np.inf
        if not self.panzoom.value and self._zoom is None:
            for chart in self.charts.values():
                for raw, _smooth in chart.lines.values():
                    x = raw.x
                    if len(x):
                        lo, hi = min(lo, float(np.nanmin(x))), max(hi, float(np.nanmax(x)))
        ticks = nice_ticks(lo, hi) if np.isfinite(lo) and hi > lo else None
        mode = self.xaxis.value
        fmt = (",d" if hi < 1e6 else "~s") if mode == "step" else "~g"
        for chart in self.charts.values():
            ax = chart.x_axis
            cur = ax.tick_values
            if ticks is None and (cur is None or not len(cur)):
                continue
            if ticks is not None and cur is not None and len(cur) == len(ticks) and np.array_equal(cur, ticks) \
                    and ax.tick_format == fmt:
                continue
            with ax.hold_sync():
                ax.tick_values = ticks if ticks is not None else np.zeros(0)
                ax.tick_format = fmt

    def _y_domain(self, chart, log: bool) -> None:
        """A flat chart (a constant lr) gets a y range around its value: bqplot would stretch a zero-width
        domain over the whole height and label every tick with the same number."""
        lo, hi = np.inf, -np.inf
        for raw, _smooth in chart.lines.values():
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
        if (chart.ys.min, chart.ys.max) != dom:
            with chart.ys.hold_sync():
                chart.ys.min, chart.ys.max = dom

    def _draw_markers(self) -> None:
        rs = self.mon.runs[0]
        ev = self.mon.events
        show = self.show_markers.value and ev is not None and len(ev)
        for kind in MARKERS:
            if show:
                part = ev[ev.type == kind]
                part = part[part.step.notna()] if self.xaxis.value != "time" else part
            else:
                part = None
            for chart in self.charts.values():
                rules = chart.markers[kind]
                if part is None or not len(part):
                    if rules.visible:
                        rules.visible = False
                        self._legend(chart)
                    continue
                steps = part.step.to_numpy(dtype=np.float64, na_value=np.nan)
                x = self.x_values(rs, steps, part.wall_time.to_numpy(np.float64))
                names = [f"step {'' if s != s else int(s)}: {f.text(m) or kind}"[:200]
                         for s, m in zip(steps, part.message, strict=True)]
                ok = np.isfinite(x)
                x = x[ok]
                names = [n for n, k in zip(names, ok, strict=True) if k]
                if not len(x):
                    rules.visible = False
                    continue
                was = rules.visible
                with rules.hold_sync():
                    rules.x = np.repeat(x[:, None], 2, axis=1)
                    rules.y = np.tile(np.array([[1.0 - MARKER_STRIP, 1.0]]), (len(x), 1))
                    rules.labels = names  # the hover text of each tick
                    rules.colors = [MARKERS[kind]] * len(x)
                    rules.visible = True
                if not was:
                    self._legend(chart)

    def _latest(self) -> None:
        rows = []
        for rs in self.mon.runs:
            latest = self.mon.latest.get(rs.id) or {}
            for key in sorted(latest, key=lambda k: (GROUP_ORDER.index(group(k)), k)):
                step, value = latest[key]
                s = self.series.get((rs.id, key))
                row = {"run": rs.name, "metric": key, "group": group(key), "step": step, "value": value}
                if s is not None and len(s):
                    fin = s.value[np.isfinite(s.value)]
                    if len(fin):
                        row["min"], row["max"] = float(fin.min()), float(fin.max())
                rows.append(row)
        cols = (["run"] if len(self.mon.runs) > 1 else []) + ["metric", "group", "step", "value", "min", "max"]
        self.latest.value = "<b>latest values</b>" + f.table(rows, cols, empty="no metrics yet")

    # ------------------------------------------------------------------ zoom
    def _apply_zoom(self) -> None:
        self._zoom_pending = False
        if self._zoom is None:
            return
        lo, hi = self._zoom
        for ident, s in list(self.series.items()):
            rs = next(r for r in self.mon.runs if r.id == ident[0])
            a, b = self._to_steps(rs, s, lo, hi)
            if a is None:
                continue
            z = Series(rs.run, ident[1], self.mon.max_points, start=a, end=b)
            try:
                z.load()
            except KeyError:
                continue
            self.series[ident] = z
        self._dirty = True

    def _to_steps(self, rs, s, lo, hi):
        """The step range [a, b] that the x range [lo, hi] covers for series ``s``."""
        if not len(s):
            return None, None
        mode = self.xaxis.value
        if mode == "step":  # one point beyond each edge, so the line runs to the frame
            return max(0, int(np.floor(lo)) - 1), int(np.ceil(hi)) + 1
        x = self.x_values(rs, s.step, s.wall)
        ok = np.isfinite(x)
        if ok.sum() < 2:
            return None, None
        steps = s.step[ok].astype(np.float64)
        a, b = np.interp([lo, hi], x[ok], steps)
        return max(0, int(np.floor(a)) - 1), int(np.ceil(b)) + 1

    # ------------------------------------------------------------------ export
    def visible_frame(self):
        """Every point of the visible series (selected metrics, timeframe or zoom range), long format."""
        import pandas as pd

        frames = []
        for (run_id, key), s in self.series.items():
            rs = next(r for r in self.mon.runs if r.id == run_id)
            start, end = s.start, s.end
            if s.window is not None and s.last_step is not None:
                start = s.last_step - s.window + 1
            df = rs.run.metrics(key, start=start, end=end)
            df.insert(0, "key", key)
            df.insert(0, "run_name", rs.name)
            df.insert(0, "run_id", run_id)
            frames.append(df)
        cols = ["run_id", "run_name", "key", "step", "value", "wall_time"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)

    def export_csv(self, path: str | os.PathLike | None = None) -> str:
        df = self.visible_frame()
        if path is None:
            rid = self.mon.runs[0].id[:8] if self.mon.runs else "none"
            path = f"tmon-{rid}-metrics-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        path = os.path.abspath(os.fspath(path))
        df.to_csv(path, index=False)
        self.export_out.value = f.note(f"wrote <code>{f.esc(path)}</code>: {len(df):,} points of "
                                       f"{df.key.nunique() if len(df) else 0} series", "ok")
        return path

    def export_link(self) -> str:
        """The visible series as a CSV download link (a data URL): the button's file lands where the
        person clicking is, not on the kernel's machine."""
        df = self.visible_frame()
        rid = self.mon.runs[0].id[:8] if self.mon.runs else "none"
        name = f"tmon-{rid}-metrics-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        data = base64.b64encode(df.to_csv(index=False).encode()).decode("ascii")
        n = df.key.nunique() if len(df) else 0
        self.export_out.value = f.note(
            f'<a download="{f.esc(name)}" href="data:text/csv;base64,{data}" style="font-weight:600">'
            f'⬇ download {f.esc(name)}</a>: {len(df):,} points of {n} series', "ok")
        return name

    def _export_clicked(self) -> None:
        try:
            with self.mon.lock:
                self.export_link()
        except Exception as exc:
            self.export_out.value = f.note(f"export failed: {f.esc(f'{type(exc).__name__}: {exc}')}", "error")
