"""The Controller: turns schedules and control requests into plain decisions at step boundaries.

What happened (the store), what to do next (decisions, dataclasses in ``decisions.py``) and
how a framework does it (the adapters) are three separate things. The controller never
touches an optimizer.

Hot path: an adapter compares the step with ``controller.next_step`` once per batch; only when
it is reached does it call ``due()``. Pending requests, schedule items, ramps and pins all fold
into that one number.

Control levels (``control=``): ``off`` and ``view`` reject every request; ``manage`` allows
parameter changes, presets and checkpoints; ``admin`` also allows rollback and stop. The
schedule given to the callback is the user's own configuration and applies at every level.
"""

from __future__ import annotations

import collections
import math
import os
import time
from typing import Any

from .. import events as ev
from .decisions import DECISION_EVENTS, At, Change, Decision, Rollback, SaveCheckpoint, SetParams, Stop
from .params import MODES, SCALE, Param, check_value, split_name

LEVELS = ("off", "view", "manage", "admin")
#: the lowest level that allows each request kind
REQUIRED_LEVEL = {
    "set_param": "manage",
    "preset": "manage",
    "checkpoint": "manage",
    "rollback": "admin",
    "stop": "admin",
}

NEVER = math.inf

# Paths a user of this process allowed a rollback to load (``run.rollback(..., allow_path=True)``).
# A request row can come from anyone who can write the store; only code running in the training
# process can add here.
_ALLOWED_PATHS: set[str] = set()


def allow_rollback_path(path: str | os.PathLike) -> None:
    """Let rollbacks of this process load ``path`` (a file, or a checkpoint directory), wherever it is."""
    _ALLOWED_PATHS.add(os.path.realpath(os.fspath(path)))


def rollback_path_refusal(path: str, dirs) -> str | None:
    """Why a rollback must not load ``path``, or None: it must lie inside one of ``dirs`` (the real
    directories where this process recorded the run's checkpoints) or have been allowed explicitly.
    Symlinks are resolved first, so a link inside a checkpoint directory cannot point out of it."""
    real = os.path.realpath(path)
    if real in _ALLOWED_PATHS:
        return None
    for d in dirs:
        if real == d or real.startswith(d.rstrip(os.sep) + os.sep):
            return None
    where = ", ".join(sorted(dirs)) or "none yet"
    return (
        f"checkpoint path {path} is outside the directories where this run recorded its checkpoints ({where}); "
        f"rollback loads only those, or a path allowed in the training process with "
        f"run.rollback(..., allow_path=True)"
    )


class Controller:
    """Schedules, presets, custom params and live requests of one run.

    The recorder's writer thread calls ``offer()`` with new pending requests; the training
    thread calls ``due()`` when ``step >= next_step`` and reports each decision's outcome with
    ``resolve()``.
    """

    def __init__(
        self,
        recorder=None,
        *,
        schedule=(),
        presets: dict | None = None,
        params: dict | None = None,
        control: str = "manage",
    ):
        if control not in LEVELS:
            raise ValueError(f"control must be one of {', '.join(LEVELS)}, received control={control!r}")
        self.recorder = recorder
        self.level = control
        self.custom: dict[str, Param] = dict(params or {})
        for name, p in self.custom.items():
            if not isinstance(p, Param):
                raise ValueError(f"params[{name!r}] must be a tmon_core.Param, received {type(p).__name__}")
        schedule = list(schedule or ())
        for item in schedule:
            if not isinstance(item, At):
                raise ValueError(f"schedule items must be tmon_core.At(...), received {item!r}")
            self._validate_changes(item.params, f"schedule item {item!r}")
        self.presets: dict[str, dict] = {}
        for name, values in (presets or {}).items():
            if not isinstance(values, dict) or not values:
                raise ValueError(
                    f"preset {name!r} must be a non-empty dict of parameter values, received {values!r}"
                )
            self.presets[name] = dict(self._validate_changes(values, f"preset {name!r}"))
        self._by_step = sorted((i for i in schedule if i.step is not None), key=lambda i: i.step)
        self._by_epoch = sorted((i for i in schedule if i.epoch is not None), key=lambda i: i.epoch)
        self._incoming: collections.deque = collections.deque()
        self._decided: collections.deque = collections.deque()  # decisions made in-process (a guard's)
        self._ramps: list[dict] = []
        self.pins: dict[tuple[str, int | None], Any] = {}
        self.get_value = None  # bound by the adapter: (name, group) -> current value
        self.next_step: float = 0 if self._by_step else NEVER
        self._recompute(0)

    # ------------------------------------------------------------------ configuration
    def _validate_changes(self, values: dict, what: str) -> list[tuple[str, Any]]:
        out = []
        for name, value in values.items():
            norm, reason = check_value(name, value, self.custom)
            if reason:
                raise ValueError(f"{what}: {reason}")
            out.append((name, norm))
        return out

    def describe(self) -> dict:
        """What readers (widget, CLI) need to know about this run's control."""
        return {
            "level": self.level,
            "params": sorted({"lr", "weight_decay", "momentum", "betas", "eps"} | set(self.custom)),
            "custom_params": {
                k: {"bounds": p.bounds, "type": p.type.__name__} for k, p in self.custom.items()
            },
            "presets": self.presets,
            "schedule": [i.to_dict() for i in self._by_step + self._by_epoch],
        }

    # ------------------------------------------------------------------ writer thread side
    def offer(self, requests: list[dict]) -> None:
        """New pending requests from the store (writer thread)."""
        if requests:
            self._incoming.extend(requests)
            self.next_step = 0

    # ------------------------------------------------------------------ training thread side
    def submit(self, decision: Decision) -> None:
        """A decision made in the training process (``tmon_core.guard``: source "guard"), handed out
        first by the next ``due()``, whatever the control level (like the schedule, it is the
        user's own configuration). It travels to every rank and is resolved like any other."""
        self._decided.append(decision)
        self.next_step = 0

    def on_epoch_start(self, epoch: int, step: int) -> None:
        while self._by_epoch and self._by_epoch[0].epoch <= epoch:
            item = self._by_epoch.pop(0)
            self._by_step.insert(0, At(step=step, ramp=item.ramp, mode=item.mode, **item.params))
            self.next_step = min(self.next_step, step)

    def due(self, step: int) -> list[Decision]:
        """The decisions to apply before the batch at ``step``."""
        out: list[Decision] = []
        while self._decided:  # first: a guard's rollback restores state a schedule item then changes
            out.append(self._decided.popleft())
        out += self._ramp_steps(step)  # ramps already running (a new one starts below)
        while self._by_step and self._by_step[0].step <= step:
            item = self._by_step.pop(0)
            out += self._from_schedule(item, step)
        for (name, group), value in self.pins.items():
            out.append(
                SetParams(source="pin", quiet=True, changes=[self._change(name, group, value)], mode="set")
            )
        while self._incoming:
            req = self._incoming.popleft()
            try:
                decision = self._from_request(req, step)
            except Exception as exc:  # whatever a request holds, it ends rejected, never in the fit
                decision = self._reject(
                    req, step, f"cannot read the request: {type(exc).__name__}: {exc}"[:1000]
                )
            if decision is not None:
                out.append(decision)
        self._recompute(step)
        return out

    def _recompute(self, step: int) -> None:
        nxt = self._by_step[0].step if self._by_step else NEVER
        if self._ramps or self.pins:
            nxt = min(nxt, step + 1)
        self.next_step = nxt
        # offer() may have queued a request while we computed: never overwrite its wake-up
        if self._incoming or self._decided:
            self.next_step = 0

    def _change(self, name: str, group: int | None, value: Any) -> Change:
        return Change(name, group, value, self.custom.get(name))

    def _from_schedule(self, item: At, step: int) -> list[Decision]:
        changes = []
        for full, value in item.params.items():
            name, group = split_name(full)
            changes.append(self._change(name, group, check_value(full, value, self.custom)[0]))
        if item.ramp and self.get_value is not None:
            ramp = {
                "start": step,
                "end": step + item.ramp,
                "mode": item.mode,
                "label": repr(item),
                "changes": [(c, self._current(c)) for c in changes],
            }
            self._ramps.append(ramp)
            return self._ramp_steps(step, only=ramp)
        if item.mode == "pin":
            for c in changes:
                self.pins[(c.name, c.group)] = c.value
        return [
            SetParams(
                source="schedule",
                changes=changes,
                mode="set" if item.mode == "pin" else item.mode,
                label=repr(item),
            )
        ]

    def _current(self, c: Change):
        try:
            return c.custom.get() if c.custom else self.get_value(c.name, c.group)
        except Exception:
            return None

    def _ramp_steps(self, step: int, only: dict | None = None) -> list[Decision]:
        out = []
        for ramp in [only] if only else list(self._ramps):
            frac = min(1.0, (step - ramp["start"]) / max(1, ramp["end"] - ramp["start"]))
            changes = []
            for c, start in ramp["changes"]:
                if isinstance(start, (int, float)) and isinstance(c.value, (int, float)):
                    changes.append(Change(c.name, c.group, start + (c.value - start) * frac, c.custom))
                else:
                    changes.append(c)
            first, last = step == ramp["start"], frac >= 1.0
            pin = ramp["mode"] == "pin"
            out.append(
                SetParams(
                    source="schedule",
                    changes=changes,
                    mode="set" if pin else ramp["mode"],
                    label=ramp["label"],
                    quiet=not (first or last),
                )
            )
            if last and ramp in self._ramps:
                self._ramps.remove(ramp)
                if pin:  # a pinned ramp holds its target once it gets there
                    for c in changes:
                        self.pins[(c.name, c.group)] = c.value
        return out

    def _from_request(self, req: dict, step: int) -> Decision | None:
        kind, payload = req["kind"], req.get("payload") or {}
        source = payload.get("source")
        common = {
            "source": source if isinstance(source, str) else "api",
            "request_id": req["id"],
            "requested_by": req.get("requested_by"),
        }
        if not isinstance(kind, str):
            return self._reject(req, step, f"unknown request kind {kind!r:.50}")
        need = REQUIRED_LEVEL.get(kind)
        if need is None:
            return self._reject(req, step, f"unknown request kind {kind!r}")
        if LEVELS.index(self.level) < LEVELS.index(need):
            return self._reject(
                req,
                step,
                f"this run's control level is {self.level!r}; {kind} needs {need!r} "
                f"(TMonCallback(control={need!r}))",
            )
        if kind in ("set_param", "preset"):
            if kind == "preset":
                name = payload.get("name")
                if not isinstance(name, str) or name not in self.presets:
                    known = ", ".join(sorted(self.presets)) or "none"
                    return self._reject(req, step, f"unknown preset {name!r}; presets of this run: {known}")
                values, label = self.presets[name], f"preset {name!r}"
                common["source"] = "preset"
            else:
                values, label = payload.get("values") or {}, None
            if not isinstance(values, dict):
                return self._reject(
                    req, step, f"values must be a JSON object of parameter -> value, received {values!r:.100}"
                )
            group = payload.get("group")
            if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 0):
                return self._reject(
                    req, step, f"group must be a param group index >= 0, received {group!r:.50}"
                )
            mode = payload.get("mode") or SCALE
            if not isinstance(mode, str) or mode not in MODES:
                return self._reject(req, step, f"mode must be one of {', '.join(MODES)}, received {mode!r}")
            changes = []
            for full, value in values.items():
                try:
                    name, group = split_name(full)
                except ValueError as exc:
                    return self._reject(req, step, str(exc))
                if payload.get("group") is not None:
                    group = payload["group"]  # checked above
                norm, reason = check_value(full, value, self.custom)
                if reason:
                    return self._reject(req, step, reason)
                changes.append(self._change(name, group, norm))
            if not changes:
                return self._reject(req, step, "no parameter given")
            # a later change of a pinned parameter replaces its pin: a pin is held only until the
            # user says something else about that parameter (else a scale or set would last one step)
            for c in changes:
                for key in [
                    k for k in self.pins if k[0] == c.name and (c.group is None or k[1] in (None, c.group))
                ]:
                    del self.pins[key]
            if mode == "pin":
                for c in changes:
                    self.pins[(c.name, c.group)] = c.value
            return SetParams(changes=changes, mode="set" if mode == "pin" else mode, label=label, **common)
        if kind == "checkpoint":
            tags = payload.get("tags") or []
            desc = payload.get("description")
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                return self._reject(req, step, f"tags must be a list of strings, received {tags!r:.100}")
            if desc is not None and not isinstance(desc, str):
                return self._reject(req, step, f"description must be a string, received {desc!r:.100}")
            return SaveCheckpoint(description=desc, tags=list(tags), **common)
        if kind == "rollback":
            ckpt = payload.get("checkpoint")
            if not isinstance(ckpt, dict) or not isinstance(ckpt.get("path"), str):
                return self._reject(
                    req, step, f"checkpoint {payload.get('checkpoint_id')!r} is not recorded in this store"
                )
            same_run = ckpt.get("run_id") == (self.recorder.run_id if self.recorder else None)
            if not same_run and payload.get("compatible") is not True:
                return self._reject(
                    req,
                    step,
                    f"checkpoint {ckpt['id']} belongs to run {ckpt.get('run_id')}, not this "
                    f"run; pass compatible=True to load it anyway",
                )
            if ckpt.get("deleted"):
                return self._reject(
                    req,
                    step,
                    f"checkpoint {ckpt['id']} is marked deleted: its file {ckpt['path']} "
                    f"was removed or replaced since it was recorded",
                )
            refusal = rollback_path_refusal(ckpt["path"], getattr(self.recorder, "checkpoint_dirs", ()))
            if refusal is not None:
                return self._reject(req, step, f"checkpoint {ckpt['id']}: {refusal}")
            return Rollback(checkpoint_id=ckpt["id"], path=ckpt["path"], same_run=same_run, **common)
        reason = payload.get("reason")
        return Stop(reason=reason if isinstance(reason, str) else None, **common)

    # ------------------------------------------------------------------ outcomes
    def _reject(self, req: dict, step: int, reason: str) -> None:
        self._report(req["id"], "rejected", step, reason=reason)
        if self.recorder is not None:
            self.recorder.event(
                ev.REQUEST_REJECTED,
                step=step,
                message=reason,
                data={
                    "request_id": req["id"],
                    "kind": req["kind"],
                    "payload": req.get("payload"),
                    "requested_by": req.get("requested_by"),
                },
            )
        return None

    def resolve(
        self,
        decision: Decision,
        step: int,
        *,
        applied: bool,
        old: Any = None,
        new: Any = None,
        reason: str | None = None,
        event: str | None = None,
        data: dict | None = None,
    ) -> None:
        """Record what happened to ``decision``: the request row, and an event."""
        if not applied and isinstance(decision, SetParams):
            for c in decision.changes:  # a rejected pin must not be re-applied every step
                self.pins.pop((c.name, c.group), None)
        if decision.request_id is not None:
            self._report(
                decision.request_id,
                "applied" if applied else "rejected",
                step,
                old=old,
                new=new,
                reason=reason,
            )
        if self.recorder is None or (decision.quiet and applied):
            return
        base = {
            "request_id": decision.request_id,
            "source": decision.source,
            "requested_by": decision.requested_by,
        }
        if not applied:
            self.recorder.event(ev.REQUEST_REJECTED, step=step, message=reason, data={**base, **(data or {})})
            return
        if isinstance(decision, SetParams):

            def side(values, c):
                return _short(values.get(_key(c)) if isinstance(values, dict) else values)

            msg = ", ".join(f"{_key(c)}: {side(old, c)} -> {side(new, c)}" for c in decision.changes)
            self.recorder.event(
                event or ev.PARAM_CHANGE,
                step=step,
                message=msg,
                data={
                    **base,
                    "mode": decision.mode,
                    "label": decision.label,
                    "old": old,
                    "new": new,
                    **(data or {}),
                },
            )
        else:
            kind = event or DECISION_EVENTS.get(type(decision), type(decision).__name__.lower())
            self.recorder.event(
                kind, step=step, message=reason, data={**base, "old": old, "new": new, **(data or {})}
            )

    def _report(self, request_id: int, status: str, step: int, **fields) -> None:
        if self.recorder is not None:
            self.recorder.resolve_request(
                request_id, status=status, applied_step=step, applied_at=time.time(), **fields
            )


def _key(c: Change) -> str:
    return c.name if c.group is None else f"{c.name}@{c.group}"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return repr(v)
