"""The options every adapter's constructor takes, defined once: names, defaults, checks and docs.

``CallbackOptions`` holds them, checked at construction (a bad value fails where it is written,
not mid-fit); :func:`make_options` builds it from an adapter's ``**options``; :func:`options_signature`
shows them in ``help()`` and IDEs; :func:`options_doc` writes the ``Args:`` section of an adapter's
class docstring from each field's ``doc`` metadata, so the three adapters document one list.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field


def _opt(default, doc: str):
    return field(default=default, metadata={"doc": doc})


@dataclass
class CallbackOptions:
    store: str | os.PathLike | None = _opt(
        None, "database URL or SQLite path; default ``$TMON_STORE`` or ``sqlite:///tmon.db``."
    )
    run_name: str | None = _opt(None, "readable name of the run; default ``<framework>-<date>-<time>``.")
    flush_interval: float = _opt(1.0, "seconds between writes to the store.")
    sample_interval: float | None = _opt(1.0, "seconds between hardware samples; None turns sampling off.")
    heartbeat_timeout: float = _opt(30.0, "seconds of silence after which readers call the run ``lost``.")
    log_grad_norm: bool = _opt(False, "also record the total gradient norm before each optimizer step.")
    gpus: bool = _opt(True, "sample GPUs through NVML when present.")
    schedule: list | None = _opt(None, "``tmon_core.At(...)`` items: parameter changes at a step or epoch.")
    presets: dict | None = _opt(None, "name -> {parameter: value}, applied by ``run.apply_preset(name)``.")
    params: dict | None = _opt(None, "name -> ``tmon_core.Param``: your own steerable knobs.")
    control: str = _opt(
        "manage",
        "``off`` | ``view`` | ``manage`` (default: parameters, presets, checkpoints) "
        "| ``admin`` (also rollback and stop). See ``tmon_core.control``.",
    )
    tags: list[str] | None = _opt(None, "labels stored with the run.")
    notes: str | None = _opt(None, "free text stored with the run.")
    group: str | None = _opt(
        None,
        "the group the run belongs to (a sweep, an experiment): ``runs(group=...)``, "
        "``tmon runs --group``, ``Monitor(group=...)``, the group report; default ``$TMON_GROUP``.",
    )
    capture_logs: bool = _opt(
        True,
        "keep Python logging records at WARNING and above and warnings.warn calls "
        "with the run (what the user sees is unchanged).",
    )
    capture_output: bool = _opt(False, "also keep every line printed to stdout/stderr.")
    report: str = _opt(
        "auto",
        '``"auto"`` (default) makes ``tmon_core.report()`` when the run ends '
        '(``callback.session.report``); ``"off"``.',
    )
    widget: bool = _opt(True, "in a notebook, display a live ``tmon_widgets.Monitor`` when the run starts.")
    alerts: object = _opt(
        None,
        "live alerts (``tmon_core.alerts``): True for the default rules (NaN/inf, "
        "divergence, spikes, memory, stalls, how the run ended), a list of rule names "
        "and ``Alert`` rules, False for none; None: on when ``notify`` or "
        "``$TMON_NOTIFY`` gives somewhere to deliver them.",
    )
    notify: object = _opt(
        None,
        "apprise URLs to deliver alerts to (``slack://...``, ``mailto://...``, "
        "``json://host/path``); None reads ``$TMON_NOTIFY``.",
    )
    guard: object = _opt(
        None,
        '``"skip"`` | ``"rollback"`` | ``"stop"`` or a ``tmon_core.Guard`` for its options: act on a '
        "NaN/inf step or a divergence (skip its update; restore the last good snapshot and halve the "
        "lr; stop), each action an event and an alert (see ``tmon_core.guard``); None: no guard.",
    )

    def __post_init__(self) -> None:
        if self.sample_interval is not None and (
            not isinstance(self.sample_interval, (int, float)) or self.sample_interval < 0.1
        ):
            raise ValueError(
                f"sample_interval must be >= 0.1 seconds or None, received sample_interval={self.sample_interval!r}"
            )
        if not isinstance(self.flush_interval, (int, float)) or not 0.05 <= self.flush_interval <= 60:
            raise ValueError(
                f"flush_interval must be between 0.05 and 60 seconds, received flush_interval={self.flush_interval!r}"
            )
        if (
            not isinstance(self.heartbeat_timeout, (int, float))
            or self.heartbeat_timeout <= self.flush_interval
        ):
            raise ValueError(
                f"heartbeat_timeout must be seconds above flush_interval={self.flush_interval}, "
                f"received heartbeat_timeout={self.heartbeat_timeout!r}"
            )
        if self.run_name is not None and not isinstance(self.run_name, str):
            raise ValueError(f"run_name must be a string, received run_name={self.run_name!r}")
        if self.tags is not None and (
            isinstance(self.tags, str) or not all(isinstance(t, str) and t for t in self.tags)
        ):
            raise ValueError(f"tags must be a list of non-empty strings, received tags={self.tags!r}")
        if self.notes is not None and not isinstance(self.notes, str):
            raise ValueError(f"notes must be a string, received notes={self.notes!r}")
        from tmon_core.store.text import MAX_NOTES, MAX_RUN_NAME, MAX_TAG, check_text

        # what the store would refuse or cut fails here, at construction, not mid-fit
        if self.run_name is not None:
            check_text("run_name", self.run_name, MAX_RUN_NAME)
        for tag in self.tags or ():
            check_text("tags", tag, MAX_TAG)
        if self.notes is not None:
            check_text("notes", self.notes, MAX_NOTES)
        from tmon_core.run_groups import resolve_group

        resolve_group(self.group)  # a bad group (or $TMON_GROUP) fails here, not when the fit starts
        if not isinstance(self.log_grad_norm, bool):
            raise ValueError(
                f"log_grad_norm must be True or False, received log_grad_norm={self.log_grad_norm!r}"
            )
        for name in ("capture_logs", "capture_output", "widget"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, received {name}={getattr(self, name)!r}")
        if self.report not in ("auto", "off"):
            raise ValueError(f"report must be 'auto' or 'off', received report={self.report!r}")
        from tmon_core.recorder.alerting import alert_options

        alert_options(self.alerts, self.notify)  # a bad rule or URL fails here, not mid-fit
        from tmon_core.guard import Guard

        Guard.from_option(self.guard)  # a bad guard fails here, not mid-fit
        if self.store is not None:
            from tmon_core.store import resolve_url

            resolve_url(self.store)  # a malformed URL fails here, at construction, not mid-fit
        self.make_controller(None)  # schedule, presets, params and control level fail here too

    def make_controller(self, recorder):
        """A fresh controller for one fit (schedules are consumed as the fit runs)."""
        from tmon_core.control import Controller

        return Controller(
            recorder, schedule=self.schedule, presets=self.presets, params=self.params, control=self.control
        )


def make_options(store, options: dict, owner: str = "TMonCallback") -> CallbackOptions:
    """The options of an adapter's constructor, checked: an unknown name is a TypeError that
    lists the valid ones (not swallowed), a bad value a ValueError naming it."""
    known = {f.name for f in dataclasses.fields(CallbackOptions)} - {"store"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"{owner} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"its options are: store, {', '.join(sorted(known))}"
        )
    return CallbackOptions(store=store, **options)


def options_signature(cls) -> None:
    """Give ``cls.__init__(self, store=None, **options)`` the explicit signature of the options,
    so help(), IDEs and docs show every option with its default."""
    params = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("store", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ]
    for f in dataclasses.fields(CallbackOptions):
        if f.name != "store":
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default))
    cls.__init__.__signature__ = inspect.Signature(params)


def options_doc(indent: int = 4, width: int = 100, **overrides: str) -> str:
    """The ``Args:`` section documenting every option, for an adapter's class docstring.

    ``overrides`` maps an option name to the text that replaces its generic one (e.g. the
    framework's default ``run_name``, or why ``log_grad_norm`` differs there). The first line
    (``Args:``) is not indented and every following line starts with ``indent`` spaces, so the
    result drops into an f-string docstring at the place of a line's text::

        __doc__ = f\"\"\"Record a fit.

            {options_doc(indent=4)}
            \"\"\"
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(CallbackOptions)}
    if unknown:
        raise TypeError(f"options_doc got overrides for unknown option(s) {sorted(unknown)}")
    pad = " " * indent
    lines = ["Args:"]
    for f in dataclasses.fields(CallbackOptions):
        words = f"{f.name}: {overrides.get(f.name, f.metadata['doc'])}".split()
        line = pad + "    "
        for i, word in enumerate(words):
            if i and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = pad + "        "
            line += word if line.endswith(" ") else " " + word
        lines.append(line)
    return "\n".join(lines)


__all__ = ["CallbackOptions", "make_options", "options_doc", "options_signature"]
