"""The Monitor's header: run name, status badge, steps, epoch, elapsed, throughput, ETA, and the run's
alerts as they happen.

Alerts: per run, the one a person should read first (the most severe, the latest of those) in its
level's colour with the rule's evidence, a "show step N" button that zooms the Metrics tab's charts
around the step it names, and "+K more", which opens the list of the others. The alerts are those the
run recorded (its live rules, ``tmon watch``: ``Run.alerts()``) and those the Monitor raises from
what it reads (a NaN it drew, a rejected request); one said by both is shown once, the rule's.

Steps: the header says the step index of the last point (as the charts and the latest-values table
number it) and how many steps are done, which is the figure the report and ``tmon show`` print:
``step 447 · 448 of 448 steps`` for a 0-based framework, ``step 448 · 448 of 448 steps`` for HF.
"""

from __future__ import annotations

import time

import ipywidgets as widgets

from tmon_core.store.run import steps_done

from . import _format as f
from ._alerts import Alerts

#: the others listed under "+K more", newest first, each with its own "show step"
MAX_LISTED = 20


def _when(a: dict) -> str:
    step = f"step {a['step']:,}" if a.get("step") is not None else ""
    return " · ".join(x for x in (step, f.clock(a.get("time"))) if x)


def alert_html(a: dict, who: str = "") -> str:
    """One alert in its level's colour: level, title and evidence, where and when."""
    color = f.LEVEL_COLORS.get(a["level"], f.LEVEL_COLORS["warning"])
    title = f"<b>{f.esc(a['title'])}</b>: " if a.get("title") and a["title"] != a["message"] else ""
    return (
        f'<span class="tmon-alert tmon-alert-{f.esc(a["level"])}" style="border-left:4px solid {color};'
        f'background:{color}14;padding:1px 8px;display:inline-block">'
        f'<span style="color:{color};font-weight:600;text-transform:uppercase;font-size:0.8em">'
        f"{f.esc(a['level'])}</span> {who}{title}{f.esc(a['message'])}"
        f' <span style="color:#777;font-size:0.85em">{_when(a)}</span></span>'
    )


class AlertRow:
    """One run's alerts: the headline, "show step N", "+K more" and the list it opens."""

    def __init__(self, header, run_id: str):
        self.header, self.run_id = header, run_id
        self.step: int | None = None
        self._key = None
        self._others = 0
        lay = widgets.Layout
        self.chip = widgets.HTML()
        self.show = widgets.Button(
            description="show step",
            icon="crosshairs",
            tooltip="zoom the Metrics tab's charts around this step",
            layout=lay(width="auto"),
        )
        self.more = widgets.ToggleButton(
            value=False, tooltip="the run's other alerts", layout=lay(width="auto", display="none")
        )
        self.listing = widgets.VBox(layout=lay(display="none", margin="2px 0 4px 12px"))
        self.show.add_class("tmon-show-step")
        self.more.add_class("tmon-more-alerts")
        self.show.on_click(lambda _b: self._show(self.step))
        self.more.observe(self._toggle, names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox(
                    [self.chip, self.show, self.more], layout=lay(align_items="center", flex_flow="row wrap")
                ),
                self.listing,
            ]
        )
        self.widget.add_class("tmon-alerts")

    def _show(self, step) -> None:
        if step is not None:
            self.header.mon.show_step(step, self.run_id)

    @property
    def listed_html(self) -> str:
        """The alerts under "+K more" as HTML (what the list shows, without its buttons)."""
        return "".join(
            r.children[0].value for r in self.listing.children if isinstance(r, widgets.HBox)
        ) + "".join(r.value for r in self.listing.children if isinstance(r, widgets.HTML))

    def _listed(self, a: dict):
        row = [widgets.HTML(alert_html(a))]
        if a.get("step") is not None:
            b = widgets.Button(
                description=f"show step {a['step']:,}",
                icon="crosshairs",
                tooltip="zoom the Metrics tab's charts around this step",
                layout=widgets.Layout(width="auto"),
            )
            b.add_class("tmon-show-step")
            b.on_click(lambda _b, step=a["step"]: self._show(step))
            row.append(b)
        return widgets.HBox(row, layout=widgets.Layout(align_items="center"))

    def _toggle(self, change) -> None:
        self.listing.layout.display = "" if change["new"] else "none"
        self._label()

    def _label(self) -> None:
        n = self._others
        self.more.description = (f"hide the other {n}" if self.more.value else f"+{n} more") if n else ""

    def update(self, items: list[dict], who: str) -> None:
        key = (who, tuple((a["kind"], a["message"], a["level"], a["step"], a["time"]) for a in items))
        if key == self._key:
            return
        self._key = key
        head = Alerts.headline(items)
        others = [a for a in items if a is not head]
        self._others = len(others)
        self.chip.value = alert_html(head, who)
        self.step = head.get("step")
        self.show.description = f"show step {self.step:,}" if self.step is not None else "show step"
        self.show.layout.display = "none" if self.step is None else ""
        self.more.layout.display = "" if others else "none"
        self._label()
        listed = sorted(others, key=lambda a: -a["time"])[:MAX_LISTED]
        more = len(others) - len(listed)
        old = self.listing.children
        rows = [self._listed(a) for a in listed]
        if more > 0:
            rows.append(widgets.HTML(f'<span style="color:#777">and {more} earlier (Events tab)</span>'))
        self.listing.children = rows
        for w in old:  # the widgets of the list before: gone from the page, closed
            for c in getattr(w, "children", ()):
                c.close()
            w.close()


class Header:
    def __init__(self, monitor):
        self.mon = monitor
        self.html = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.alerts = widgets.VBox(layout=widgets.Layout(width="100%"))
        self.rows: dict[str, AlertRow] = {}
        self.widget = widgets.VBox([self.html, self.alerts], layout=widgets.Layout(width="100%"))
        self.widget.add_class("tmon-head")

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
                rows.append(
                    {
                        "": self._swatch(rs),
                        "run": f"<b>{f.esc(rs.name)}</b> <code>{rs.id[:8]}</code>",
                        "status": self._badge(rs),
                        "progress": self._progress(rs, now),
                    }
                )
            parts.append(
                f.table(rows, ["", "run", "status", "progress"], raw=("", "run", "status", "progress"))
            )
        if busy_note:
            parts.append(f'<div style="margin-top:4px;color:#b36b00">{busy_note}</div>')
        self.html.value = '<div class="tmon-header" style="line-height:1.6">' + "".join(parts) + "</div>"
        self._alerts()

    def static_html(self) -> str:
        """The header as plain HTML (the snapshot shown where no widget front end runs): the headline
        alert of each run after the title and progress."""
        chips = "".join(
            f'<div style="margin-top:2px">{row.chip.value}</div>'
            for row in self.rows.values()
            if row.widget in self.alerts.children
        )
        return self.html.value + chips

    def _alerts(self) -> None:
        mon = self.mon
        compare = len(mon.runs) > 1
        shown = []
        for rs in mon.runs:
            items = mon.alerts.shown(rs.id)
            if not items:
                continue
            row = self.rows.get(rs.id)
            if row is None:
                row = self.rows[rs.id] = AlertRow(self, rs.id)
            row.update(items, f"{self._swatch(rs)} <b>{f.esc(rs.name)}</b>: " if compare else "")
            shown.append(row.widget)
        if list(self.alerts.children) != shown:
            self.alerts.children = shown

    @staticmethod
    def _swatch(rs) -> str:
        return (
            f'<span style="display:inline-block;width:12px;height:12px;background:{rs.color};'
            'vertical-align:middle"></span>'
        )

    def badge_status(self, rs) -> str:
        """What the run's badge says: its status, or what its alerts say went wrong (NaN, OOM, diverged)."""
        return f.health_status(rs.status, {a["kind"] for a in self.mon.alerts.for_run(rs.id)})

    def _badge(self, rs) -> str:
        return f.status_badge(self.badge_status(rs))

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
            done = steps_done(last, rs.info.get("framework"))
            step = f"step <b>{last:,}</b> · <b>{done:,}</b>" + (f" of {total:,}" if total else "") + " steps"
            if total:
                pct = max(0.0, min(1.0, done / total))
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
