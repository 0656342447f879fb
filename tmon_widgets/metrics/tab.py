"""The Metrics tab: the controls, and what each refresh reads and draws.

One :class:`~tmon_widgets.metrics.chart.Chart` per family of metrics (``loss``, ``train_loss_step``
and ``val_loss`` share the ``loss`` chart; ``lr`` and ``lr/pg1`` the ``lr`` chart). Each line is a
:class:`~tmon_widgets._series.Series`: at most ``max_points`` points, grown by incremental reads.
Options: metrics (grouped train / val / optimizer / system), EMA smoothing, x by step / epoch / time,
linear / log y, timeframe (all, last N steps, pan-zoom with detail re-read for the visible range:
:mod:`.zoom`), overlay other runs, markers at parameter changes, checkpoints and rollbacks, a table of
the latest values, CSV export (:mod:`.export`).
"""

from __future__ import annotations

import os
import zlib

import ipywidgets as widgets
import numpy as np

from tmon_core.events import CHECKPOINT
from tmon_core.store.checkpoints import saved_after_step

from .. import _format as f
from .._series import Series, epoch_axis
from .chart import HIDDEN_TABS_CSS, LINE_STYLES, MARKERS, Chart, round_x_ticks
from .export import Export
from .keys import by_group, default_keys, family, group
from .zoom import Zoom

TIMEFRAMES = [
    ("all steps", None),
    ("last 100 steps", 100),
    ("last 1,000 steps", 1000),
    ("last 10,000 steps", 10000),
    ("last 100,000 steps", 100000),
]
_NONE = (np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))
X_LABELS = {"step": "step", "epoch": "epoch", "time": "seconds since the run started"}


class MetricsTab:
    def __init__(self, monitor, metrics: list[str] | None = None, x: str = "step"):
        if x not in X_LABELS:
            raise ValueError(f"x must be 'step', 'epoch' or 'time', received x={x!r}")
        self.mon = monitor
        self.series: dict[tuple[str, str], Series] = {}
        self.epochs: dict[str, Series] = {}
        self.charts: dict[str, Chart] = {}
        self.keys: list[str] = []  # the primary run's metric keys
        self.user_chose = metrics is not None
        self._requested = list(metrics or [])
        self._colors: dict[str, str] = {}
        self._written: dict[str, tuple] = {}  # run id -> what the run row said at the last read
        self._cursors: dict[str, int] = {}  # run id -> the newest chunk read (``Run.points_since``)
        #: run id -> {key: (steps, values, walls)} the last refresh read for every metric of the run
        self.fed: dict[str, dict] = {}
        self._dirty = True  # lines must be redrawn (options changed)
        self._retired: list[Chart] = []
        self.zoom = Zoom(self)
        self.exporter = Export(self)

        lay = widgets.Layout
        self.select = widgets.SelectMultiple(options=[], rows=10, layout=lay(width="250px"))
        self.select.observe(self._on_select, names="value")
        self.overlay = widgets.SelectMultiple(options=[], rows=4, layout=lay(width="250px"))
        self.overlay.observe(self._on_overlay, names="value")
        self.smoothing = widgets.FloatSlider(
            value=0.0,
            min=0.0,
            max=0.99,
            step=0.01,
            description="smoothing",
            continuous_update=False,
            readout_format=".2f",
            style={"description_width": "70px"},
            layout=lay(width="260px"),
        )
        self.xaxis = widgets.ToggleButtons(
            options=["step", "epoch", "time"],
            value=x,
            tooltips=[
                "optimizer steps",
                "epochs (fractional within an epoch)",
                "seconds since the run started",
            ],
            style={"button_width": "64px"},
        )
        self.yscale = widgets.ToggleButtons(
            options=["linear", "log"], value="linear", style={"button_width": "64px"}
        )
        self.timeframe = widgets.Dropdown(options=TIMEFRAMES, index=0, layout=lay(width="150px"))
        self.panzoom, self.reset_zoom = self.zoom.toggle, self.zoom.reset_button
        # off by default: dozens of checkpoints make a comb over every chart
        self.show_markers = widgets.Checkbox(
            value=False,
            description="markers",
            indent=False,
            layout=lay(width="90px"),
            tooltip="ticks at the top of each chart: parameter changes, checkpoints, "
            "rollbacks, a stop (hover for what)",
        )
        self.export, self.export_out = self.exporter.button, self.exporter.out
        self.status = widgets.HTML()
        self.latest = widgets.HTML()
        for w, name in (
            (self.smoothing, "value"),
            (self.xaxis, "value"),
            (self.yscale, "value"),
            (self.timeframe, "value"),
            (self.show_markers, "value"),
        ):
            w.observe(self._on_option, names=name)

        self.grid = widgets.GridBox(
            layout=lay(
                grid_template_columns="repeat(auto-fill, minmax(380px, 1fr))", width="100%", grid_gap="4px"
            )
        )
        toolbar = widgets.HBox(
            [
                self.xaxis,
                self.yscale,
                self.timeframe,
                self.smoothing,
                self.show_markers,
                self.panzoom,
                self.reset_zoom,
                self.export,
            ],
            layout=lay(flex_flow="row wrap", align_items="center"),
        )
        side = widgets.VBox(
            [
                widgets.HTML("<b>metrics</b>" + HIDDEN_TABS_CSS),
                self.select,
                widgets.HTML("<b>overlay runs</b>"),
                self.overlay,
            ],
            layout=lay(width="260px", min_width="260px"),
        )
        main = widgets.VBox(
            [toolbar, self.status, self.grid, self.export_out, self.latest],
            layout=lay(flex="1 1 auto", width="100%"),
        )
        self.widget = widgets.HBox([side, main], layout=lay(width="100%"))

    @property
    def xs(self):
        """The x scale every chart shares (a new one after a change of x, see :meth:`Zoom.renew_scale`)."""
        return self.zoom.scale

    @property
    def _zoom(self) -> tuple[float, float] | None:
        """The zoomed x range, None when not zoomed (tests read it here, where it lived before zoom.py)."""
        return self.zoom.range

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

    def _changed(self, reload: bool = False) -> None:
        with self.mon.lock:
            if reload:
                self.drop_series()
            self._dirty = True
        self.mon.refresh()

    def mark_dirty(self) -> None:
        """Lay the charts out and redraw every line at the next refresh (the runs shown changed)."""
        self._dirty = True

    def drop_series(self) -> None:
        """Forget the points held and the charts: the next refresh reads and draws everything anew."""
        self._dirty = True
        self.series.clear()
        self.epochs.clear()
        # closed once the grid no longer shows them (a closed child would fail the browser's grid view)
        self._retired.extend(self.charts.values())
        self.charts.clear()
        self.zoom.renew_scale()

    # ------------------------------------------------------------------ selection
    @property
    def selected(self) -> list[str]:
        if self.user_chose:
            return [k for k in self._requested if k in self.keys] or [k for k in self._requested]
        return default_keys(self.keys)

    def _options(self) -> list[tuple[str, str]]:
        return [(f"{group(k)}: {k}", k) for k in sorted(self.keys, key=by_group)]

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
        opts = [
            (f"{r.name} · {r.status} · {r.id[:8]}", r.id) for r in runs_df.itertuples() if r.id != primary
        ]
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
        if self.zoom.pending and self.zoom.on:
            self.zoom.apply()
        window = self.timeframe.value
        changed: set[tuple[str, str]] = set()
        self.fed = {}
        for rs in mon.runs:
            # nothing was written since the last read (no flush moved the heartbeat or the last step)
            written = (rs.last_step, rs.info.get("heartbeat_at"), rs.status, tuple(selected), window)
            if not self._dirty and not slow and self._written.get(rs.id) == written:
                continue
            self._written[rs.id] = written
            for key in selected:
                ident = (rs.id, key)
                if ident not in self.series:
                    self.series[ident] = Series(rs.run, key, mon.max_points, window=window)
            fed = self._read_new(rs, selected)
            for key in selected:
                ident = (rs.id, key)
                s = self.series[ident]
                try:
                    grew = (
                        s.feed(*fed.get(key, _NONE))
                        if fed is not None and not s.needs_read(rs.last_step)
                        else s.update(rs.last_step)
                    )
                    if grew:
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
                    grew = (
                        e.feed(*fed.get("epoch", _NONE))
                        if fed is not None and not e.needs_read(rs.last_step)
                        else e.update(rs.last_step)
                    )
                    if grew:
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
            self.show_latest()
        self._dirty = False
        self.status.value = (
            ""
            if selected
            else f.note("no metrics recorded yet" if not self.keys else "choose metrics on the left")
        )

    def _read_new(self, rs, selected: list[str]) -> dict | None:
        """The points of every metric of ``rs`` written since the last read, in one read however many
        lines are drawn (``Run.points_since``); also what the latest-values table takes (``fed``).
        None where the series read for themselves: the run's first read (which only places the
        cursor, before they read), or a series whose gap is too wide to take point by point (a tab
        hidden a long time: the cursor moves on, the series reload downsampled)."""
        cursor = self._cursors.get(rs.id)
        wanted = [self.series[(rs.id, k)] for k in selected]
        if self.xaxis.value == "epoch" and rs.id in self.epochs:
            wanted.append(self.epochs[rs.id])
        gap = any(s.last_step is not None and s.needs_read(rs.last_step) for s in wanted)
        if cursor is None or gap:
            self._cursors[rs.id] = rs.run.points_since(None)[0]
            return None
        self._cursors[rs.id], fed = rs.run.points_since(cursor)
        self.fed[rs.id] = fed
        return fed

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
                self.charts[fam] = Chart(fam, self.xs, log, X_LABELS[self.xaxis.value])
                if self.zoom.on:
                    self.charts[fam].fig.interaction = self.zoom.interaction()
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
                        style = LINE_STYLES[i % len(LINE_STYLES)] if compare else "solid"
                        pair = chart.new_line(label, self.color(rs, key, taken), style)
                    taken.add(pair[0].colors[0])
                    want[ident] = pair
            chart.show_lines(want, self.show_markers.value)
        figs = [c.box for c in self.charts.values()]
        if list(self.grid.children) != figs:
            self.grid.children = figs
        for c in self._retired:
            c.close()
        self._retired = []
        self.zoom.close_retired()

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
            for ident in chart.lines:
                if ident not in idents:
                    continue
                s = self.series.get(ident)
                if s is None:
                    continue
                chart.set_points(ident, self.x_values(runs[ident[0]], s.step, s.wall), s.value, log, weight)
            chart.dedupe(self.series, self.show_markers.value)
            chart.fit_y(log)
        if drawn:
            round_x_ticks(
                self.charts.values(), self.xaxis.value, auto=self.zoom.on or self.zoom.range is not None
            )

    def _draw_markers(self) -> None:
        rs = self.mon.runs[0]
        ev = self.mon.events
        shown = self.show_markers.value
        show = shown and ev is not None and len(ev)
        for kind in MARKERS:
            if show:
                part = ev[ev.type == kind]
                part = part[part.step.notna()] if self.xaxis.value != "time" else part
            else:
                part = None
            if part is None or not len(part):
                for chart in self.charts.values():
                    chart.hide_markers(kind, shown)
                continue
            steps = part.step.to_numpy(dtype=np.float64, na_value=np.nan)
            if (
                kind == CHECKPOINT
            ):  # at the metric step whose update it holds, as the Checkpoints tab lists it
                fw = rs.info.get("framework")
                after = [
                    saved_after_step(s, fw, d.get("source") if isinstance(d, dict) else None)
                    for s, d in zip(steps, part.data)
                ]
                steps = np.array([np.nan if a is None else a for a in after], dtype=np.float64)
            x = self.x_values(rs, steps, part.wall_time.to_numpy(np.float64))
            names = [
                f"step {'' if s != s else int(s)}: {f.text(m) or kind}"[:200]
                for s, m in zip(steps, part.message, strict=True)
            ]
            ok = np.isfinite(x)
            names = [n for n, k in zip(names, ok, strict=True) if k]
            for chart in self.charts.values():
                chart.place_markers(kind, x[ok], names, shown)

    def show_latest(self) -> None:
        rows = []
        for rs in self.mon.runs:
            latest = self.mon.latest.get(rs.id) or {}
            for key in sorted(latest, key=by_group):
                step, value = latest[key]
                s = self.series.get((rs.id, key))
                row = {"run": rs.name, "metric": key, "group": group(key), "step": step, "value": value}
                if s is not None and len(s):
                    fin = s.value[np.isfinite(s.value)]
                    if len(fin):
                        row["min"], row["max"] = float(fin.min()), float(fin.max())
                rows.append(row)
        cols = (["run"] if len(self.mon.runs) > 1 else []) + [
            "metric",
            "group",
            "step",
            "value",
            "min",
            "max",
        ]
        self.latest.value = "<b>latest values</b>" + f.table(rows, cols, empty="no metrics yet")

    # ------------------------------------------------------------------ export
    def visible_frame(self):
        """Every point of the visible series (selected metrics, timeframe or zoom range), long format."""
        return self.exporter.frame()

    def export_csv(self, path: str | os.PathLike | None = None) -> str:
        return self.exporter.write(path)

    def export_link(self) -> str:
        return self.exporter.link()
