"""Groups of runs: the trials of one sweep, the runs of one experiment.

A run belongs to at most one group, given when it starts (``TMonCallback(group="sweep-3")``,
``Recorder(group=...)``, ``track(group=...)``) or by ``$TMON_GROUP`` (the option wins), and stored
on the run (``tmon_runs.group_name``). ``runs(group=...)``, ``tmon runs --group``, ``tmon groups``,
``Monitor(group=...)`` and the group report (``tmon_core.group_report``) read it.

A group name is one line of text a user types back (``tmon runs --group NAME``), so it is checked
when given, never rewritten: a non-empty string of at most ``MAX_GROUP`` characters, without
control characters, NUL or lone surrogates, and without whitespace at either end (which would make
two groups that print alike). Any other Unicode is fine.

>>> import os, tempfile, tmon_core
>>> store = os.path.join(tempfile.mkdtemp(), "tmon.db")
>>> for lr in (0.1, 0.01):
...     with tmon_core.Recorder(store, group="sweep-3", config={"hparams": {"lr": lr}}, flush_interval=0.1) as rec:
...         rec.log({"val_loss": lr * 10}, 0)
>>> tmon_core.runs(store, group="sweep-3").group.tolist()
['sweep-3', 'sweep-3']
>>> groups(store)[["group", "runs", "completed"]].values.tolist()
[['sweep-3', 2, 2]]
"""

from __future__ import annotations

import os
import unicodedata

from .store.text import MAX_GROUP, check_text

#: the environment variable that gives a run its group when no ``group=`` option does
ENV_VAR = "TMON_GROUP"


def check_group(value, name: str = "group") -> str:
    """``value`` if it is a group name the store keeps as it is, else a ``ValueError`` naming ``name``
    (the option, or the environment variable it came from) and what a group name must be."""
    if not isinstance(value, str):
        raise ValueError(
            f"{name} must be a string (the name of a sweep or experiment), received {name}={value!r} "
            f"({type(value).__name__})"
        )
    if not value.strip():
        raise ValueError(f"{name} must name a group (a non-empty string), received {name}={value!r}")
    check_text(name, value, MAX_GROUP)  # NUL, lone surrogates, length
    for i, ch in enumerate(value):
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            raise ValueError(
                f"{name} must be one line of text without control characters: {name}={value!r} has "
                f"{ch!r} at position {i}"
            )
    if value != value.strip():
        raise ValueError(
            f"{name} must not begin or end with whitespace (two groups would print alike): "
            f"received {name}={value!r}"
        )
    return value


def resolve_group(group: str | None) -> str | None:
    """The group a new run gets: ``group`` when given, else ``$TMON_GROUP`` when set (and not
    empty), else None; checked either way, an error naming where the bad value came from."""
    if group is not None:
        return check_group(group)
    env = os.environ.get(ENV_VAR)
    if not env:
        return None
    return check_group(env, ENV_VAR)


def groups(store=None):
    """The groups of a store (URL, path or ``Store``; default ``$TMON_STORE`` or ``sqlite:///tmon.db``),
    most recently active first, as a DataFrame: ``group``; ``runs`` and how many are ``running``,
    ``completed``, ``failed`` (failed, interrupted or lost); ``first_start`` and ``last_activity``
    (UNIX seconds: the newest heartbeat or end of its runs); ``steps`` (all its runs' steps).
    Runs without a group are not listed."""
    from .store import Store, open_store

    own = not isinstance(store, Store)
    st = open_store(store) if own else store
    try:
        return _groups(st)
    finally:
        if own:
            st.close()


GROUP_COLUMNS = ["group", "runs", "running", "completed", "failed", "first_start", "last_activity", "steps"]


def _groups(store):
    import pandas as pd

    from .events import COMPLETED, RUNNING

    df = store.runs()
    df = df[df.group.notna()]
    if df.empty:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    out = []
    for name, g in df.groupby("group", sort=False):
        ends = g.created_at + g.duration  # ended_at, else the last heartbeat
        out.append(
            {
                "group": name,
                "runs": len(g),
                "running": int((g.status == RUNNING).sum()),
                "completed": int((g.status == COMPLETED).sum()),
                "failed": int((~g.status.isin((RUNNING, COMPLETED))).sum()),
                "first_start": float(g.created_at.min()),
                "last_activity": float(ends.max()),
                "steps": int(g.steps.fillna(0).sum()),
            }
        )
    return (
        pd.DataFrame(out, columns=GROUP_COLUMNS)
        .sort_values("last_activity", ascending=False, kind="stable")
        .reset_index(drop=True)
    )


__all__ = ["ENV_VAR", "GROUP_COLUMNS", "check_group", "groups", "resolve_group"]
