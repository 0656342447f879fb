"""The Events tab: the run's events (newest first), its captured warnings and errors, and the alerts."""

from __future__ import annotations

import ipywidgets as widgets

from tmon_core import events as ev

from . import _format as f

FILTERS = [
    ("all events", None),
    ("control", (ev.PARAM_CHANGE, ev.REQUEST_REJECTED, ev.ROLLBACK, ev.STOPPED)),
    ("checkpoints", (ev.CHECKPOINT,)),
    ("problems", (ev.EXCEPTION, ev.OOM, ev.INTERRUPT, ev.STORE_GAP, ev.SAMPLER, ev.REQUEST_REJECTED)),
    (
        "epochs and validation",
        (ev.TRAIN_START, ev.TRAIN_END, ev.EPOCH_START, ev.EPOCH_END, ev.VALIDATION_START, ev.VALIDATION_END),
    ),
]
SHOWN = 200


class EventsTab:
    def __init__(self, monitor):
        self.mon = monitor
        self.filter = widgets.Dropdown(options=FILTERS, index=0, layout=widgets.Layout(width="220px"))
        self.filter.observe(lambda _c: self.mon.refresh_tab(self), names="value")
        self.alerts = widgets.HTML()
        self.events = widgets.HTML()
        self.logs = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HTML("<b>alerts</b>"),
                self.alerts,
                widgets.HBox([widgets.HTML("<b>events</b>"), self.filter]),
                self.events,
                widgets.HTML("<b>warnings and errors captured from the training</b>"),
                self.logs,
            ]
        )

    def refresh(self) -> None:
        mon = self.mon
        if not mon.runs:
            return
        rs = mon.runs[0]
        self.alerts.value = f.table(
            [
                {
                    "at": f.clock(a["time"]),
                    "run": mon.run_name(a["run_id"]),
                    "level": a["level"],
                    "alert": a["message"],
                }
                for a in reversed(mon.alerts.items)
            ],
            ["at", "run", "level", "alert"],
            empty="no alerts",
        )
        events = mon.events
        rows = []
        if events is not None and len(events):
            want = self.filter.value
            part = events if want is None else events[events.type.isin(list(want))]
            for r in part.tail(SHOWN).iloc[::-1].itertuples(index=False):
                rows.append(
                    {
                        "at": f.clock(r.wall_time),
                        "step": None if str(r.step) == "<NA>" else int(r.step),
                        "type": r.type,
                        "message": f.text(r.message)[:300],
                    }
                )
        self.events.value = f.table(rows, ["at", "step", "type", "message"], empty="no events")
        try:
            logs = rs.run.logs()
        except Exception:
            logs = None
        rows = []
        if logs is not None and len(logs):
            for r in logs.tail(SHOWN).iloc[::-1].itertuples(index=False):
                rows.append(
                    {
                        "at": f.clock(r.wall_time),
                        "step": None if str(r.step) == "<NA>" else int(r.step),
                        "level": r.level,
                        "from": f.text(r.logger) or f.text(r.source),
                        "message": f.text(r.message)[:500],
                    }
                )
        self.logs.value = f.table(rows, ["at", "step", "level", "from", "message"], empty="nothing captured")
