"""``tmon watch``: a process of its own over a store, for the alerts a dying run cannot raise.

Every ``interval`` seconds the watcher reads the store's runs and alerts, with source "watch":

* ``lost``: a run still marked running whose heartbeat stopped (its ``heartbeat_timeout`` passed):
  killed (SIGKILL, the OOM killer), its node gone, or cut off from the store;
* ``stall``: a running run whose last step has not moved for ``stall_after`` seconds (its writer
  still beats, so the process lives, but training does not advance: a hung dataloader worker or
  collective) unless the run alerted the stall itself. Phases that are slow by nature get
  ``phase_factor`` times longer: a validation or evaluation the run opened and has not closed, and
  the time before the first step (data loading, compilation, a checkpoint loaded to resume); the
  alert says which phase it stalled in;
* ``finished`` / ``failed`` / ``interrupted``: a run a watcher saw running has ended, unless the
  run recorded that alert itself (the lifecycle rule of ``AlertEngine``, whose words these are).

Each alert is an ``alert`` event of the run, recorded together with a claim row
(``tmon_core.store.alerts.claim``) in one transaction: several watchers over one store, or a
watcher restarted, record and send each alert once (at most once: a watcher killed between the
claim and the delivery does not send it). Delivery goes through ``Notifier`` (apprise), one
message per run and rule per ``min_interval_s``; outcomes are recorded as ``alert_delivery``
events. A store that cannot be reached is said once; the watcher keeps polling and says when it
is back. Runs whose heartbeat stopped more than ``lookback`` seconds ago are old news: not alerted.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

from .. import events as ev
from ..store import alerts as store_alerts
from ..store.run import effective_status
from ..store.store import Store
from .engine import AlertEngine
from .notify import Notifier, notify_urls

LIFECYCLE_RULES = ("finished", "failed", "interrupted")


def _fmt_s(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.0f} min" if s >= 120 else f"{s:.0f} s"


class Watcher:
    """Watches the store at ``url`` (see the module docstring). ``notify``: apprise URLs, or None for
    ``$TMON_NOTIFY``; ``out``: where a line per alert and the store's outages are written."""

    def __init__(
        self,
        url: str | None = None,
        *,
        notify=None,
        interval: float = 10.0,
        stall_after: float = 600.0,
        phase_factor: float = 3.0,
        lookback: float = 86400.0,
        min_interval_s: float = 600.0,
        out=None,
        clock=time.time,
    ) -> None:
        for name, v in (("interval", interval), ("stall_after", stall_after), ("lookback", lookback)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be seconds > 0, received {name}={v!r}")
        if (
            isinstance(phase_factor, bool)
            or not isinstance(phase_factor, (int, float))
            or not phase_factor >= 1
        ):
            raise ValueError(f"phase_factor must be a number >= 1, received phase_factor={phase_factor!r}")
        self.phase_factor = float(phase_factor)
        self.url = url
        self.interval = float(interval)
        self.stall_after = float(stall_after)
        self.lookback = float(lookback)
        self.clock = clock
        self.out = out or sys.stderr
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.store: Store | None = None
        self._down: str | None = None  # what the store's outage said, while it lasts
        self._progress: dict[str, tuple] = {}  # run id -> (last step, since when it has not moved)
        self._outcomes: list[tuple] = []  # (run id, uid, outcome) from the delivery thread, to record
        self._lock = threading.Lock()
        self.notifier = Notifier(
            notify_urls(notify), min_interval_s=min_interval_s, on_outcome=self._on_outcome
        )

    # ------------------------------------------------------------------ the loop
    def run(self, once: bool = False, stop: threading.Event | None = None) -> None:
        """Poll until ``stop`` is set (or after one pass with ``once``); then deliver what is queued."""
        stop = stop or threading.Event()
        try:
            while True:
                self.poll()
                if once or stop.wait(self.interval):
                    break
        finally:
            self.close()

    def poll(self) -> list[dict]:
        """One pass over the store: the alerts raised (each with ``run_id`` and ``uid``)."""
        try:
            if self.store is None:
                self.store = Store(self.url, create=False)
            self._record_outcomes()
            raised = self._pass()
        except FileNotFoundError:
            raise  # no store there: a wrong path, not an outage
        except Exception as exc:
            self._outage(exc)
            return []
        if self._down is not None:
            self._say(f"tmon watch: the store {self.where()} is reachable again")
            self._down = None
        return raised

    def close(self) -> None:
        """Deliver what is queued and record the outcomes (while the store takes them)."""
        self.notifier.close()
        try:
            if self.store is not None:
                self._record_outcomes()
        except Exception:
            pass
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ one pass
    def _pass(self) -> list[dict]:
        now = self.clock()
        raised = []
        runs = store_alerts.watched_runs(self.store, now - self.lookback)
        for r in runs:
            if r["status"] != ev.RUNNING:
                raised += self._ended(r)
                continue
            status = effective_status(r["status"], r["heartbeat_at"], r["heartbeat_timeout"], now)
            if status == ev.LOST:
                self._progress.pop(r["id"], None)
                raised += self._lost(r, now)
                continue
            if store_alerts.SEEN_RUNNING not in r["claims"]:
                store_alerts.claim(self.store, r["id"], store_alerts.SEEN_RUNNING, None, watcher=self.name)
            raised += self._stall(r, now)
        live = {r["id"] for r in runs}
        for rid in list(self._progress):
            if rid not in live:
                del self._progress[rid]
        return raised

    def _lost(self, r: dict, now: float) -> list[dict]:
        key = f"lost@{r['heartbeat_at']!r}"  # a run that comes back and is lost again alerts again
        if key in r["claims"]:
            return []
        quiet = now - r["heartbeat_at"]
        where = f" (pid {r['pid']} on {r['host']})" if r["host"] else ""
        alert = {
            "rule": "lost",
            "level": "critical",
            "title": f"No heartbeat for {_fmt_s(quiet)}",
            "text": f"The run {r['name']}{where} is marked running but its last heartbeat was {_fmt_s(quiet)} ago "
            f"(timeout {_fmt_s(r['heartbeat_timeout'])}), at step {r['last_step']}: the process was "
            "killed (SIGKILL, the OOM killer), its node went away, or it cannot reach the store.",
            "step": r["last_step"],
            "wall_time": now,
            "evidence": {
                "heartbeat_at": r["heartbeat_at"],
                "heartbeat_timeout": r["heartbeat_timeout"],
                "quiet_s": quiet,
                "host": r["host"],
                "pid": r["pid"],
            },
        }
        return self._raise(r, key, alert)

    def _stall(self, r: dict, now: float) -> list[dict]:
        step = r["last_step"]
        seen = self._progress.get(r["id"])
        if seen is None:  # first sight: since the newest point (a restarted watcher loses no time)
            since = store_alerts.last_point_time(self.store, r["id"]) or r["created_at"]
            seen = self._progress[r["id"]] = (step, since)
        elif seen[0] != step:
            seen = self._progress[r["id"]] = (step, now)
        quiet = now - seen[1]
        key = f"stall@{step}"  # what every watcher agrees on: the step it stalled at
        if quiet <= self.stall_after or key in r["claims"]:
            return []
        phase = None
        if step is None:
            phase = ("the first step", seen[1])
        else:
            opened = store_alerts.open_phase(self.store, r["id"])
            if opened is not None and opened[1] >= seen[1] - 1.0:  # opened since the last step
                phase = opened
        limit = self.stall_after * (self.phase_factor if phase else 1.0)
        if quiet <= limit:
            return []
        if store_alerts.own_alerts(self.store, r["id"], ["stall"], since=seen[1]):
            return []  # the run said it itself
        where = "" if phase is None else f" in {phase[0]}"
        alert = {
            "rule": "stall",
            "level": "warning",
            "title": f"No new step for {_fmt_s(quiet)}{where}",
            "text": f"The run {r['name']} is alive (its heartbeat goes on) but has logged no new step for "
            f"{_fmt_s(quiet)}; the last was step {step}"
            + (
                f", and it has been{where} since {_fmt_s(now - phase[1])} ago (allowed {_fmt_s(limit)} there)"
                if phase
                else ""
            )
            + ". It may hang: a dataloader worker, a collective operation waiting for another rank, "
            "I/O, or a long evaluation or save.",
            "step": step,
            "wall_time": now,
            "evidence": {
                "quiet_s": quiet,
                "stall_after_s": limit,
                "last_progress_at": seen[1],
                "phase": None if phase is None else phase[0],
            },
        }
        return self._raise(r, key, alert)

    def _ended(self, r: dict) -> list[dict]:
        found = AlertEngine(rules=["lifecycle"], clock=self.clock).finish(
            r["status"], r["error"], r["last_step"]
        )
        if not found or store_alerts.own_alerts(self.store, r["id"], LIFECYCLE_RULES):
            # nothing to say about this status, or the run said it itself: only mark it done
            store_alerts.claim(self.store, r["id"], store_alerts.ENDED, None, watcher=self.name)
            return []
        alert = dict(found[0])
        alert["text"] = f"The run {r['name']}: {alert['text']}"
        return self._raise(r, store_alerts.ENDED, alert)

    def _raise(self, r: dict, key: str, alert: dict) -> list[dict]:
        uid = store_alerts.claim(self.store, r["id"], key, alert, watcher=self.name)
        if uid is None:
            return []  # another watcher claimed it first
        self._say(
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(alert['wall_time']))}  {alert['level']:<8}  "
            f"{alert['rule']:<11}  {r['name']} ({r['id']})  {alert['title']}",
            stream=sys.stdout,
        )
        # one message per run and rule per min_interval_s: the run's id joins the rule for the notifier
        self.notifier.send(
            {
                **alert,
                "rule": f"{r['id']}/{alert['rule']}",
                "title": f"{r['name']}: {alert['title']}",
                "run_id": r["id"],
                "uid": uid,
            }
        )
        return [{**alert, "run_id": r["id"], "uid": uid}]

    # ------------------------------------------------------------------ delivery outcomes
    def _on_outcome(self, alert: dict, outcome: dict) -> None:  # on the delivery thread
        with self._lock:
            self._outcomes.append((alert["run_id"], alert["uid"], outcome))

    def _record_outcomes(self) -> None:
        with self._lock:
            todo, self._outcomes = self._outcomes, []
        for i, (rid, uid, outcome) in enumerate(todo):
            try:
                store_alerts.record_delivery(self.store, rid, uid, outcome)
            except Exception:
                with self._lock:  # kept for the next pass
                    self._outcomes[:0] = todo[i:]
                raise

    # ------------------------------------------------------------------ saying things
    def where(self) -> str:
        """The store watched, without its password."""
        if self.store is not None:
            return repr(self.store).removeprefix("Store(").removesuffix(")")
        url = self.url or os.environ.get("TMON_STORE") or "tmon.db"
        return url.split("@")[-1] if "@" in url else url

    def _outage(self, exc: BaseException) -> None:
        if self._down is None:
            orig = getattr(exc, "orig", None)
            text = " ".join(str(orig if orig is not None else exc).split())[:300] or type(exc).__name__
            self._down = text
            self._say(
                f"tmon watch: cannot reach the store {self.where()} ({text}); still polling every "
                f"{self.interval:g} s"
            )

    def _say(self, line: str, stream=None) -> None:
        stream = stream or self.out
        try:
            print(line, file=stream, flush=True)
        except (OSError, ValueError):  # a closed pipe: the watcher goes on
            pass
