"""The Monitor's header: run name, status badge, step/epoch, elapsed, throughput, ETA, alerts."""

from __future__ import annotations

import time

import ipywidgets as widgets

from . import _format as f


class Header:
    def __init__(self, monitor):
        self.mon = monitor
        self.html = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.widget = self.html

    def render(self, busy_note: str | None = None) -> None:
        mon = self.mon
        now = time.time()
        if not mon.runs:
            self.html.value = (
                f'<div class="tmon-header">{f.status_badge("waiting")} {f.esc(mon.waiting_for)}</div>'
            )
            return
        parts = []
        if len(mon.runs) == 1:
            rs = mon.runs[0]
            parts.append(self._title(rs))
            parts.append(f'<div style="margin-top:2px">{self._progress(rs, now)}</div>')
        else:
            rows = []
            for rs in mon.runs:
                swatch = (
                    f'<span style="display:inline-block;width:12px;height:12px;background:{rs.color}"></span>'
                )
                rows.append(
                    {
                        "": swatch,
                        "run": f"<b>{f.esc(rs.name)}</b> <code>{rs.id[:8]}</code>",
                        "status": self._badge(rs),
                        "progress": self._progress(rs, now),
                    }
                )
            parts.append(
                f.table(rows, ["", "run", "status", "progress"], raw=("", "run", "status", "progress"))
            )
        alerts = mon.alerts.items[-6:]
        if alerts:
            chips = []
            for a in reversed(alerts):
                color = "#d62728" if a["level"] == "critical" else "#e69500"
                who = "" if len(mon.runs) == 1 else f"{f.esc(mon.run_name(a['run_id']))}: "
                chips.append(
                    f'<span class="tmon-alert" style="border:1px solid {color};color:{color};border-radius:4px;'
                    f'padding:0 6px;margin-right:4px;display:inline-block">{who}{f.esc(a["message"])}</span>'
                )
            more = len(mon.alerts.items) - len(alerts)
            tail = f' <span style="color:#777">+{more} earlier (Events tab)</span>' if more > 0 else ""
            parts.append(f'<div style="margin-top:4px">{"".join(chips)}{tail}</div>')
        if busy_note:
            parts.append(f'<div style="margin-top:4px;color:#b36b00">{busy_note}</div>')
        self.html.value = '<div class="tmon-header" style="line-height:1.6">' + "".join(parts) + "</div>"

    def _badge(self, rs) -> str:
        return f.status_badge(f.health_status(rs.status, {a["kind"] for a in self.mon.alerts.for_run(rs.id)}))

    def _title(self, rs) -> str:
        info = rs.info
        bits = [f"<code>{rs.id}</code>"]
        if info.get("framework"):
            bits.append(f.esc(info["framework"]))
        if info.get("host"):
            bits.append(f.esc(f"{info['host']} pid {info.get('pid')}"))
        return (
            f'<span style="font-size:1.15em;font-weight:600">{f.esc(rs.name)}</span> {self._badge(rs)} '
            f'<span style="color:#777;font-size:0.85em">{" · ".join(bits)}</span>'
        )

    @staticmethod
    def _progress(rs, now: float) -> str:
        bits = []
        last, total = rs.last_step, rs.total_steps
        if last is not None:
            step = f"step <b>{last:,}</b>" + (f" / {total:,}" if total else "")
            if total:
                pct = max(0.0, min(1.0, last / total))
                step += (
                    f' <span style="display:inline-block;width:80px;height:8px;background:#eee;'
                    f'vertical-align:middle"><span style="display:block;height:8px;width:{pct * 100:.0f}%;'
                    f'background:{rs.color}"></span></span>'
                )
            bits.append(step)
        else:
            bits.append("no steps yet")
        if rs.epoch is not None:
            bits.append(f"epoch <b>{f.number(rs.epoch, 3)}</b>")
        bits.append(f"elapsed <b>{f.duration(rs.elapsed(now))}</b>")
        if rs.steps_per_s:
            bits.append(f"<b>{f.human(rs.steps_per_s)}</b> steps/s")
            sps = rs.samples_per_s()
            if sps:
                bits.append(f"<b>{f.human(sps)}</b> samples/s")
        eta = rs.eta()
        if eta is not None:
            bits.append(f"ETA <b>{f.duration(eta)}</b>")
        return " · ".join(bits)
