"""The Parameters tab: the run's steerable parameters with their current values read back from the
run, bounded inputs and an apply button each; presets; the schedule with what is done and what is to
come; the history of requests with their outcome and the impact of each change; stop the run."""

from __future__ import annotations

import math

import ipywidgets as widgets

from tmon_core.events import PARAM_CHANGE

from . import _format as f

#: the metric a built-in parameter's current value is read from
CURRENT_KEY = {"lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay"}
MODES = [("scale: rescale the schedule", "scale"), ("pin: hold the value", "pin"), ("set: write once", "set")]
IMPACT_WINDOW = 50
STOP_TIP = "stop the training cleanly at its next step (control level admin; click twice)"
PRESET_TIP = "ask the training to apply the preset's values at its next step"


def optimizer_params(config: dict) -> set[str] | None:
    """The built-in parameters the run's optimizers have (SGD: no betas, no eps), from the optimizer
    summary the adapters record; None when the run did not record one."""
    opts = config.get("optimizers")
    if not isinstance(opts, list) or not opts:
        return None
    out: set[str] = set()
    for o in opts:
        if not isinstance(o, dict):
            continue
        names = set(o.get("defaults") or {}) | set(
            o.get("config") or {}
        )  # torch defaults; Keras get_config()
        for name, aliases in _OPTIMIZER_NAMES.items():
            if names & aliases:
                out.add(name)
    return out or None


_OPTIMIZER_NAMES = {
    "lr": {"lr", "learning_rate"},
    "momentum": {"momentum", "betas", "beta_1"},
    "weight_decay": {"weight_decay"},
    "betas": {"betas", "beta_1"},
    "eps": {"eps", "epsilon"},
}


def _input(name: str, spec: dict | None):
    """A bounded input for parameter ``name`` (``spec``: a custom Param's bounds and type)."""
    lay = widgets.Layout(width="330px")
    style = {"description_width": "0px"}
    if name == "lr":
        return widgets.FloatLogSlider(
            value=1e-3,
            base=10,
            min=-7,
            max=1,
            step=0.05,
            readout_format=".3g",
            continuous_update=False,
            layout=lay,
            style=style,
        )
    if name in ("weight_decay", "momentum"):
        return widgets.BoundedFloatText(
            value=0.0,
            min=0.0,
            max=0.999999,
            step=0.01 if name == "momentum" else 1e-4,
            layout=widgets.Layout(width="150px"),
        )
    if name == "eps":
        return widgets.BoundedFloatText(
            value=1e-8, min=1e-12, max=1.0, step=1e-9, layout=widgets.Layout(width="150px")
        )
    if name == "betas":
        return widgets.Text(
            value="0.9, 0.999", placeholder="beta1, beta2", layout=widgets.Layout(width="150px")
        )
    spec = spec or {}
    bounds, typ = spec.get("bounds"), spec.get("type", "float")
    if typ in ("float", "int") and bounds:
        cls = widgets.BoundedIntText if typ == "int" else widgets.BoundedFloatText
        lo, hi = bounds
        return cls(value=lo, min=lo, max=hi, layout=widgets.Layout(width="150px"))
    if typ == "int":
        return widgets.IntText(layout=widgets.Layout(width="150px"))
    if typ == "float":
        return widgets.FloatText(layout=widgets.Layout(width="150px"))
    if typ == "bool":
        return widgets.Checkbox(indent=False)
    return widgets.Text(layout=widgets.Layout(width="150px"))


def _value(name: str, w):
    if name == "betas":
        parts = [p.strip() for p in str(w.value).split(",") if p.strip()]
        return [float(p) for p in parts]
    return w.value


class _ParamRow:
    def __init__(self, tab, name: str, spec: dict | None):
        self.tab, self.name = tab, name
        self.current = widgets.HTML(layout=widgets.Layout(width="150px"))
        self.input = _input(name, spec)
        self.apply = widgets.Button(
            description=f"apply {name}",
            icon="check",
            layout=widgets.Layout(width="170px"),
            tooltip=f"ask the training to set {name} at its next step",
        )
        self.dirty = False
        self.known = False  # a current value was read back: until then the input holds a placeholder
        self.custom = spec is not None
        self.input.observe(self._edited, names="value")
        self.apply.on_click(lambda _b: tab.apply(self))
        self.widget = widgets.HBox(
            [
                widgets.HTML(f"<b>{f.esc(name)}</b>", layout=widgets.Layout(width="120px")),
                self.current,
                self.input,
                self.apply,
            ],
            layout=widgets.Layout(align_items="center"),
        )
        self.widget.add_class(f"tmon-param-{name}")

    def _edited(self, _change) -> None:
        if not self.tab.mon.updating:
            self.dirty = True
            if self.custom and not self.known:
                self.tab._buttons()

    def show(self, value) -> None:
        self.current.value = "now <b>" + (f.esc(f.number(value)) if value is not None else "-") + "</b>"
        if value is None:
            return
        self.known = True
        if self.dirty:
            return
        with self.tab.mon.quiet():
            try:
                if self.name == "betas" and isinstance(value, (list, tuple)):
                    self.input.value = ", ".join(f"{v:g}" for v in value)
                elif isinstance(value, (int, float)) and math.isfinite(value):
                    if isinstance(self.input, widgets.FloatLogSlider) and value <= 0:
                        return
                    self.input.value = value
            except Exception:  # a value the input cannot hold (out of its bounds): leave the input as is
                pass


class ParametersTab:
    def __init__(self, monitor):
        self.mon = monitor
        self.ctl = monitor.control
        lay = widgets.Layout
        self.banner = widgets.HTML()
        self.mode = widgets.Dropdown(
            options=MODES,
            value="scale",
            description="mode",
            style={"description_width": "40px"},
            layout=lay(width="260px"),
        )
        self.rows: dict[str, _ParamRow] = {}
        self.rows_box = widgets.VBox()
        self.preset = widgets.Dropdown(options=[], layout=lay(width="260px"))
        self.preset_values = widgets.HTML()
        self.apply_preset = widgets.Button(
            description="apply preset", icon="magic", tooltip=PRESET_TIP, layout=lay(width="130px")
        )
        self.apply_preset.on_click(lambda _b: self._preset())
        self.preset.observe(lambda _c: self._show_preset(), names="value")
        self.schedule = widgets.HTML()
        self.history = widgets.HTML()
        self.stop_reason = widgets.Text(placeholder="why (kept with the run)", layout=lay(width="260px"))
        self.stop = widgets.Button(
            description="stop run",
            icon="stop",
            button_style="danger",
            tooltip=STOP_TIP,
            layout=lay(width="120px"),
        )
        self.stop.on_click(lambda _b: self._stop())
        self._armed = False
        self.status = widgets.HTML()
        self._impacts: dict[int, dict] = {}
        self._spec_key = None
        self.presets_box = widgets.VBox(
            [
                widgets.HTML("<b>presets</b>"),
                widgets.HBox([self.preset, self.apply_preset]),
                self.preset_values,
            ]
        )
        self.widget = widgets.VBox(
            [
                self.banner,
                widgets.HBox([widgets.HTML("<b>parameters</b>", layout=lay(width="120px")), self.mode]),
                self.rows_box,
                self.status,
                self.presets_box,
                widgets.HTML("<b>schedule</b>"),
                self.schedule,
                widgets.HTML("<b>requests</b>"),
                self.history,
                widgets.HTML("<b>stop</b>"),
                widgets.HBox([self.stop_reason, self.stop]),
            ]
        )

    # ------------------------------------------------------------------ refresh (monitor lock held)
    def refresh(self) -> None:
        rs = self.mon.runs[0] if self.mon.runs else None
        if rs is None:
            return
        self.gate()
        self.show_current()
        self._history(rs)
        mine = [s for s in self.ctl.sent if s.kind in ("set_param", "preset", "stop")]
        self.status.value = "".join(s.html() for s in mine[-3:])

    def show_current(self) -> None:
        """The current values and the schedule's progress, from what the Monitor read (no store read)."""
        rs = self.mon.runs[0] if self.mon.runs else None
        if rs is None:
            return
        latest = self.mon.latest.get(rs.id, {})
        applied = self._applied_values()
        for name, row in self.rows.items():
            key = CURRENT_KEY.get(name, name)
            if key not in latest and name in applied:  # a custom Param is not logged: its last applied value
                row.show(applied[name])
                continue
            if name == "betas":
                row.show(None if "momentum" not in latest else latest["momentum"][1])
                row.current.value = (
                    ("β1 now <b>" + f.esc(f.number(latest["momentum"][1])) + "</b>")
                    if "momentum" in latest
                    else "now <b>-</b>"
                )
                continue
            row.show(latest[key][1] if key in latest else None)
        self._schedule(rs)
        if any(r.known for r in self.rows.values()):
            self._buttons()  # a value just read back enables its apply

    def _applied_values(self) -> dict:
        """The last value each parameter was set to, from the run's param_change events."""
        ev = self.mon.events
        out: dict = {}
        if ev is None or not len(ev) or "data" not in ev:
            return out
        for data in ev.data[ev.type == PARAM_CHANGE]:
            new = data.get("new") if isinstance(data, dict) else None
            if isinstance(new, dict):
                out.update(new)
        return out

    def gate(self) -> None:
        """The rows the run describes, the banner, enabled buttons (no store read)."""
        rs = self.mon.runs[0] if self.mon.runs else None
        if rs is None:
            return
        ctl = rs.control
        self.banner.value = self.ctl.banner("manage")
        spec_key = (
            tuple(ctl.get("params") or ()),
            tuple(sorted((ctl.get("presets") or {}).items(), key=str)),
        )
        if spec_key != self._spec_key:
            self._spec_key = spec_key
            self._build(ctl)
        self._buttons()

    def _buttons(self) -> None:
        gate = self.ctl.gate_button
        for row in self.rows.values():
            # a built-in's input shows a placeholder until its value is read: applying it would set that;
            # a custom Param is not logged, so a value the user typed is enough
            ready = row.known or (row.custom and row.dirty)
            tip = (
                f"ask the training to set {row.name} at its next step"
                if ready
                else f"waiting for the run's current {row.name}"
                + (" (or type a value)" if row.custom else "")
            )
            gate(row.apply, "manage", tip, ready=ready)
        gate(self.apply_preset, "manage", PRESET_TIP, ready=bool(self.preset.options))
        gate(self.stop, "admin", STOP_TIP, "danger")

    def _build(self, ctl: dict) -> None:
        custom = ctl.get("custom_params") or {}
        has = optimizer_params(self.mon.runs[0].config)
        names = [n for n in ctl.get("params") or [] if n in custom or has is None or n in has]
        order = ["lr", "momentum", "weight_decay", "betas", "eps"]
        names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
        self.rows = {n: self.rows.get(n) or _ParamRow(self, n, custom.get(n)) for n in names}
        self.rows_box.children = [r.widget for r in self.rows.values()] or [
            widgets.HTML(f.note("this run describes no steerable parameters (its callback has no control)"))
        ]
        presets = ctl.get("presets") or {}
        with self.mon.quiet():
            self.preset.options = sorted(presets)
        self.presets_box.layout.display = "" if presets else "none"
        self._show_preset()

    def _show_preset(self) -> None:
        rs = self.mon.runs[0] if self.mon.runs else None
        presets = (rs.control.get("presets") if rs else None) or {}
        values = presets.get(self.preset.value) or {}
        self.preset_values.value = ", ".join(f"{f.esc(k)} = {f.esc(f.number(v))}" for k, v in values.items())

    def _schedule(self, rs) -> None:
        items = rs.control.get("schedule") or []
        last, epoch = rs.last_step, rs.epoch
        rows = []
        for it in items:
            if it.get("step") is not None:
                when = f"step {it['step']:,}"
                done = last is not None and last >= it["step"]
                todo = "" if done or last is None else f"in {it['step'] - last:,} steps"
            else:
                when = f"epoch {it.get('epoch')}"
                done = epoch is not None and epoch >= it.get("epoch", math.inf)
                todo = ""
            change = ", ".join(f"{k} → {f.number(v)}" for k, v in (it.get("params") or {}).items())
            rows.append(
                {
                    "when": when,
                    "change": change,
                    "ramp": f"{it['ramp']} steps" if it.get("ramp") else "",
                    "mode": it.get("mode"),
                    "status": "✓ done" if done else f"to come {todo}".strip(),
                }
            )
        self.schedule.value = f.table(
            rows,
            ["when", "change", "ramp", "mode", "status"],
            empty="no schedule (TMonCallback(schedule=[At(step=..., lr=...)]))",
        )

    def _history(self, rs) -> None:
        df = rs.run.requests()
        loss_key = self.mon.loss_key()
        rows = []
        for r in df.itertuples(index=False):
            payload = r.payload if isinstance(r.payload, dict) else {}
            what = {
                "set_param": lambda p: (
                    ", ".join(f"{k}={f.number(v)}" for k, v in (p.get("values") or {}).items())
                    + (f" ({p.get('mode')})" if p.get("mode") else "")
                ),
                "preset": lambda p: f"preset {p.get('name')}",
                "checkpoint": lambda p: (
                    "checkpoint" + (f": {p['description']}" if p.get("description") else "")
                ),
                "rollback": lambda p: f"roll back to #{p.get('checkpoint_id')}",
                "stop": lambda p: "stop" + (f": {p['reason']}" if p.get("reason") else ""),
            }.get(r.kind)
            text = what(payload) if what else r.kind
            step = None if str(r.applied_step) == "<NA>" else int(r.applied_step)
            if r.status == "applied":
                outcome = f'<span style="color:#2ca02c">applied at step {step}</span>'
            elif r.status == "rejected":
                outcome = f'<span style="color:#d62728">rejected: {f.esc(str(r.reason))}</span>'
            else:
                outcome = '<span style="color:#1f77b4">pending</span>'
            change = ""
            if r.new_value not in (None, {}, []) and r.kind in ("set_param", "preset"):
                change = f"{f.number(r.old_value)} → {f.number(r.new_value)}"
            impact = ""
            if r.status == "applied" and r.kind in ("set_param", "preset") and loss_key and step is not None:
                impact = self._impact(rs, int(r.id), step, loss_key)
            rows.append(
                {
                    "#": int(r.id),
                    "at": f.clock(r.requested_at),
                    "by": r.requested_by,
                    "source": payload.get("source", ""),
                    "request": text,
                    "outcome": outcome,
                    "change": change,
                    "impact": impact,
                }
            )
        rows.reverse()
        self.history.value = f.table(
            rows[:50],
            ["#", "at", "by", "source", "request", "outcome", "change", "impact"],
            empty="no requests yet",
            raw=("outcome",),
        )

    def _impact(self, rs, request_id: int, step: int, key: str) -> str:
        cached = self._impacts.get(request_id)
        if cached is None or not cached.get("final"):
            try:
                imp = rs.run.impact(request_id, key=key, window=IMPACT_WINDOW)
            except Exception:
                return ""
            imp["final"] = rs.last_step is not None and rs.last_step >= step + IMPACT_WINDOW
            self._impacts[request_id] = cached = imp
        change = cached.get("change")
        if change is None or cached.get("after_points", 0) < 2:
            return "measuring…"
        sb, sa = cached.get("before_slope"), cached.get("after_slope")
        slope = f"; slope {sb:.2g} → {sa:.2g}/step" if sb is not None and sa is not None else ""
        return f"{key} mean {100 * change:+.1f}% over {cached['after_points']} steps{slope}"

    # ------------------------------------------------------------------ actions (main thread)
    def apply(self, row: _ParamRow) -> None:
        try:
            value = _value(row.name, row.input)
        except ValueError as exc:
            self.status.value = f.note(f"{f.esc(row.name)}: {f.esc(str(exc))}", "error")
            return
        mode = self.mode.value
        try:
            self.ctl.submit(
                "set_param",
                f"{row.name} = {f.number(value)}, {mode}",
                lambda run: run.set_param(row.name, value, mode=mode, source="widget"),
            )
        except Exception as exc:
            self.status.value = f.note(f"not sent: {f.esc(f'{type(exc).__name__}: {exc}')}", "error")
            return
        row.dirty = False
        self.mon.refresh()

    def _preset(self) -> None:
        name = self.preset.value
        if not name:
            return
        try:
            self.ctl.submit("preset", f"preset {name}", lambda run: run.apply_preset(name, source="widget"))
        except Exception as exc:
            self.status.value = f.note(f"not sent: {f.esc(f'{type(exc).__name__}: {exc}')}", "error")
            return
        self.mon.refresh()

    def _stop(self) -> None:
        if not self._armed:
            self._armed = True
            self.status.value = f.note("click <b>stop run</b> again to stop the training", "warn")
            return
        self._armed = False
        reason = self.stop_reason.value.strip() or "stopped from the Monitor"
        try:
            self.ctl.submit("stop", "stop", lambda run: run.stop(reason, source="widget"))
        except Exception as exc:
            self.status.value = f.note(f"not sent: {f.esc(f'{type(exc).__name__}: {exc}')}", "error")
            return
        self.mon.refresh()
