"""The ``tmon`` command: look at runs from a terminal.

    tmon runs [--group NAME] [--json]  the runs of the store (or of one group), newest first
    tmon groups [--metric KEY]         the groups of runs (sweeps, experiments), with counts
    tmon show RUN                      status, steps, duration, last metrics, peak memory
    tmon export RUN --format csv|json|parquet|tensorboard|mlflow [-o FILE] [--tracking-uri URI]
    tmon prune --older-than 30d [--keep-checkpoints] [--dry-run]
    tmon delete RUN [--keep-checkpoints] [--dry-run]

Features add their own subcommands (control: set, checkpoint, rollback, stop, requests;
diff: diff), registered through ``COMMAND_MODULES``.

RUN is a run id, a unique prefix of one, a run name, or ``latest``. Every command takes
``--store URL`` (default ``$TMON_STORE`` or ``sqlite:///tmon.db``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from .store import Run, Store, open_store


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _fmt_duration(s: float | None) -> str:
    if s is None or s != s:
        return "-"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def _fmt_bytes(n: float | None) -> str:
    if n is None or n != n:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _fmt_value(v: float) -> str:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return f"{v:.6g}"


def resolve_run(store: Store, ref: str) -> Run:
    if ref == "latest":
        run = store.latest_run()
        if run is None:
            raise KeyError(f"{store} holds no runs yet")
        return run
    return store.run(ref)


def cmd_runs(store: Store, args) -> int:
    group = getattr(args, "group", None)
    df = store.runs(group=group)
    if getattr(args, "json", False):
        print(json.dumps([_run_json(r) for r in df.to_dict("records")], indent=1))
        return 0
    if df.empty:
        print(f"no runs in group {group!r} of {store}" if group is not None else f"no runs in {store}")
        return 0
    grouped = df.group.notna().any()  # a GROUP column only where some run has one
    rows = [
        ("ID", "NAME", "STATUS", "FRAMEWORK")
        + (("GROUP",) if grouped else ())
        + ("STARTED", "DURATION", "STEPS")
    ]
    for r in df.itertuples():
        rows.append(
            (r.id, r.name, r.status, r.framework or "-")
            + ((_text(r.group),) if grouped else ())
            + (
                _fmt_time(r.created_at),
                _fmt_duration(r.duration),
                "-" if r.steps is None or r.steps != r.steps else str(int(r.steps)),
            )
        )
    _print_table(rows)
    return 0


def _text(v) -> str:
    """A cell of text that may be missing (None, or pandas' NaN)."""
    return "-" if v is None or v != v else str(v)


def _print_table(rows: list[tuple]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _run_json(r: dict) -> dict:
    """One row of ``Store.runs()`` as plain JSON (missing values as null)."""
    out = {}
    for k, v in r.items():
        if isinstance(v, float) and v != v:
            v = None
        elif hasattr(v, "item") and not isinstance(v, (list, dict, str)):
            v = v.item()  # numpy scalars
        out[k] = v
    if out.get("steps") is not None:
        out["steps"] = int(out["steps"])
    return out


def cmd_groups(store: Store, args) -> int:
    from .run_groups import groups

    df = groups(store.opened())
    best = _group_best(store, df.group.tolist(), args.metric, args.mode) if args.metric else {}
    if args.json:
        out = [_run_json(r) for r in df.to_dict("records")]
        for g in out:
            if args.metric:
                g["best"] = best.get(g["group"])
        print(json.dumps(out, indent=1))
        return 0
    if df.empty:
        print(f"no groups in {store} (runs get one with TMonCallback(group=...) or $TMON_GROUP)")
        return 0
    head = ("GROUP", "RUNS", "RUNNING", "COMPLETED", "FAILED", "STEPS", "LAST ACTIVITY")
    rows = [head + ((f"BEST {args.metric}",) if args.metric else ())]
    for r in df.itertuples():
        row = (
            r.group,
            str(r.runs),
            str(r.running),
            str(r.completed),
            str(r.failed),
            str(r.steps),
            _fmt_time(r.last_activity),
        )
        if args.metric:
            b = best.get(r.group)
            row += (f"{_fmt_value(b['value'])} ({b['name']})" if b else "-",)
        rows.append(row)
    _print_table(rows)
    return 0


def _group_best(store: Store, names: list[str], metric: str, mode: str) -> dict:
    """group -> {"run", "name", "value", "step"} of its best run by ``metric`` (None: no run has it)."""
    from .analysis.group_report import best_value

    out = {}
    for name in names:
        found = None
        for r in store.runs(group=name).itertuples():
            b = best_value(store.run(r.id), metric, mode)
            if b is not None and (
                found is None or (b[0] < found["value"] if mode == "min" else b[0] > found["value"])
            ):
                found = {"run": r.id, "name": r.name, "value": b[0], "step": b[1]}
        out[name] = found
    return out


def cmd_show(store: Store, args) -> int:
    run = resolve_run(store, args.run)
    info = run.info()
    end = info["ended_at"] or info["heartbeat_at"] or time.time()
    print(f"run       {info['id']}  ({info['name']})")
    print(f"status    {info['status']}")
    print(f"framework {info['framework'] or '-'}")
    if info.get("group") is not None:
        print(f"group     {info['group']}")
    print(f"host      {info['host'] or '-'} (pid {info['pid']})")
    print(f"started   {_fmt_time(info['created_at'])}   duration {_fmt_duration(end - info['created_at'])}")
    steps = "-" if info["steps"] is None else str(info["steps"])
    total = f" of {info['total_steps']}" if info.get("total_steps") else ""
    print(f"steps     {steps}{total}")
    if info["dropped_points"]:
        print(f"dropped   {info['dropped_points']} points could not be written (the store was failing)")
    if info["error"]:
        print(f"error     {info['error'].get('type')}: {info['error'].get('message', '')[:300]}")
    latest = run.latest()
    if latest:
        print("last metrics")
        width = max(len(k) for k in latest)
        for key, (step, value) in latest.items():
            print(f"  {key.ljust(width)}  {_fmt_value(value):>12}  (step {step})")
    samples = run.samples()
    if not samples.empty:
        peak = samples.loc[samples.ram_used.idxmax()] if samples.ram_used.notna().any() else None
        print("peak memory")
        if peak is not None:
            print(f"  host RAM used   {_fmt_bytes(peak.ram_used)} of {_fmt_bytes(peak.ram_total)}")
        print(f"  process RSS     {_fmt_bytes(samples.proc_rss.max())}")
        if samples.children_count.fillna(0).max() > 0:
            print(
                f"  workers RSS     {_fmt_bytes(samples.children_rss.max())} "
                f"({int(samples.children_count.max())} processes at most)"
            )
        if samples.swap_used.notna().any():
            print(f"  swap used       {_fmt_bytes(samples.swap_used.max())}")
    nodes = run.nodes()
    if len(nodes) > 1:
        print("per node")
        for n in nodes.itertuples():
            gpu = (
                f", {n.gpus} GPU peak {_fmt_bytes(n.gpu_mem_used_peak)} of {_fmt_bytes(n.gpu_mem_total)}"
                if n.gpus
                else ""
            )
            print(
                f"  node {n.node_rank} ({n.host}): RAM {_fmt_bytes(n.ram_used_peak)} of {_fmt_bytes(n.ram_total)}, "
                f"process {_fmt_bytes(n.proc_rss_peak)}, CPU {n.cpu_percent_mean:.0f}% mean{gpu}"
            )
    else:
        gpus = run.gpu_samples()
        for gpu, g in gpus.groupby("gpu"):
            print(
                f"  GPU {gpu} memory    {_fmt_bytes(g.mem_used.max())} of {_fmt_bytes(g.mem_total.max())}"
                f"  ({g.name.iloc[0]})"
            )
    ckpts = run.checkpoints()
    if not ckpts.empty:
        print(f"checkpoints {len(ckpts)} (last: {ckpts.path.iloc[-1]})")
    return 0


def cmd_export(store: Store, args) -> int:
    from .interop.cli import EXPORT_FORMATS, export_run

    if args.format in EXPORT_FORMATS:  # another tool's store: tensorboard event files, an MLflow run
        return export_run(resolve_run(store, args.run), args)
    if args.output:
        _check_output(args.output)  # before the export's work, not after it
    run = resolve_run(store, args.run)
    frames = []
    for key in run.metric_keys():
        df = run.metrics(key)
        df.insert(0, "key", key)
        frames.append(df)
    import pandas as pd

    long = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["key", "step", "value", "wall_time"])
    )
    out = args.output
    if args.format == "csv":
        text = long.to_csv(index=False)
        _write_text(out, text)
    elif args.format == "json":
        info = run.info()
        doc = {
            "run": {
                k: info[k]
                for k in (
                    "id",
                    "name",
                    "status",
                    "framework",
                    "created_at",
                    "ended_at",
                    "last_step",
                    "total_steps",
                    "host",
                    "group",
                    "config",
                    "error",
                )
            },
            "metrics": {
                key: [[int(s), _json_num(v), float(w)] for s, v, w in zip(g.step, g.value, g.wall_time)]
                for key, g in long.groupby("key", sort=True)
            },
            "events": [
                {k: (None if isinstance(v, float) and v != v else v) for k, v in e.items()}
                for e in run.events().to_dict("records")
            ],
            "checkpoints": run.checkpoints().to_dict("records"),
        }
        _write_text(out, json.dumps(doc, indent=1, default=str))
    else:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            print(
                "tmon export --format parquet needs pyarrow: pip install 'tmon[parquet]' (or pip install pyarrow)",
                file=sys.stderr,
            )
            return 2
        if not out:
            print("tmon export --format parquet needs an output file: -o FILE.parquet", file=sys.stderr)
            return 2
        long.to_parquet(out, index=False)
    if out:
        print(
            f"wrote {len(long)} points of {long.key.nunique() if len(long) else 0} metrics to {out}",
            file=sys.stderr,
        )
    return 0


def cmd_prune(store: Store, args) -> int:
    from .store.retention import prune

    rep = prune(store, args.older_than, keep_checkpoints=args.keep_checkpoints, dry_run=args.dry_run)
    _print_removal(rep, args.dry_run)
    return 0


def cmd_delete(store: Store, args) -> int:
    from .store.retention import delete_run

    rep = delete_run(
        store,
        resolve_run(store, args.run).id,
        delete_checkpoints=not args.keep_checkpoints,
        dry_run=args.dry_run,
    )
    _print_removal(rep, args.dry_run)
    return 0


def _print_removal(rep: dict, dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    if not rep["runs"]:
        print("no run is old enough")
        return
    rows = ", ".join(f"{n} {t.removeprefix('tmon_')}" for t, n in rep["rows"].items() if n)
    print(f"{verb} from {len(rep['runs'])} run(s) ({', '.join(rep['runs'][:10])}): {rows or 'no rows'}")
    for path in rep["files"]:
        print(f"  {verb} {path}")


def _json_num(v: float):
    return v if math.isfinite(v) else str(v)  # JSON has no NaN/inf: "nan", "inf", "-inf"


def _check_output(path: str) -> None:
    if os.path.isdir(path):
        raise _UserError(
            f"cannot write {path}: it is a directory; give a file name (-o {os.path.join(path, 'run.csv')})"
        )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _UserError(
            f"cannot write {path}: the directory {os.path.dirname(path) or parent} does not exist"
        )


def _write_text(path: str | None, text: str) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


#: modules that add subcommands: each has ``register(subparsers) -> {name: handler(store, args)}``
COMMAND_MODULES = (
    "tmon_core.control.cli",
    "tmon_core.diff.cli",
    "tmon_core.analysis.cli",
    "tmon_core.alerts.cli",
    "tmon_core.interop.cli",
)


def _extra_commands(sub) -> dict:
    import importlib

    handlers = {}
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that feature is not part of this build
            raise
        handlers.update(module.register(sub))
    return handlers


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    p = argparse.ArgumentParser(prog="tmon", description="Look at and steer tmon training runs.")
    p.add_argument("--store", help="database URL or SQLite file (default $TMON_STORE or sqlite:///tmon.db)")
    sub = p.add_subparsers(dest="command", required=True)
    ru = sub.add_parser("runs", help="list the runs, newest first")
    ru.add_argument("--group", help="only the runs of this group (a sweep, an experiment)")
    ru.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    gr = sub.add_parser("groups", help="list the groups of runs, most recently active first")
    gr.add_argument("--metric", help="also show each group's best run by this metric (e.g. val_loss)")
    gr.add_argument(
        "--mode", choices=("min", "max"), default="min", help="best is the lowest (min) or highest"
    )
    gr.add_argument("--json", action="store_true", help="print the groups as a JSON list")
    s = sub.add_parser("show", help="summary of one run")
    s.add_argument("run", help="run id, unique id prefix, run name, or 'latest'")
    e = sub.add_parser("export", help="export a run's metrics")
    e.add_argument("run", help="run id, unique id prefix, run name, or 'latest'")
    e.add_argument("--format", choices=("csv", "json", "parquet", "tensorboard", "mlflow"), default="csv")
    e.add_argument(
        "-o",
        "--output",
        help="output file (default: standard output; required for parquet; "
        "the log directory for tensorboard)",
    )
    from .interop.cli import add_export_arguments

    add_export_arguments(e)
    pr = sub.add_parser("prune", help="remove points, samples, logs and checkpoint files of old runs")
    pr.add_argument("--older-than", required=True, help="30d, 12h, 90m ...: runs that ended longer ago")
    pr.add_argument("--keep-checkpoints", action="store_true", help="leave checkpoint files on disk")
    pr.add_argument("--dry-run", action="store_true", help="only list what would go")
    de = sub.add_parser("delete", help="delete a run and everything it recorded")
    de.add_argument("run", help="run id, unique id prefix, run name, or 'latest'")
    de.add_argument("--keep-checkpoints", action="store_true", help="leave checkpoint files on disk")
    de.add_argument("--dry-run", action="store_true", help="only list what would go")
    handlers = {
        "runs": cmd_runs,
        "groups": cmd_groups,
        "show": cmd_show,
        "export": cmd_export,
        "prune": cmd_prune,
        "delete": cmd_delete,
        **_extra_commands(sub),
    }
    # --store after the subcommand works too
    for sp in sub.choices.values():
        sp.add_argument("--store", dest="store_sub", help=argparse.SUPPRESS)
    return p, handlers


class _LazyStore:
    """Opens the store on first use, so a command that needs none (``tmon diff a.ckpt b.ckpt``)
    creates no ``tmon.db`` in the working directory."""

    def __init__(self, url: str | None):
        self.url = url
        self._store: Store | None = None

    def opened(self) -> Store:
        """The store itself (opened now if it was not), for code that wants a ``Store``."""
        self.engine  # noqa: B018  (opens it, with the errors a user is told)
        return self._store

    def __getattr__(self, name):
        if self._store is None:
            try:
                # no command creates a store: each reads runs that a store must already hold
                self._store = open_store(self.url, create=False)
            except FileNotFoundError as exc:
                raise _CannotOpen(str(exc)) from exc
            except Exception as exc:
                raise _CannotOpen(f"cannot open store {self.url or '(default)'}: {_one_line(exc)}") from exc
        return getattr(self._store, name)

    def __repr__(self) -> str:
        return repr(self._store) if self._store is not None else f"Store({self.url or 'default'!r})"

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class _CannotOpen(Exception):
    pass


class _UserError(Exception):
    """A command cannot do what was asked; the message says why (exit status 2)."""


def _one_line(exc: BaseException) -> str:
    """An exception as one line: a database error without SQLAlchemy's SQL and background link."""
    orig = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError: the driver's own error
    text = str(orig if orig is not None else exc) or type(exc).__name__
    return " ".join(text.split())[:500]


def _store_error(exc: BaseException, store: _LazyStore) -> str:
    """What a database error during a command means to its user."""
    from .store.engine import DEFAULT_BUSY_TIMEOUT_MS

    where = store.url or os.environ.get("TMON_STORE") or "tmon.db"
    text = _one_line(exc)
    if "locked" in text or "busy" in text:
        return (
            f"the store {where} is locked: another process held its write lock for longer than the busy "
            f"timeout ({DEFAULT_BUSY_TIMEOUT_MS / 1000:g} s); try again when it is done"
        )
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return f"the store {where} is damaged ({text}); its undamaged runs may still read with sqlite3's .recover"
    return f"store error on {where}: {text}"


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    store = _LazyStore(getattr(args, "store_sub", None) or args.store)
    try:
        return handlers[args.command](store, args)
    except (_CannotOpen, _UserError) as exc:
        print(f"tmon: {exc}", file=sys.stderr)
        return 2
    except (KeyError, ValueError) as exc:
        print(f"tmon: {_one_line(exc.args[0]) if exc.args else exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `tmon export RUN | head`: the reader left, which is fine
        sys.stderr.close()
        return 0
    except OSError as exc:
        what = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else _one_line(exc)
        print(f"tmon: {what}", file=sys.stderr)
        return 1
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError) or type(exc).__module__ == "sqlite3":
            print(f"tmon: {_store_error(exc, store)}", file=sys.stderr)
            return 1
        if os.environ.get("TMON_DEBUG"):
            raise
        # a bug of tmon's rather than the user's: still one line, with the way to see more
        print(
            f"tmon: {args.command} failed: {type(exc).__name__}: {_one_line(exc)} (TMON_DEBUG=1 shows the "
            f"traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        try:
            store.close()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
