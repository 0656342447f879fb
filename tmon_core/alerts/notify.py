"""Delivering alerts through apprise (Slack, Discord, Teams, e-mail, ntfy, JSON webhooks and ~100 more).

apprise is optional (``pip install "tmon[alerts]"``): without it alerts stay in the store and the
widget, and one warning says how to enable delivery. Delivery runs on its own daemon thread, so
``send`` never blocks or raises into training; each message is retried with backoff; a rule sends
at most one message per ``min_interval_s`` (10 minutes) per run, and the next one it sends says how
many were held back meanwhile (``close`` sends what is still held). Every outcome goes to
``on_outcome`` (the recorder stores it). URLs hold secrets (webhook tokens, passwords): they are
never printed or stored in clear, only as apprise's privacy form (``slack://T...Y/B...Z/****``).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
import warnings

log = logging.getLogger("tmon")

ENV = "TMON_NOTIFY"  # URLs separated by commas, spaces or newlines, or the path of a file of them
_LEVEL_TYPES = {"info": "info", "warning": "warning", "critical": "failure"}


class TMonAlertWarning(RuntimeWarning):
    """Alerts could not be delivered (apprise missing, a URL it does not know); they are still recorded."""


def notify_urls(notify=None) -> list[str]:
    """The delivery URLs: ``notify`` (a URL, a list of them, or None for ``$TMON_NOTIFY``, which may
    also name a file with one URL per line)."""
    if notify is None:
        notify = os.environ.get(ENV, "")
        if notify and os.path.isfile(notify.strip()):
            with open(notify.strip(), encoding="utf-8") as f:
                notify = "\n".join(
                    line for line in f.read().splitlines() if not line.lstrip().startswith("#")
                )
    if isinstance(notify, str):
        notify = [u for u in re.split(r"[\s,]+", notify) if u]
    urls = list(notify or ())
    for u in urls:
        if not isinstance(u, str) or "://" not in u:
            raise ValueError(
                f"notify takes apprise URLs such as 'slack://...' or 'json://host/path', "
                f"received {(u[:12] + '…') if isinstance(u, str) else repr(u)} (cut: it may hold a secret)"
            )
    return urls


def redact(url: str) -> str:
    """``url`` with its secrets masked: apprise's privacy form when apprise knows the URL, else the
    scheme and host only."""
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin:
            return plugin.url(privacy=True)
    except Exception:
        pass
    m = re.match(r"^([A-Za-z0-9+.-]+)://(?:[^@/]*@)?([^/:?#]*)", url)
    return f"{m.group(1)}://{m.group(2)[:3]}…/****" if m else "****"


class Notifier:
    """Sends alerts to ``urls`` off the training thread (see the module docstring)."""

    def __init__(
        self,
        urls: list[str],
        *,
        label: str = "",
        min_interval_s: float = 600.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        on_outcome=None,
        clock=time.monotonic,
    ) -> None:
        self.urls = list(urls)
        self.targets = [redact(u) for u in self.urls]
        self.label = label
        self.min_interval_s = float(min_interval_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.on_outcome = on_outcome
        self.clock = clock
        self._apprise = None
        self._queue: queue.Queue = queue.Queue()
        self._last_sent: dict[str, float] = {}
        self._held: dict[str, list[dict]] = {}
        self._thread: threading.Thread | None = None
        self.enabled = False
        if not self.urls:
            return
        try:
            import apprise
        except ImportError:
            warnings.warn(
                "tmon: alerts are recorded but not delivered: delivery needs apprise "
                '(pip install "tmon[alerts]")',
                TMonAlertWarning,
                stacklevel=3,
            )
            return
        ap = apprise.Apprise()
        for url, shown in zip(self.urls, self.targets):
            if not ap.add(url):
                warnings.warn(
                    f"tmon: apprise does not know the notify URL {shown}; it is skipped",
                    TMonAlertWarning,
                    stacklevel=3,
                )
        if not len(ap):
            return
        self._apprise = ap
        self.enabled = True
        self._thread = threading.Thread(target=self._run, name="tmon-notify", daemon=True)
        self._thread.start()

    def send(self, alert: dict) -> None:
        """Queue ``alert`` (a dict with rule, level, title, text, step) for delivery; never blocks."""
        if self.enabled:
            self._queue.put(("alert", alert))

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, and a summary of what is held back, for up to ``timeout`` seconds."""
        if self._thread is None:
            return
        self._queue.put(("close", None))
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the delivery thread
    def _run(self) -> None:
        while True:
            kind, alert = self._queue.get()
            try:
                if kind == "close":
                    for held in list(self._held.values()):
                        if held:
                            self._deliver(held[-1], held[:-1], summary=True)
                    self._held.clear()
                    return
                rule = alert["rule"]
                now = self.clock()
                last = self._last_sent.get(rule)
                if last is not None and now - last < self.min_interval_s:
                    self._held.setdefault(rule, []).append(alert)
                    self._outcome(
                        alert, None, f"held back: one message per rule every {self.min_interval_s:.0f} s"
                    )
                    continue
                self._last_sent[rule] = now
                self._deliver(alert, self._held.pop(rule, []))
            except Exception as exc:  # the thread must outlive any one alert
                log.warning("tmon: alert delivery failed: %s", exc)

    def _deliver(self, alert: dict, held: list[dict], summary: bool = False) -> None:
        import apprise

        title = f"[tmon {alert['level']}] {alert['title']}" + (f" · {self.label}" if self.label else "")
        body = alert["text"]
        if alert.get("step") is not None:
            body += f"\n(step {alert['step']})"
        if held:
            body += (
                f"\n{len(held)} more alert{'s' * (len(held) != 1)} of this kind "
                f"{'were' if len(held) != 1 else 'was'} held back since the last message."
            )
        kind = getattr(apprise.NotifyType, _LEVEL_TYPES.get(alert["level"], "info").upper())
        reason = None
        for attempt in range(self.retries):
            with apprise.LogCapture(level=logging.WARNING) as captured:
                ok = bool(self._apprise.notify(body=body, title=title, notify_type=kind))
            if ok:
                break
            reason = _strip_secrets(
                captured.getvalue().strip().splitlines()[-1:] or ["delivery failed"], self.urls
            )
            if attempt + 1 < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        self._outcome(alert, ok, None if ok else reason, held=len(held), summary=summary)

    def _outcome(self, alert: dict, delivered: bool | None, reason: str | None, **extra) -> None:
        if self.on_outcome is None:
            return
        try:
            self.on_outcome(
                alert, {"delivered": delivered, "reason": reason, "targets": self.targets, **extra}
            )
        except Exception as exc:
            log.warning("tmon: recording an alert's delivery failed: %s", exc)


def _strip_secrets(lines: list[str], urls: list[str]) -> str:
    text = " ".join(lines)[:500]
    for u in urls:  # a library's message may echo the URL it failed on
        for part in re.split(r"[/:@?&=]+", u.split("://", 1)[-1]):
            if len(part) >= 6:
                text = text.replace(part, "****")
    return text
