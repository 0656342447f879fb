"""``tmon alerts RUN [--json] [--since 10m]`` and ``tmon watch [--notify URL ...] [--interval 10] [--stall-after 600]
[--phase-factor 3]``.

``tmon alerts`` prints a run's alerts, one line each (``--json``: a list of objects, for scripts
and agents); it only reads. ``tmon watch`` is a long-running process over the store that alerts on
runs that can no longer speak (``tmon_core.alerts.watch``); ``--once`` does one pass, for cron.
Both take the store as every command does (``--store URL``, default ``$TMON_STORE``).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time

DEFAULT_INTERVAL = 10.0
DEFAULT_STALL_AFTER = 600.0


def register(subparsers) -> dict:
    a = subparsers.add_parser(
        "alerts",
        help="the alerts of a run",
        description="List a run's alerts: raised by the "
        "run itself or by tmon watch, with their delivery outcome.",
    )
    a.add_argument(
        "run", nargs="?", default="latest", help="run id, unique id prefix, run name, or 'latest' (default)"
    )
    a.add_argument("--json", action="store_true", help="print a JSON list")
    a.add_argument("--since", help="only alerts raised in the last 10m, 12h, 2d ...")
    w = subparsers.add_parser(
        "watch",
        help="alert on runs that died, stall or end, from a process of its own",
        description="Poll the store and alert on runs whose heartbeat stopped (lost), that make "
        "no progress (stall) or that ended, delivering through apprise URLs "
        "(--notify, or $TMON_NOTIFY). Several watchers on one store send each "
        "alert once; a restarted one sends nothing twice. Ctrl-C ends it.",
    )
    w.add_argument(
        "--notify",
        action="append",
        metavar="URL",
        help="an apprise URL (slack://..., json://host/path, mailto://...); repeat for more "
        "(default $TMON_NOTIFY)",
    )
    w.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL, help="seconds between polls (default 10)"
    )
    w.add_argument(
        "--stall-after",
        type=float,
        default=DEFAULT_STALL_AFTER,
        help="seconds without a new step before a running run is stalled (default 600)",
    )
    w.add_argument(
        "--phase-factor",
        type=float,
        default=3.0,
        help="times longer allowed in a validation or evaluation, and before the first step (default 3)",
    )
    w.add_argument(
        "--lookback",
        default="1d",
        help="runs whose heartbeat stopped longer ago than this are not alerted (default 1d)",
    )
    w.add_argument("--once", action="store_true", help="one pass, then exit (for cron and tests)")
    return {"alerts": cmd_alerts, "watch": cmd_watch}


def cmd_alerts(store, args) -> int:
    from ..cli import resolve_run
    from ..store.retention import parse_duration

    since = None
    if args.since:
        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as exc:
            raise ValueError(f"--since: {exc}") from None
    run = resolve_run(store, args.run)
    df = run.alerts(since=since)
    if args.json:
        rows = [{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")]
        for r in rows:
            r["run_id"] = run.id
        print(json.dumps(rows, indent=1))
        return 0
    if df.empty:
        print(f"no alerts for run {run.id}" + (f" in the last {args.since}" if args.since else ""))
        return 0
    for r in df.itertuples():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.time))
        step = "-" if r.step is None or r.step is _NA() else str(r.step)
        # (str(): an alert event written by other code may lack a field)
        print(
            f"{when}  {str(r.level):<8}  {str(r.rule):<11}  step {step:<8}  {_delivered(r.delivered):<13}  "
            f"{r.title}" + ("  [watch]" if r.source == "watch" else "")
        )
    return 0


def _NA():
    import pandas as pd

    return pd.NA


def _delivered(v) -> str:
    return {True: "delivered", False: "not delivered", "held": "held back"}.get(v, "recorded")


def _plain(v):
    """A DataFrame cell as JSON: pandas' NA as null, numpy numbers as Python ones."""
    if v is None or v is _NA():
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def cmd_watch(store, args) -> int:
    import os

    from ..store.engine import resolve_url
    from ..store.retention import parse_duration
    from ..store.store import sqlite_path
    from .watch import Watcher

    path = sqlite_path(resolve_url(store.url))
    if path is not None and not os.path.isfile(path):
        store.engine  # noqa: B018 (the store's own "no tmon store at PATH", as every read command says it)
    try:
        lookback = parse_duration(args.lookback)
    except ValueError as exc:
        raise ValueError(f"--lookback: {exc}") from None
    watcher = Watcher(
        store.url,
        notify=args.notify,
        interval=args.interval,
        stall_after=args.stall_after,
        phase_factor=args.phase_factor,
        lookback=lookback,
    )
    stop = threading.Event()
    previous = (
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if threading.current_thread() is threading.main_thread()
        else None
    )
    if not args.once:
        print(
            f"tmon watch: watching {watcher.where()} every {args.interval:g} s "
            f"({'delivering to ' + ', '.join(watcher.notifier.targets) if watcher.notifier.enabled else 'no delivery: recording only'}); "
            "Ctrl-C ends it",
            file=sys.stderr,
            flush=True,
        )
    try:
        watcher.run(once=args.once, stop=stop)
    except KeyboardInterrupt:  # Ctrl-C: run() closed the watcher on its way out
        print("tmon watch: stopped", file=sys.stderr)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
