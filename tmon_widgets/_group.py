"""``Monitor(group=...)``: the trials of a group compared, joined by trials that start later, with a
table of their settings (the sweep table).

The comparison itself is the Monitor's own (``runs=[...]``: overlaid charts, the first run steered);
this module resolves the group into that list, in the order the trials started (so a trial keeps its
colour), looks for new trials at each slow refresh, and keeps the view live a while after every
trial shown has ended (``LINGER_S``): a sweep that runs one trial at a time starts the next a moment
after the last one ended.
"""

from __future__ import annotations

import time

import ipywidgets as widgets

from tmon_core.analysis.group_report import DEFAULT_METRICS, settings_of
from tmon_core.run_groups import check_group

from . import _format as f

#: seconds the view stays live after every trial shown has ended, waiting for the next trial
LINGER_S = 120.0
#: the most trials the settings table lists (the charts take every trial)
TABLE_ROWS = 50


class GroupView:
    def __init__(self, monitor, group: str):
        check_group(group)
        self.monitor = monitor
        self.group = group
        self.widget = widgets.HTML()
        self._ended_at: float | None = None  # when every trial shown was first seen ended

    def trial_ids(self) -> list[str]:
        """The group's runs, in the order they started."""
        return self.monitor.store.runs(group=self.group).id.tolist()[::-1]

    def first(self) -> str | None:
        ids = self.trial_ids()
        return ids[0] if ids else None

    def pick_up(self) -> None:
        """Add the trials that started since the last look (the Monitor's lock is held)."""
        shown = {rs.id for rs in self.monitor.runs}
        new = [i for i in self.trial_ids() if i not in shown]
        if new and self.monitor.runs:
            self.monitor._attach(new)
            self._ended_at = None
        self.render()

    def ended(self, all_final: bool) -> bool:
        """Every trial shown has ended, and no new one came for ``LINGER_S`` seconds."""
        if not all_final:
            self._ended_at = None
            return False
        now = time.monotonic()
        if self._ended_at is None:
            self._ended_at = now
        return now - self._ended_at >= LINGER_S

    def render(self) -> None:
        """The settings table: a row per trial, a column per setting that varied between them, and the
        latest value of the metric the group report would judge by (``val_loss``, ``eval_loss``, ``loss``)."""
        runs = self.monitor.runs
        if not runs:
            self.widget.value = f.note(f"group {f.esc(self.group)}: no trial yet", "info")
            return
        settings = {rs.id: settings_of(rs.config) for rs in runs}
        names: list[str] = []
        for s in settings.values():
            names += [k for k in s if k not in names]
        varied = [k for k in names if len({repr(s.get(k)) for s in settings.values()}) > 1]
        # the latest value of what the group report judges by (as the slow refresh last read it)
        latest = self.monitor.latest
        metric = next((m for m in DEFAULT_METRICS if any(m in latest.get(rs.id, {}) for rs in runs)), None)
        rows = []
        for rs in runs[:TABLE_ROWS]:
            s = settings[rs.id]
            row = {
                "trial": f'<span style="color:{rs.color}">●</span> {f.esc(rs.name)}',
                "status": rs.status,
                "steps": "-" if rs.last_step is None else str(rs.last_step),
            }
            row.update(
                {k: "-" if s.get(k) is None else s[k] if isinstance(s[k], str) else s[k] for k in varied}
            )
            if metric is not None:
                got = latest.get(rs.id, {}).get(metric)
                row[metric] = "-" if got is None else got[1]
            rows.append(row)
        more = f"<div>and {len(runs) - TABLE_ROWS} more trials</div>" if len(runs) > TABLE_ROWS else ""
        self.widget.value = (
            f"<div class='tmon-group'><b>group {f.esc(self.group)}</b>: {len(runs)} trials"
            f"{f.table(rows, ['trial', 'status', 'steps', *varied, *([metric] if metric else [])], raw=('trial',))}{more}</div>"
        )
