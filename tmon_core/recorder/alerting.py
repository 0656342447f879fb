"""A recorder's live alerts: the ``AlertEngine`` sees each flush on the writer thread (never the
training thread), its alerts are written in that same flush as ``alert`` events, and the
``Notifier`` delivers them from its own thread, its outcomes recorded as ``alert_delivery`` events.
How the run ended is said in ``close``, before the last flush, so it is in the store with the status.
"""

from __future__ import annotations

import logging
import threading
import uuid

from .. import events as ev
from ..jsonable import json_safe, to_json

log = logging.getLogger("tmon")


def alert_options(alerts, notify) -> tuple[object, list, list[str]]:
    """Check ``alerts`` (None, True, False, or a list of default rule names and ``Alert`` rules) and
    ``notify`` (apprise URLs, None for ``$TMON_NOTIFY``); returns (rules, custom rules, URLs). With
    ``alerts=None`` alerts are on when there is somewhere to deliver them."""
    from ..alerts import DEFAULT_RULES, Alert
    from ..alerts.notify import notify_urls

    urls = notify_urls(notify)
    if alerts is None:
        alerts = bool(urls)
    if isinstance(alerts, bool):
        return alerts, [], urls
    if isinstance(alerts, (str, Alert)) or not hasattr(alerts, "__iter__"):
        alerts = [alerts]
    names, custom = [], []
    for a in alerts:
        if isinstance(a, Alert):
            custom.append(a)
        elif isinstance(a, str) and a in DEFAULT_RULES:
            names.append(a)
        else:
            raise ValueError(
                f"alerts takes True, False, rule names ({', '.join(DEFAULT_RULES)}) and "
                f"tmon_core.alerts.Alert rules, received {a!r}"
            )
    return names, custom, urls


def alert_data(alert: dict) -> dict:
    """The data of an ``alert`` event a run raises itself (source "run"); gives ``alert`` its uid."""
    alert["uid"] = uuid.uuid4().hex
    return {
        "uid": alert["uid"],
        "rule": alert["rule"],
        "level": alert["level"],
        "title": alert["title"],
        "evidence": json_safe(alert.get("evidence") or {}),
        "source": "run",
    }


class RecorderAlerts:
    def __init__(self, recorder, rules, custom, urls, label: str) -> None:
        from ..alerts import AlertEngine
        from ..alerts.notify import Notifier

        self.recorder = recorder
        self.engine = AlertEngine(rules, custom)
        self.lock = threading.Lock()
        self.failed = False
        self.notifier = Notifier(urls, label=label, on_outcome=self._outcome) if urls else None

    def on_flush(self, batch) -> None:
        """Writer thread: the alerts this batch raises join its events (written with it)."""
        if self.failed:
            return
        try:
            with self.lock:
                alerts = self.engine.observe(batch.points, batch.events, batch.samples, batch.gpu_samples)
                alerts += self.engine.tick()
            for a in alerts:
                batch.events.append(self._row(a))
                self._send(a)
        except Exception as exc:  # alerts are never worth a lost flush
            self.failed = True
            log.warning("tmon: live alerts stopped for run %s: %s", self.recorder.run_id, exc, exc_info=exc)

    def finish(self, status: str | None, error: dict | None) -> None:
        """Training thread, in ``close``: how the run ended, queued before the last flush."""
        if status is None or self.failed:
            return
        try:
            with self.lock:
                alerts = self.engine.finish(status, error)
            for a in alerts:
                self.recorder.event(ev.ALERT, step=a.get("step"), message=a["text"], data=self._data(a))
                self._send(a)
        except Exception as exc:
            log.warning("tmon: the run's end alert failed: %s", exc)

    def say(self, alert: dict) -> None:
        """Training thread: an alert raised outside the rules (a guard's action), recorded and
        delivered like theirs."""
        self.recorder.event(ev.ALERT, step=alert.get("step"), message=alert["text"], data=self._data(alert))
        self._send(alert)

    def close(self, timeout: float) -> None:
        if self.notifier is not None:
            self.notifier.close(timeout)

    def _send(self, alert: dict) -> None:
        if self.notifier is not None:
            self.notifier.send(alert)

    def _data(self, alert: dict) -> dict:
        return alert_data(alert)

    def _row(self, alert: dict) -> dict:
        """An event row as the writer's batch holds them (the writer thread adds it to its batch)."""
        data = self._data(alert)
        return {
            "wall_time": alert["wall_time"],
            "step": alert.get("step"),
            "type": ev.ALERT,
            "message": alert["text"],
            "data": to_json(data),
        }

    def _outcome(self, alert: dict, outcome: dict) -> None:
        self.recorder.event(
            ev.ALERT_DELIVERY, step=alert.get("step"), data={"uid": alert.get("uid"), **outcome}
        )
