"""The client side of control: any process that can open the store asks a running run to change.

>>> run = tmon_core.latest_run()                      # doctest: +SKIP
>>> req = run.set_param("lr", 5e-5)
>>> req.wait(timeout=10)                              # 'applied' or 'rejected'
>>> req.info()["reason"]

A request is a row of ``tmon_requests``: ``pending`` until the training process applies it
at a step boundary (``applied``, with the step, old and new value) or refuses it
(``rejected``, with the reason). A request to a run that is no longer running is rejected at
once, here.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from typing import Any

from ..events import RUNNING
from ..jsonable import to_json
from ..store import checkpoints as checkpoint_rows
from ..store import requests as request_rows
from ..store.requests import decode_json

SOURCES = ("api", "cli", "widget", "schedule", "preset")


def default_requester() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Request:
    """A handle on one control request."""

    def __init__(self, store, request_id: int):
        self.store = store
        self.id = request_id

    def __repr__(self) -> str:
        return f"Request({self.id}, status={self.status!r})"

    def info(self) -> dict:
        out = request_rows.request_row(self.store, self.id)
        if out is None:
            raise KeyError(f"no request {self.id} in {self.store}")
        for k in ("payload", "old_value", "new_value"):
            out[k] = decode_json(out[k])
        return out

    @property
    def status(self) -> str:
        return self.info()["status"]

    @property
    def reason(self) -> str | None:
        return self.info()["reason"]

    def wait(self, timeout: float = 30.0, poll: float = 0.05) -> str:
        """Block until the request is applied or rejected (or ``timeout`` s pass); return its status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status
            if status != "pending" or time.monotonic() >= deadline:
                return status
            time.sleep(poll)


def submit(run, kind: str, payload: dict, *, requested_by: str | None = None, source: str = "api") -> Request:
    """Insert a request for ``run``; a run that is not running gets it rejected at once."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, received source={source!r}")
    payload = dict(payload, source=source)
    status, reason = "pending", None
    run_status = run.status
    if run_status != RUNNING:
        status, reason = "rejected", f"run {run.id} is {run_status}: there is no training to steer"
    now = time.time()
    rid = request_rows.insert_request(
        run.store,
        run.id,
        kind,
        _payload_json(payload),
        status=status,
        requested_by=requested_by or default_requester(),
        requested_at=now,
        reason=reason,
        applied_at=now if reason else None,
    )
    return Request(run.store, rid)


def set_param(run, name: str, value: Any, *, group: int | None = None, mode: str = "scale", **kw) -> Request:
    if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 0):
        raise ValueError(f"group must be a param group index >= 0, received group={group!r}")
    return submit(run, "set_param", {"values": {name: value}, "group": group, "mode": mode}, **kw)


def set_params(run, values: dict, *, mode: str = "scale", **kw) -> Request:
    if not isinstance(values, dict) or not values:
        raise ValueError(f"values must be a non-empty dict of parameter -> value, received {values!r}")
    return submit(run, "set_param", {"values": values, "mode": mode}, **kw)


def apply_preset(run, name: str, **kw) -> Request:
    return submit(run, "preset", {"name": name}, **kw)


def request_checkpoint(run, description: str | None = None, tags: list[str] | None = None, **kw) -> Request:
    return submit(run, "checkpoint", {"description": description, "tags": _tags(tags)}, **kw)


def rollback(run, checkpoint_id: int, *, compatible: bool = False, allow_path: bool = False, **kw) -> Request:
    """Ask the run to restore a recorded checkpoint. The run loads only files inside the directories
    where it recorded its own checkpoints; ``allow_path=True``, called in the process that trains
    the run, lets it load this checkpoint's path wherever it is (another run's, with ``compatible``)."""
    if isinstance(checkpoint_id, bool) or not isinstance(checkpoint_id, int):
        raise ValueError(
            f"checkpoint_id must be the int id of a recorded checkpoint, received {checkpoint_id!r}"
        )
    if allow_path:
        from .controller import allow_rollback_path

        info = run.info()
        if info.get("pid") != os.getpid() or info.get("host") != socket.gethostname():
            raise ValueError(
                f"allow_path=True works only in the process that trains run {run.id} "
                f"(pid {info.get('pid')} on {info.get('host')}); this is pid {os.getpid()} on "
                f"{socket.gethostname()}"
            )
        allow_rollback_path(run.store.checkpoint(checkpoint_id)["path"])
    return submit(run, "rollback", {"checkpoint_id": checkpoint_id, "compatible": bool(compatible)}, **kw)


def stop(run, reason: str | None = None, **kw) -> Request:
    return submit(run, "stop", {"reason": reason}, **kw)


def requests(run):
    """The run's control requests, oldest first, as a DataFrame."""
    import pandas as pd

    rows = request_rows.request_rows(run.store, run.id)
    for r in rows:
        for k in ("payload", "old_value", "new_value"):
            r[k] = decode_json(r[k])
    df = pd.DataFrame(rows, columns=request_rows.COLUMNS)
    df["applied_step"] = df["applied_step"].astype("Int64")
    return df


def _payload_json(payload: dict) -> str:
    """JSON that keeps NaN and inf as numbers (Python's NaN/Infinity tokens), so the training side
    rejects ``lr=nan`` as "not a finite number" rather than as a string."""
    return json.dumps(payload, allow_nan=True, default=repr)


def _tags(tags) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
        raise ValueError(f"tags must be a list of non-empty strings, received tags={tags!r}")
    return list(tags)


def _checkpoint_row(run, checkpoint_id: int) -> dict:
    row = checkpoint_rows.checkpoint_row(run.store, checkpoint_id, run.id)
    if row is None:
        raise KeyError(f"run {run.id} has no checkpoint {checkpoint_id}")
    return row


def tag_checkpoint(run, checkpoint_id: int, tags: list[str], description: str | None = None) -> None:
    """Replace a checkpoint's tags (and description, when given)."""
    _checkpoint_row(run, checkpoint_id)
    checkpoint_rows.set_tags(run.store, checkpoint_id, to_json(_tags(tags)), description)


def delete_checkpoint(run, checkpoint_id: int) -> None:
    """Delete a checkpoint's file (or directory) and mark its record deleted."""
    import shutil

    row = _checkpoint_row(run, checkpoint_id)
    path = row["path"]
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    checkpoint_rows.mark_deleted(run.store, checkpoint_id)


def impact(run, request_id: int, key: str = "loss", window: int = 50) -> dict:
    """How ``key`` moved around an applied request: mean and slope over ``window`` steps before vs after."""
    import numpy as np

    info = Request(run.store, request_id).info()
    if info["status"] != "applied" or info["applied_step"] is None:
        raise ValueError(f"request {request_id} is {info['status']}: only an applied change has an impact")
    step = info["applied_step"]
    df = run.metrics(key, start=step - window, end=step + window - 1)
    out = {"request_id": request_id, "key": key, "step": step, "window": window}
    for side, part in (("before", df[df.step < step]), ("after", df[df.step >= step])):
        vals = part.value.to_numpy(dtype=float)
        ok = np.isfinite(vals)
        out[f"{side}_points"] = int(ok.sum())
        out[f"{side}_mean"] = float(vals[ok].mean()) if ok.any() else None
        out[f"{side}_slope"] = (
            float(np.polyfit(part.step.to_numpy(dtype=float)[ok], vals[ok], 1)[0]) if ok.sum() >= 2 else None
        )
    if out["before_mean"] and out["after_mean"] is not None:
        out["change"] = (out["after_mean"] - out["before_mean"]) / abs(out["before_mean"])
    return out
