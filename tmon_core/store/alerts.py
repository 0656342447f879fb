"""A run's alerts as the store holds them, and what ``tmon watch`` keeps in the store.

An alert is a ``tmon_events`` row of type ``alert`` (message: its text; data: uid, rule, level,
title, evidence, source "run" or "watch"); each delivery outcome is an ``alert_delivery`` event
(data: uid, delivered True / False / None for held back, reason, redacted targets, held).
``alerts`` reads them back as one table, the latest outcome of each alert beside it.

The watcher's state is ``tmon_alert_claims`` (schema 5): ``claim`` inserts a row for one run and
condition and the alert's event in one transaction, and the UNIQUE index on (run_id, key) makes a
second watcher's claim, or a restarted watcher's, fail, so each alert is recorded and sent once.

>>> import os, tempfile
>>> from tmon_core import Recorder, open_store
>>> path = os.path.join(tempfile.mkdtemp(), "tmon.db")
>>> with Recorder(path, flush_interval=0.1) as rec:
...     rec.log({"loss": 1.0}, 0)
>>> store = open_store(path)
>>> alert = {"rule": "lost", "level": "critical", "title": "Lost", "text": "No heartbeat.", "step": 0,
...          "wall_time": 1.0e9, "evidence": {}}
>>> uid = claim(store, rec.run_id, "lost@1", alert, watcher="doc")
>>> claim(store, rec.run_id, "lost@1", alert, watcher="another") is None     # claimed already
True
>>> record_delivery(store, rec.run_id, uid, {"delivered": False, "reason": "down", "targets": []})
>>> alerts(store, rec.run_id)[["rule", "level", "delivered", "source"]].values.tolist()
[['lost', 'critical', False, 'watch']]
>>> store.close()
"""

from __future__ import annotations

import json
import time
import uuid

from sqlalchemy import and_, exists, func, not_, or_, select
from sqlalchemy.exc import IntegrityError

from .. import events as ev
from ..jsonable import to_json
from .records import clean_row
from .schema import AlertClaimRow, ChunkRow, EventRow, RunRow, SeriesRow

#: the columns of ``Run.alerts()``
COLUMNS = ["time", "step", "rule", "level", "title", "text", "delivered", "uid", "source"]
SEEN_RUNNING = "seen-running"  # a watcher saw the run running: its end is worth an alert
ENDED = "ended"


def _pd():
    import pandas as pd

    return pd


def _loads(text):
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def alerts(store, run_id: str, since: float | None = None):
    """The alerts of run ``run_id`` (``since``: UNIX seconds, only those raised at or after it),
    oldest first: time, step, rule, level, title, text, delivered (the latest outcome: True,
    False, ``"held"``, or None when no delivery was configured or none came yet), uid, source."""
    where = [EventRow.run_id == run_id, EventRow.type.in_((ev.ALERT, ev.ALERT_DELIVERY))]
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(EventRow.wall_time, EventRow.step, EventRow.type, EventRow.message, EventRow.data)
            .where(*where)
            .order_by(EventRow.wall_time, EventRow.id)
        ).all()
    found, outcome = [], {}
    for wall, step, typ, message, data in rows:
        d = _loads(data)
        if typ == ev.ALERT_DELIVERY:
            delivered = d.get("delivered")
            outcome[d.get("uid")] = "held" if delivered is None else bool(delivered)
        elif since is None or wall >= since:
            found.append(
                {
                    "time": wall,
                    "step": step,
                    "rule": d.get("rule"),
                    "level": d.get("level"),
                    "title": d.get("title"),
                    "text": message,
                    "uid": d.get("uid"),
                    "source": d.get("source"),
                }
            )
    for a in found:
        a["delivered"] = outcome.get(a["uid"])
    df = _pd().DataFrame(found, columns=COLUMNS)
    df["step"] = df["step"].astype("Int64")
    df["delivered"] = df["delivered"].astype(object)
    return df


def alert_event(alert: dict, uid: str, source: str) -> dict:
    """The ``tmon_events`` row of ``alert`` (a dict of ``AlertEngine``'s form), storable as it is."""
    data = {
        "uid": uid,
        "rule": alert["rule"],
        "level": alert["level"],
        "title": alert["title"],
        "evidence": alert.get("evidence") or {},
        "source": source,
    }
    row = {
        "wall_time": float(alert.get("wall_time") or time.time()),
        "step": alert.get("step"),
        "type": ev.ALERT,
        "message": alert["text"],
        "data": to_json(data),
    }
    clean, refused = clean_row(EventRow, row)
    if refused is not None:  # a step beyond 64 bits, say: the alert still goes in, without it
        clean, _ = clean_row(EventRow, {**row, "step": None})
    return clean


def claim(store, run_id: str, key: str, alert: dict | None, *, watcher: str) -> str | None:
    """Claim condition ``key`` of run ``run_id`` and record ``alert`` (source "watch") in the same
    transaction. Returns the alert's uid, or None when the condition was claimed already (by
    another watcher, or by this one before a restart): then nothing is recorded. ``alert=None``
    only marks the condition (``SEEN_RUNNING``)."""
    uid = uuid.uuid4().hex if alert is not None else None
    try:
        with store.write_engine.begin() as conn:
            conn.execute(
                AlertClaimRow.__table__.insert().values(
                    run_id=run_id, key=key[:200], uid=uid, claimed_at=time.time(), watcher=watcher[:250]
                )
            )
            if alert is not None:
                conn.execute(
                    EventRow.__table__.insert().values(run_id=run_id, **alert_event(alert, uid, "watch"))
                )
    except IntegrityError:
        return None
    return uid or ""


def record_delivery(store, run_id: str, uid: str, outcome: dict) -> None:
    """Record the delivery ``outcome`` of alert ``uid`` (Notifier's: delivered, reason, targets, held)."""
    data = {
        "uid": uid,
        "delivered": outcome.get("delivered"),
        "reason": outcome.get("reason"),
        "targets": list(outcome.get("targets") or ()),
        "held": int(outcome.get("held") or 0),
    }
    row, _ = clean_row(
        EventRow,
        {
            "wall_time": time.time(),
            "type": ev.ALERT_DELIVERY,
            "message": outcome.get("reason"),
            "data": to_json(data),
        },
    )
    with store.write_engine.begin() as conn:
        conn.execute(EventRow.__table__.insert().values(run_id=run_id, **row))


def watched_runs(store, since: float) -> list[dict]:
    """What a watcher looks at: the runs stored as running whose heartbeat came after ``since``, and
    the ended runs a watcher saw running whose end no watcher alerted yet. Each as a dict of the
    run's row (error decoded) with ``claims``: the keys claimed for it already."""
    seen = exists().where(AlertClaimRow.run_id == RunRow.id, AlertClaimRow.key == SEEN_RUNNING)
    ended = exists().where(AlertClaimRow.run_id == RunRow.id, AlertClaimRow.key == ENDED)
    cols = [
        RunRow.id,
        RunRow.name,
        RunRow.status,
        RunRow.framework,
        RunRow.created_at,
        RunRow.ended_at,
        RunRow.heartbeat_at,
        RunRow.heartbeat_timeout,
        RunRow.host,
        RunRow.pid,
        RunRow.last_step,
        RunRow.error,
    ]
    q = select(*cols).where(
        or_(
            and_(RunRow.status == ev.RUNNING, RunRow.heartbeat_at >= since),
            and_(RunRow.status != ev.RUNNING, seen, not_(ended)),
        )
    )
    with store.engine.connect() as conn:
        runs = [dict(r) for r in conn.execute(q).mappings()]
        claims: dict[str, set] = {r["id"]: set() for r in runs}
        ids = list(claims)
        for i in range(0, len(ids), 500):
            for rid, key in conn.execute(
                select(AlertClaimRow.run_id, AlertClaimRow.key).where(
                    AlertClaimRow.run_id.in_(ids[i : i + 500])
                )
            ):
                claims[rid].add(key)
    for r in runs:
        r["error"] = _loads(r["error"]) or None
        r["claims"] = claims[r["id"]]
    return runs


def last_point_time(store, run_id: str) -> float | None:
    """When the run's newest metric point was logged (UNIX seconds), or None before its first."""
    series = select(SeriesRow.id).where(SeriesRow.run_id == run_id).scalar_subquery()
    with store.engine.connect() as conn:
        return conn.execute(
            select(func.max(ChunkRow.last_wall)).where(ChunkRow.series_id.in_(series))
        ).scalar()


#: the phases a watcher does not take for a stall at once: (the event that opens it, the one that closes it)
PHASE_EVENTS = {ev.VALIDATION_START: ev.VALIDATION_END, ev.EVALUATION_START: ev.EVALUATION_END}


def open_phase(store, run_id: str) -> tuple[str, float] | None:
    """``(phase, since)`` when the run's newest phase event opens a phase (``validation_start``,
    ``evaluation_start``) that no later event closed, else None."""
    types = list(PHASE_EVENTS) + list(PHASE_EVENTS.values())
    with store.engine.connect() as conn:
        row = conn.execute(
            select(EventRow.type, EventRow.wall_time)
            .where(EventRow.run_id == run_id, EventRow.type.in_(types))
            .order_by(EventRow.wall_time.desc(), EventRow.id.desc())
            .limit(1)
        ).first()
    if row is None or row[0] not in PHASE_EVENTS:
        return None
    return row[0].removesuffix("_start"), row[1]


def own_alerts(store, run_id: str, rules, since: float | None = None) -> list[dict]:
    """The alerts of ``rules`` the run recorded itself (source "run"), raised at or after ``since``."""
    where = [EventRow.run_id == run_id, EventRow.type == ev.ALERT]
    if since is not None:
        where.append(EventRow.wall_time >= since)
    with store.engine.connect() as conn:
        rows = conn.execute(select(EventRow.data).where(*where)).scalars().all()
    rules = set(rules)
    return [d for d in map(_loads, rows) if d.get("rule") in rules and d.get("source") != "watch"]
