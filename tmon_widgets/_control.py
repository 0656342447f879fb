"""What the control tabs share: may this run be steered from here, now? and the requests sent.

Every control in the Monitor creates a real control request (``Run.set_param``, ``request_checkpoint``,
``rollback``, ``stop``... with ``source="widget"``): the training applies it at its next step, or
rejects it with the reason. The widget shows each outcome as it is recorded, never a success it has
not seen.
"""

from __future__ import annotations

import time

from tmon_core.store.checkpoints import saved_after_step

from . import _format as f

LEVELS = ("off", "view", "manage", "admin")


def steer_elsewhere(run_id: str, store_url: str) -> str:
    """How to steer the run without this widget (HTML)."""
    short = run_id[:8]
    return (
        "Steer it now from elsewhere: in a terminal "
        f"<code>tmon set {short} lr=1e-4 --store {f.esc(store_url)}</code> (also <code>tmon checkpoint</code>, "
        "<code>tmon stop</code>); from another notebook, or from a console on this kernel's subshell "
        "(JupyterLab: right-click the notebook, <i>New Console for Notebook</i>; needs ipykernel 7): "
        f"<code>tmon_core.open_store({store_url!r}).run({run_id!r}).set_param('lr', 1e-4)</code>. "
        "Next time train with <code>tmon_widgets.fit_in_background(trainer.fit, model, dm)</code>: the cell "
        "returns at once and these controls act during training."
    )


class Sent:
    """One request sent from the widget, followed until it is applied or rejected."""

    def __init__(self, req, label: str, kind: str, framework: str | None = None):
        self.req, self.label, self.kind = req, label, kind
        self.framework = framework
        self.status = "pending"
        self.info: dict = {}
        self.sent_at = time.time()

    def poll(self) -> bool:
        """Re-read the request; True when its status changed."""
        if self.status != "pending":
            return False
        self.info = self.req.info()
        if self.info["status"] != self.status:
            self.status = self.info["status"]
            return True
        return False

    def html(self) -> str:
        head = f"request #{self.req.id} ({f.esc(self.label)})"
        if self.status == "pending":
            return f.note(f"{head}: <b>pending</b>, the training applies it at its next step", "info")
        if self.status == "applied":
            i = self.info
            change = ""
            new = i.get("new_value")
            if self.kind == "checkpoint" and isinstance(new, dict) and new.get("path"):
                # applied at the boundary before step N: it holds the steps before, as its table row says
                after = saved_after_step(i.get("applied_step"), self.framework, "manual")
                where = f" after step {after}" if after is not None else ""
                change = f": saved{where} to <code>{f.esc(str(new['path']))}</code>"
            elif new not in (None, {}, []):
                change = f": {f.esc(f.number(i.get('old_value')))} → {f.esc(f.number(i.get('new_value')))}"
            return f.note(f"{head}: <b>applied at step {i.get('applied_step')}</b>{change}", "ok")
        return f.note(f"{head}: <b>rejected</b>: {f.esc(str(self.info.get('reason')))}", "error")


class Control:
    """The steering state of the Monitor's primary run."""

    def __init__(self, monitor):
        self.mon = monitor
        self.sent: list[Sent] = []

    @property
    def rs(self):
        return self.mon.runs[0] if self.mon.runs else None

    def allowed(self, need: str = "manage") -> bool:
        rs = self.rs
        return (
            rs is not None and rs.running and LEVELS.index(rs.level) >= LEVELS.index(need)
            if rs is not None and rs.level in LEVELS
            else False
        )

    def why_not(self, need: str = "manage") -> str | None:
        """Why a control that needs level ``need`` cannot act now (a button's tooltip), None when it can."""
        rs = self.rs
        if rs is None:
            return "no run yet"
        if not rs.running:
            return f"run ended: {rs.status}"
        if rs.level not in LEVELS or LEVELS.index(rs.level) < LEVELS.index(need):
            return f"this run's control level is {rs.level}: this needs {need}"
        return None

    def gate_button(self, button, need: str, tooltip: str, style: str = "", ready: bool = True) -> None:
        """Enable ``button`` where the run allows ``need``; else disable it, drop its colour (a disabled
        button in the primary or danger colour still looks like one to press) and say why in its tooltip."""
        why = self.why_not(need)
        button.disabled = why is not None or not ready
        button.button_style = style if why is None else ""
        button.tooltip = tooltip if why is None else why

    def banner(self, need: str = "manage") -> str:
        """Why the controls would not act, or that they act; HTML."""
        rs = self.rs
        if rs is None:
            return f.note("no run yet")
        url = self.mon.store.url
        if not rs.running:
            return f.note(
                f"run {f.esc(rs.name)} is <b>{f.esc(rs.status)}</b>: there is no training to steer."
            )
        level = rs.level
        if level not in LEVELS or LEVELS.index(level) < LEVELS.index(need):
            return f.note(
                f"this run's control level is <b>{f.esc(level)}</b>; these controls need "
                f"<b>{need}</b> (<code>TMonCallback(control={need!r})</code>). They are off.",
                "warn",
            )
        if self.mon.busy:
            return f.note(
                "<b>This kernel is busy running a cell</b> (the training, if it was started in that cell). "
                "Jupyter queues clicks and slider moves until the cell ends: a request made here now is sent "
                "only then, when this run may be over, and would be rejected. " + steer_elsewhere(rs.id, url),
                "warn",
            )
        return ""

    def submit(self, kind: str, label: str, make) -> Sent | None:
        """Send a request (``make(run)`` returns a ``Request``); the outcome shows as it is recorded."""
        rs = self.rs
        if rs is None:
            return None
        req = make(rs.run)
        sent = Sent(req, label, kind, rs.info.get("framework"))
        sent.poll()
        self.sent.append(sent)
        self.mon.wake()
        return sent

    def poll(self) -> bool:
        changed = False
        for s in self.sent:
            if s.status == "pending":
                changed |= s.poll()
        return changed

    @property
    def pending(self) -> bool:
        return any(s.status == "pending" for s in self.sent)
