"""A static picture of a Monitor for where no widget front end runs (nbconvert HTML, GitHub's notebook
viewer, a notebook opened without its kernel): the header and one SVG chart per family of metrics,
drawn from the points the Monitor already holds. No store read, no dependency beyond numpy."""

from __future__ import annotations

import numpy as np

from . import _format as f

W, H, LEFT, BOTTOM, TOP = 460, 170, 52, 22, 8


def _fmt(v: float) -> str:
    return f.human(v) if abs(v) >= 1000 else f"{v:.3g}"


def chart_svg(title: str, lines: list[tuple[str, str, np.ndarray, np.ndarray]]) -> str:
    """An SVG line chart: ``lines`` of (label, colour, x, y); non-finite points are left out."""
    pts = [
        (label, color, x[np.isfinite(x) & np.isfinite(y)], y[np.isfinite(x) & np.isfinite(y)])
        for label, color, x, y in lines
    ]
    pts = [p for p in pts if len(p[2])]
    if not pts:
        return ""
    x0 = min(float(p[2].min()) for p in pts)
    x1 = max(float(p[2].max()) for p in pts)
    y0 = min(float(p[3].min()) for p in pts)
    y1 = max(float(p[3].max()) for p in pts)
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 - y0 <= 1e-12 * max(abs(y1), 1e-300):
        pad = abs(y1) * 0.5 if y1 else 1.0
        y0, y1 = y0 - pad, y1 + pad
    pw, ph = W - LEFT - 10, H - BOTTOM - TOP

    def sx(x):
        return LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return TOP + (1 - (y - y0) / (y1 - y0)) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" style="font:11px sans-serif">',
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>',
    ]
    for v, anchor in ((y1, TOP + 8), (y0, TOP + ph)):
        out.append(f'<text x="{LEFT - 4}" y="{anchor}" text-anchor="end" fill="#555">{_fmt(v)}</text>')
    for v, anchor in ((x0, "start"), (x1, "end")):
        out.append(f'<text x="{sx(v):.1f}" y="{H - 6}" text-anchor="{anchor}" fill="#555">{_fmt(v)}</text>')
    for _label, color, x, y in pts:
        coords = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(sx(x), sy(y), strict=True))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
    out.append("</svg>")
    legend = " ".join(f'<span style="color:{c}">━</span> {f.esc(label)}' for label, c, _x, _y in pts)
    return (
        f'<div style="display:inline-block;margin:4px 8px 4px 0;vertical-align:top">'
        f'<div style="font-size:0.85em"><b>{f.esc(title)}</b> {legend}</div>{"".join(out)}</div>'
    )


def snapshot_html(mon) -> str:
    """The Monitor as static HTML: its header and its Metrics charts as they are now."""
    with mon.lock:
        m = mon.metrics
        charts = []
        for fam, chart in m.charts.items():
            lines = []
            for ident, (raw, _smooth) in chart.lines.items():
                if ident in chart.same:
                    continue
                label = " = ".join([raw.labels[0]] + [o[1] for o, p in chart.same.items() if p == ident])
                lines.append(
                    (label, raw.colors[0], np.asarray(raw.x, dtype=float), np.asarray(raw.y, dtype=float))
                )
            charts.append(chart_svg(fam, lines))
        xlabel = m.xaxis.value
        head = mon.header.static_html()
    body = "".join(c for c in charts if c) or f.note("no metrics recorded yet")
    return (
        f'<div class="tmon-snapshot">{head}<div style="color:#777;font-size:0.85em">a snapshot (x: {xlabel}): '
        f"the live Monitor needs a Jupyter front end with ipywidgets</div>{body}</div>"
    )
