"""A report as text (``print(report)``, ``tmon report``) and as an HTML card (a notebook's display)."""

from __future__ import annotations

import html as _html
import time
from typing import Any

from .rules import fmt_bytes, fmt_seconds, fmt_value, pct

_COLORS = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1565c0", "good": "#2e7d32"}
_MAX_LOG_LINES = 20


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return fmt_value(v)
    return str(v)


def _rate(x: float) -> str:
    """A rate for people: 43,860 / 645.1 / 20.2 / 0.512, never 4.386e+04."""
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _headline(r) -> list[str]:
    s = r.summary
    steps = "-" if s.get("steps") is None else str(s["steps"])
    if s.get("total_steps"):
        steps += f" of {s['total_steps']}"
    parts = [f"{s.get('status', '?')}", f"{fmt_seconds(_num(s.get('duration_s')))}", f"{steps} steps"]
    tp = s.get("throughput") or {}
    if _num(tp.get("steps_per_s")):
        parts.append(f"{_rate(tp['steps_per_s'])} steps/s")
    if _num(tp.get("samples_per_s")):
        parts.append(f"{_rate(tp['samples_per_s'])} samples/s")
    lines = [" · ".join(parts)]
    m = s.get("memory") or {}
    mem = []
    if _num(m.get("host_peak_bytes")):
        mem.append(
            f"host RAM {fmt_bytes(m['host_peak_bytes'])} of {fmt_bytes(_num(m.get('host_total_bytes')))} "
            f"({pct(_num(m.get('host_peak_fraction')))})"
        )
    for g in m.get("gpus") or []:
        if _num(g.get("peak_mem_bytes")):
            util = (
                f", {g['mean_util_percent']:.0f} % util"
                if _num(g.get("mean_util_percent")) is not None
                else ""
            )
            mem.append(
                f"GPU {g['gpu']} {fmt_bytes(g['peak_mem_bytes'])} of {fmt_bytes(_num(g.get('mem_total_bytes')))} "
                f"({pct(_num(g.get('peak_fraction')))}{util})"
            )
    if mem:
        lines.append("peak memory: " + " · ".join(mem))
    best = s.get("best") or {}
    if best:
        lines.append(
            "best: "
            + " · ".join(
                f"{k} {_value(v.get('value'))} (step {v.get('step')})" for k, v in list(best.items())[:6]
            )
        )
    if s.get("error"):
        lines.append(f"error: {s['error'].get('type')}: {(s['error'].get('message') or '').strip()[:200]}")
    return lines


def _change(rec) -> str:
    if rec.current_value is None and rec.recommended_value is None:
        return ""
    if rec.current_value is None:
        return f"→ {_value(rec.recommended_value)}"
    return f"{_value(rec.current_value)} → {_value(rec.recommended_value)}"


def _memory_note(mem: dict | None) -> str:
    if not mem:
        return ""
    parts = []
    if _num(mem.get("ram_fraction")) is not None:
        parts.append(f"host RAM {pct(mem['ram_fraction'])}")
    if _num(mem.get("swap_used_bytes")):
        parts.append(f"swap {fmt_bytes(mem['swap_used_bytes'])}")
    for g in mem.get("gpus") or []:
        if _num(g.get("mem_used_bytes")) is not None:
            parts.append(
                f"GPU {g['gpu']} {fmt_bytes(g['mem_used_bytes'])} of {fmt_bytes(_num(g.get('mem_total_bytes')))}"
            )
    return ", ".join(parts)


def _clock(t: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if _num(t) else "--:--:--"


def text(r) -> str:
    s = r.summary
    out = [
        f"tmon report · run {r.run_id} ({s.get('name', '')}) · {s.get('framework', '')}",
        f"health: {r.health.upper()}",
    ]
    out += _headline(r)
    if r.recommendations:
        out += ["", "Recommendations"]
        for i, rec in enumerate(r.recommendations, 1):
            out.append(f"{i:2d}. [{rec.severity}] {rec.title}: {rec.action}")
            if rec.config_path:
                change = _change(rec)
                out.append(f"      setting: {rec.config_path}" + (f"   {change}" if change else ""))
            out.append(f"      impact: {rec.impact}")
    if r.findings:
        out += ["", "Findings"]
        for f in r.findings:
            sure = getattr(f, "confidence", None)
            out.append(
                f" - [{f.severity}] {f.title}: {f.detail}"
                + (f" (confidence {sure:.2f})" if sure is not None else "")
            )
    if r.log_errors:
        n = len(r.log_errors)
        out += ["", f"Log errors and warnings ({n})"]
        for e in r.log_errors[:_MAX_LOG_LINES]:
            first = (e.get("message") or "").strip().splitlines()
            count = f" ×{e['count']}" if e.get("count", 1) > 1 else ""
            note = _memory_note(e.get("memory"))
            step = f" step {e['step']}" if e.get("step") is not None else ""
            out.append(
                f" - {_clock(e.get('wall_time'))}{step} [{e.get('level')} {e.get('category')}]{count} "
                f"{first[0][:200] if first else ''}" + (f"  ({note})" if note else "")
            )
        if n > _MAX_LOG_LINES:
            out.append(f"   ... {n - _MAX_LOG_LINES} more (report.log_errors)")
    notices = getattr(r, "library_notices", None) or []
    if notices:
        n = sum(e.get("count", 1) for e in notices)
        out += [
            "",
            f"Library notices ({n}): deprecations and future changes inside installed packages, not problems "
            "of this run",
        ]
        for e in notices[:_MAX_LOG_LINES]:
            first = (e.get("message") or "").strip().splitlines()
            count = f" ×{e['count']}" if e.get("count", 1) > 1 else ""
            out.append(f" -{count} {first[0][:200] if first else ''}")
        if len(notices) > _MAX_LOG_LINES:
            out.append(f"   ... {len(notices) - _MAX_LOG_LINES} more (report.library_notices)")
    if not r.findings and not r.recommendations:
        out += ["", "Nothing to report: no problem found in what was recorded."]
    return "\n".join(out)


def _esc(x: Any) -> str:
    return _html.escape(str(x), quote=True)


def _pill(severity: str) -> str:
    color = _COLORS.get(severity, "#555")
    return (
        f'<span style="background:{color};color:#fff;border-radius:3px;padding:0 6px;font-size:0.8em;'
        f'font-weight:600;text-transform:uppercase">{_esc(severity)}</span>'
    )


def html(r) -> str:
    s = r.summary
    color = _COLORS.get(r.health, "#555")
    parts = [
        f'<div class="tmon-report" style="font-family:system-ui,sans-serif;font-size:13px;line-height:1.45;'
        f'border:1px solid #ddd;border-left:6px solid {color};border-radius:4px;padding:10px 14px;max-width:980px">'
    ]
    parts.append(
        f'<div style="font-size:15px"><b>tmon report</b> · {_esc(s.get("name", r.run_id))} '
        f'<span style="color:#777">({_esc(r.run_id)}, {_esc(s.get("framework", ""))})</span> '
        f'<span style="background:{color};color:#fff;border-radius:3px;padding:1px 8px;font-weight:700;'
        f'margin-left:6px">{_esc(r.health.upper())}</span></div>'
    )
    parts.append(
        '<div style="color:#333;margin:4px 0 8px 0">' + "<br>".join(_esc(x) for x in _headline(r)) + "</div>"
    )
    if r.recommendations:
        parts.append(
            '<div style="font-weight:600;margin-top:6px">Recommendations</div><ol style="margin:4px 0 8px 0;'
            'padding-left:22px">'
        )
        for rec in r.recommendations:
            change = _change(rec)
            parts.append(
                f'<li style="margin-bottom:5px">{_pill(rec.severity)} <b>{_esc(rec.title)}</b><br>'
                + (
                    f'<code style="background:#f4f4f4;padding:1px 4px">{_esc(rec.code or rec.config_path)}</code>'
                    if rec.code or rec.config_path
                    else _esc(rec.action)
                )
                + (f' <span style="color:#555">{_esc(change)}</span>' if change else "")
                + f'<br><span style="color:#555">{_esc(rec.impact)}</span></li>'
            )
        parts.append("</ol>")
    if r.findings:
        parts.append(
            '<details open><summary style="font-weight:600;cursor:pointer">Findings '
            f'({len(r.findings)})</summary><ul style="margin:4px 0 8px 0;padding-left:20px">'
        )
        for f in r.findings:
            parts.append(f"<li>{_pill(f.severity)} <b>{_esc(f.title)}</b>: {_esc(f.detail)}</li>")
        parts.append("</ul></details>")
    if r.log_errors:
        parts.append(
            f'<details><summary style="font-weight:600;cursor:pointer">Log errors and warnings '
            f'({len(r.log_errors)})</summary><table style="border-collapse:collapse;font-size:12px">'
            '<tr style="text-align:left"><th>time</th><th>step</th><th>level</th><th>category</th>'
            "<th>message</th><th>memory then</th></tr>"
        )
        for e in r.log_errors[:100]:
            first = (e.get("message") or "").strip().splitlines()
            count = f" ×{e['count']}" if e.get("count", 1) > 1 else ""
            parts.append(
                f'<tr style="border-top:1px solid #eee;vertical-align:top"><td>{_clock(e.get("wall_time"))}</td>'
                f"<td>{_esc(e.get('step') if e.get('step') is not None else '')}</td>"
                f"<td>{_esc(e.get('level'))}</td><td>{_esc(e.get('category'))}{count}</td>"
                f"<td><code>{_esc(first[0][:300] if first else '')}</code></td>"
                f"<td>{_esc(_memory_note(e.get('memory')))}</td></tr>"
            )
        parts.append("</table></details>")
    notices = getattr(r, "library_notices", None) or []
    if notices:
        parts.append(
            f'<details><summary style="color:#555;cursor:pointer">Library notices '
            f"({sum(e.get('count', 1) for e in notices)}): deprecations inside installed packages, not "
            'problems of this run</summary><ul style="margin:4px 0 8px 0;padding-left:20px;font-size:12px">'
        )
        for e in notices[:100]:
            first = (e.get("message") or "").strip().splitlines()
            count = f" ×{e['count']}" if e.get("count", 1) > 1 else ""
            parts.append(f"<li><code>{_esc(first[0][:300] if first else '')}</code>{count}</li>")
        parts.append("</ul></details>")
    if not r.findings and not r.recommendations:
        parts.append('<div style="color:#2e7d32">No problem found in what was recorded.</div>')
    parts.append("</div>")
    return "".join(parts)
