"""The Hardware tab: CPU, RAM (with the dataloader workers' share), swap, and per GPU memory,
utilization, power and temperature over time; warning/critical thresholds drawn; events marked.

Samples are read every few seconds (``Run.samples()``/``gpu_samples()``) and at most
``max_points`` per line reach the browser (min/max per time bucket).
"""

from __future__ import annotations

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from tmon_core import events as ev
from tmon_core.store.downsample import min_max_indices

from . import _alerts as al
from . import _format as f
from ._series import nice_ticks

GB = 1e9
#: events marked on the hardware charts (colours no sample line has)
EVENT_COLORS = {
    ev.CHECKPOINT: "#444444",
    ev.PARAM_CHANGE: "#b8860b",
    ev.ROLLBACK: "#8b0000",
    ev.OOM: "#8b0000",
    ev.EXCEPTION: "#8b0000",
    ev.STOPPED: "#000000",
    ev.STORE_GAP: "#b8860b",
}
MARKER_STRIP = 0.06


class _TimeChart:
    """One chart of samples over time; its legend is HTML above the plot (bqplot's sat on the lines and
    on the threshold lines), events are short ticks in a strip at the top."""

    def __init__(self, title: str, ylabel: str, xs, ymin=None, ymax=None):
        self.title = title
        self.ymin, self.ymax = ymin, ymax
        self.ys = bq.LinearScale(min=ymin, max=ymax)
        self.rule_scale = bq.LinearScale(min=0.0, max=1.0)
        self.x_axis = bq.Axis(
            scale=xs,
            label="seconds since the run started",
            num_ticks=6,
            grid_lines="dashed",
            tick_format="~g",
        )
        self.fig = bq.Figure(
            marks=[],
            animation_duration=0,
            axes=[
                self.x_axis,
                bq.Axis(scale=self.ys, side="left", label=ylabel, tick_format=".3~g", grid_lines="dashed"),
            ],
            fig_margin={"top": 8, "bottom": 42, "left": 60, "right": 28},
            layout=widgets.Layout(height="220px", width="auto", min_width="320px"),
        )
        self.legend = widgets.HTML()
        self.box = widgets.VBox([self.legend, self.fig], layout=widgets.Layout(min_width="320px"))
        self.lines: dict[str, bq.Lines] = {}
        self.thresholds: list[bq.Lines] = []
        self.events = bq.Lines(
            x=np.zeros((1, 2)),
            y=np.array([[1.0 - MARKER_STRIP, 1.0]]),
            scales={"x": xs, "y": self.rule_scale},
            colors=["#444444"],
            stroke_width=2.5,
            visible=False,
            preserve_domain={"x": True},
            tooltip=bq.Tooltip(fields=["name"], labels=["event"]),
        )
        self.xs = xs
        self._legend()

    def set_line(
        self, name: str, x: np.ndarray, y: np.ndarray, color: str, max_points: int, style="solid"
    ) -> None:
        line = self.lines.get(name)
        if line is None:
            line = self.lines[name] = bq.Lines(
                x=np.zeros(0),
                y=np.zeros(0),
                scales={"x": self.xs, "y": self.ys},
                colors=[color],
                labels=[name],
                line_style=style,
                stroke_width=1.5,
            )
            self._marks()
        keep, _ = min_max_indices(x, y, max_points)
        x, y = x[keep], y[keep]
        # a line whose last point has no value (a sample without that figure): bqplot places the line's
        # end label at translate(x,undefined) and logs an SVG error; a gap inside the line stays
        fin = np.flatnonzero(np.isfinite(y) & np.isfinite(x))
        end = int(fin[-1]) + 1 if len(fin) else 0
        with line.hold_sync():
            line.x, line.y = x[:end], y[:end]
        self._flat()

    def _flat(self) -> None:
        """A flat series (no swap used: all 0) gets a range above it; a zero-width domain makes bqplot
        fail on its axis format ("invalid format: .undefinedg")."""
        if self.ymax is not None:
            return
        vals = [ln.y[np.isfinite(ln.y)] for ln in self.lines.values() if len(ln.y)]
        vals = [v for v in vals if len(v)]
        top = None
        if vals:
            lo, hi = min(float(v.min()) for v in vals), max(float(v.max()) for v in vals)
            if hi - lo <= 1e-9 * max(abs(hi), 1e-300):
                top = hi * 2 if hi > 0 else 1.0
        if self.ys.max != top:
            self.ys.max = top

    def threshold(self, warning: float, critical: float) -> None:
        for value, color, label in ((warning, "#e69500", "warning"), (critical, "#d62728", "critical")):
            self.thresholds.append(
                bq.Lines(
                    x=np.array([0.0, 1.0]),
                    y=np.array([value, value]),
                    scales={"x": self.rule_scale, "y": self.ys},
                    colors=[color],
                    line_style="dashed",
                    labels=[f"{label} {value:g}"],
                    stroke_width=1,
                )
            )
        self._marks()

    def mark_events(self, x: np.ndarray, colors: list[str], names: list[str]) -> None:
        was = self.events.visible
        if not len(x):
            self.events.visible = False
        else:
            with self.events.hold_sync():
                self.events.x = np.repeat(x[:, None], 2, axis=1)
                self.events.y = np.tile(np.array([[1.0 - MARKER_STRIP, 1.0]]), (len(x), 1))
                self.events.colors = colors
                self.events.labels = names
                self.events.visible = True
        if was != self.events.visible:
            self._legend()

    def ticks(self, ticks, fmt: str = "~g") -> None:
        ax = self.x_axis
        cur = ax.tick_values
        if ticks is not None and cur is not None and len(cur) == len(ticks) and np.array_equal(cur, ticks):
            return
        ax.tick_values = ticks if ticks is not None else np.zeros(0)

    def _marks(self) -> None:
        self.fig.marks = list(self.lines.values()) + self.thresholds + [self.events]
        self._legend()

    def _legend(self) -> None:
        items = []
        for ln in list(self.lines.values()) + self.thresholds:
            dash = {"dashed": "6,3", "dotted": "2,3"}.get(ln.line_style, "")
            items.append(
                f'<span style="margin-right:12px;white-space:nowrap"><svg width="22" height="8" '
                f'style="vertical-align:middle"><line x1="0" y1="4" x2="22" y2="4" stroke="{ln.colors[0]}" '
                f'stroke-width="2.5" stroke-dasharray="{dash}"/></svg> {f.esc(ln.labels[0])}</span>'
            )
        if self.events.visible:
            items.append('<span style="color:#555;white-space:nowrap"><b>|</b> events (hover)</span>')
        html = (
            f'<div class="tmon-legend" style="font-size:0.85em;line-height:1.4;padding-left:60px">'
            f'<b style="font-size:1.1em;margin-right:12px">{f.esc(self.title)}</b>{"".join(items)}</div>'
        )
        if self.legend.value != html:
            self.legend.value = html


class HardwareTab:
    def __init__(self, monitor):
        self.mon = monitor
        self.xs = bq.LinearScale()
        self.note = widgets.HTML()
        self.cpu = _TimeChart("CPU", "% of all cores", self.xs, ymin=0.0, ymax=100.0)
        self.ram = _TimeChart("RAM", "% of host RAM", self.xs, ymin=0.0, ymax=100.0)
        self.ram.threshold(100 * al.RAM_WARNING, 100 * al.RAM_CRITICAL)
        self.swap = _TimeChart("swap", "GB used", self.xs, ymin=0.0)
        self.gpu_mem = _TimeChart("GPU memory", "% of GPU memory", self.xs, ymin=0.0, ymax=100.0)
        self.gpu_mem.threshold(100 * al.GPU_MEM_WARNING, 100 * al.GPU_MEM_CRITICAL)
        self.gpu_util = _TimeChart("GPU utilization", "%", self.xs, ymin=0.0, ymax=100.0)
        self.gpu_power = _TimeChart("GPU power", "W", self.xs, ymin=0.0)
        self.gpu_temp = _TimeChart("GPU temperature", "°C", self.xs)
        self.gpu_temp.threshold(al.GPU_TEMP_WARNING, al.GPU_TEMP_CRITICAL)
        lay = widgets.Layout(
            grid_template_columns="repeat(auto-fill, minmax(380px, 1fr))", width="100%", grid_gap="4px"
        )
        self.host_grid = widgets.GridBox([self.cpu.box, self.ram.box, self.swap.box], layout=lay)
        self.gpu_grid = widgets.GridBox(
            [self.gpu_mem.box, self.gpu_util.box, self.gpu_power.box, self.gpu_temp.box], layout=lay
        )
        self.gpu_box = widgets.VBox([widgets.HTML("<b>GPUs</b>"), self.gpu_grid])
        self.summary = widgets.HTML()
        # the full width of the tab (a box without a width shrinks to one column of charts)
        self.widget = widgets.VBox(
            [self.note, self.summary, self.host_grid, self.gpu_box], layout=widgets.Layout(width="100%")
        )
        self.samples = None
        self.gpus = None

    def read(self) -> None:
        """Read the primary run's samples and raise memory alerts on the latest ones (monitor lock held)."""
        rs = self.mon.runs[0]
        rs.samples.read()  # (only what was recorded since the last read)
        rs.gpu_samples.read()
        self.samples, self.gpus = rs.samples.frame, rs.gpu_samples.frame
        host = self.samples.iloc[-1].to_dict() if len(self.samples) else None
        gpus = []
        if len(self.gpus):
            last = self.gpus.wall_time.max()
            gpus = [
                r._asdict() for r in self.gpus[self.gpus.wall_time >= last - 1e-6].itertuples(index=False)
            ]
        self.mon.alerts.from_sample(rs.id, host, gpus)

    def render(self) -> None:
        if not self.mon.runs or self.samples is None:
            return
        rs = self.mon.runs[0]
        t0 = float(rs.info.get("created_at") or 0.0)
        s, g = self.samples, self.gpus
        mp = self.mon.max_points
        if not len(s):
            self.note.value = f.note(
                "no hardware samples for this run (sampling off: sample_interval=None, or none written yet)"
            )
        else:
            self.note.value = ""
            nodes = list(s.groupby(["host", "node_rank"], dropna=False))
            multi = len(nodes) > 1
            for i, ((host, rank), part) in enumerate(nodes):
                tag = f" {host}:{rank}" if multi else ""
                color = f.PALETTE[i % len(f.PALETTE)]
                x = part.wall_time.to_numpy(np.float64) - t0
                total = part.ram_total.to_numpy(np.float64, na_value=np.nan)

                def col(name, part=part):
                    return part[name].to_numpy(np.float64, na_value=np.nan)

                self.cpu.set_line("cpu" + tag, x, col("cpu_percent"), color, mp)
                self.ram.set_line("host used" + tag, x, 100 * col("ram_used") / total, color, mp)
                self.ram.set_line(
                    "this process" + tag,
                    x,
                    100 * col("proc_rss") / total,
                    f.PALETTE[(i + 4) % 10],  # purple, solid: not the orange dashes of the warning line
                    mp,
                )
                self.ram.set_line(
                    "dataloader workers" + tag,
                    x,
                    100 * col("children_rss") / total,
                    f.PALETTE[(i + 2) % 10],
                    mp,
                    "dotted",
                )
                self.swap.set_line("swap" + tag, x, col("swap_used") / GB, color, mp)
            last = s.iloc[-1]
            cpu = s.cpu_percent.dropna()  # a first sample has none (no CPU tick counted yet)
            self.summary.value = "latest: " + " · ".join(
                [
                    f"CPU {f.number(cpu.iloc[-1], 3)}%" if len(cpu) else "CPU -",
                    f"RAM {f.size(last.ram_used)} of {f.size(last.ram_total)}",
                    f"process {f.size(last.proc_rss)}",
                    f"workers {f.size(last.children_rss)} ({f.number(last.children_count)} processes)",
                    f"swap {f.size(last.swap_used)}",
                ]
            )
        if g is None or not len(g):
            self.gpu_box.children = [
                widgets.HTML("<b>GPUs</b>"),
                widgets.HTML(
                    f.note(
                        "no GPU samples: no NVIDIA GPU seen by NVML on the training machine, or gpus=False"
                    )
                ),
            ]
        else:
            self.gpu_box.children = [widgets.HTML("<b>GPUs</b>"), self.gpu_grid]
            for i, ((host, rank, gpu), part) in enumerate(
                g.groupby(["host", "node_rank", "gpu"], dropna=False)
            ):
                tag = f"GPU {gpu}" + (
                    f" {host}:{rank}" if g.host.nunique() > 1 or g.node_rank.nunique() > 1 else ""
                )
                color = f.PALETTE[i % len(f.PALETTE)]
                x = part.wall_time.to_numpy(np.float64) - t0

                def col(name, part=part):
                    return part[name].to_numpy(np.float64, na_value=np.nan)

                self.gpu_mem.set_line(tag, x, 100 * col("mem_used") / col("mem_total"), color, mp)
                self.gpu_util.set_line(tag, x, col("util_percent"), color, mp)
                self.gpu_power.set_line(tag, x, col("power_watts"), color, mp)
                self.gpu_temp.set_line(tag, x, col("temperature_c"), color, mp)
        charts = (self.cpu, self.ram, self.swap, self.gpu_mem, self.gpu_util, self.gpu_power, self.gpu_temp)
        events = self.mon.events
        if events is not None and len(events):
            part = events[events.type.isin(list(EVENT_COLORS))]
            x = part.wall_time.to_numpy(np.float64) - t0
            colors = [EVENT_COLORS[t] for t in part.type]
            names = [
                f"{t.replace('_', ' ')}: {f.text(m)}"[:200]
                for t, m in zip(part.type, part.message, strict=True)
            ]
            for chart in charts:
                chart.mark_events(x, colors, names)
        xs = [ln.x for c in charts for ln in c.lines.values() if len(ln.x)]
        lo = min((float(np.nanmin(x)) for x in xs), default=np.nan)
        hi = max((float(np.nanmax(x)) for x in xs), default=np.nan)
        ticks = nice_ticks(lo, hi) if np.isfinite(lo) and hi > lo else None
        for chart in charts:
            chart.ticks(ticks)
