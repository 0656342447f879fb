"""Small formatting helpers shared by the tabs (plain strings and HTML, no widgets)."""

from __future__ import annotations

import html
import math
import time
from typing import Any

from tmon_core import events as ev

#: colours of the status badge
STATUS_COLORS = {
    ev.RUNNING: "#1f77b4",
    ev.COMPLETED: "#2ca02c",
    ev.FAILED: "#d62728",
    ev.INTERRUPTED: "#ff7f0e",
    ev.LOST: "#7f7f7f",
    "waiting": "#9467bd",
    "NaN": "#d62728",
    "OOM": "#d62728",
    "diverged": "#d62728",
}
#: colours of alert levels (tmon_core.alerts: info, warning, critical)
LEVEL_COLORS = {"critical": "#d62728", "warning": "#e69500", "info": "#1f77b4"}
#: line colours (category10), given to runs in compare mode and to keys otherwise
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]

esc = html.escape


def text(v: Any) -> str:
    """A cell of a DataFrame as text: None, NaN and pandas' NA read as ''."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ in ("NAType", "NaTType"):
        return ""
    return str(v)


def badge(text: str, color: str) -> str:
    return (
        f'<span style="background:{color};color:white;border-radius:8px;padding:1px 8px;'
        f'font-size:0.85em;font-weight:600">{esc(text)}</span>'
    )


def status_badge(status: str) -> str:
    return badge(status, STATUS_COLORS.get(status, "#7f7f7f"))


def health_status(status: str, kinds: set[str]) -> str:
    """What the badge says: the run's status, unless its alerts tell a worse story (a run that
    "completed" with a NaN loss did not end well)."""
    if status in (ev.FAILED, ev.LOST, ev.INTERRUPTED):
        return status
    if "nan_loss" in kinds or "nonfinite" in kinds:  # the Monitor's own alert, or the run's rule
        return "NaN"
    if ev.OOM in kinds:  # an alert raised by an oom event has the event's type as its kind (so has the rule)
        return "OOM"
    if "divergence" in kinds:
        return "diverged"
    return status


def duration(seconds: float | None) -> str:
    """``95`` -> ``1m35s``; ``4000`` -> ``1h06m``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def number(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(number(x, digits) for x in v) + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k}={number(x, digits)}" for k, x in v.items())
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return number(f, digits) if not float(f).is_integer() or "." in str(v) else number(int(f))


def human(v: float | None, digits: int = 3) -> str:
    """A rate or count for people: ``6740.2`` -> ``6.74 k``; ``3.4e-4`` -> ``0.00034``; ``12.5`` -> ``12.5``."""
    if v is None or not math.isfinite(v):
        return "-"
    a = abs(v)
    for limit, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if a >= limit:
            return f"{v / limit:.{digits}g}{suffix}"
    return f"{v:.{digits}g}"


def size(nbytes: Any) -> str:
    if nbytes is None or (isinstance(nbytes, float) and math.isnan(nbytes)):
        return "-"
    n = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def clock(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def table(rows: list[dict], columns: list[str], empty: str = "nothing yet", raw: tuple[str, ...] = ()) -> str:
    """An HTML table of ``rows``; values are escaped except in the ``raw`` columns (trusted HTML)."""
    if not rows:
        return f'<div style="color:#777;padding:4px 0">{esc(empty)}</div>'
    head = "".join(f'<th style="text-align:left;padding:2px 8px">{esc(c)}</th>' for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            text = str(v) if c in raw else esc(v if isinstance(v, str) else number(v))
            cells.append(f'<td style="padding:2px 8px;vertical-align:top">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<table class="tmon-table" style="border-collapse:collapse;font-size:0.9em">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def note(text: str, kind: str = "info") -> str:
    colors = {
        "info": ("#eef5fb", "#1f77b4"),
        "warn": ("#fff6e5", "#e69500"),
        "error": ("#fdecea", "#d62728"),
        "ok": ("#eaf7ea", "#2ca02c"),
    }
    bg, fg = colors.get(kind, colors["info"])
    return (
        f'<div style="background:{bg};border-left:4px solid {fg};padding:6px 10px;margin:4px 0;'
        f'font-size:0.9em">{text}</div>'
    )
