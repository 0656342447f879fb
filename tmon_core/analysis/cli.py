"""``tmon report [RUN] [--json] [--no-save]``: a run's health, findings and recommendations.

RUN is a run id, a unique prefix of one, a run name, or ``latest`` (the default). The report is
computed from the store and saved with the run; ``--json`` prints its structured form.

``tmon report --group NAME [--metric KEY] [--mode min|max] [--json]``: the group report of a sweep
(``group_report.py``): its trials, the best one, the settings that went with the outcome, the
trials that failed, went NaN, diverged or stalled.
"""

from __future__ import annotations

from . import report


def register(subparsers) -> dict:
    p = subparsers.add_parser(
        "report",
        help="health, findings and recommendations for a run",
        description="Analyse a run from the store: health score, findings with evidence, "
        "ranked recommendations in the framework's own settings.",
    )
    p.add_argument(
        "run", nargs="?", default=None, help="run id, unique id prefix, run name, or 'latest' (default)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-save", action="store_true", help="do not store the report with the run")
    p.add_argument(
        "--group", help="the group report of this group's runs (a sweep's trials) instead of one run's"
    )
    p.add_argument(
        "--metric", help="with --group: the metric trials are judged by (default val_loss, eval_loss or loss)"
    )
    p.add_argument(
        "--mode",
        choices=("min", "max"),
        help="with --group: best is the lowest or highest (default: from the name)",
    )
    return {"report": cmd_report}


def cmd_report(store, args) -> int:
    from ..cli import resolve_run

    if args.group is not None:
        if args.run is not None:
            raise ValueError(
                f"give a run or --group, not both (received {args.run!r} and --group {args.group!r})"
            )
        from .group_report import group_report

        gr = group_report(args.group, args.metric, args.mode, store=store.opened(), save=not args.no_save)
        print(gr.to_json(indent=1) if args.json else str(gr))
        return 0
    if args.metric or args.mode:
        raise ValueError("--metric and --mode go with --group (a run's report judges every metric)")

    run = resolve_run(store, args.run or "latest")
    r = report(run, save=not args.no_save)
    print(r.to_json(indent=1) if args.json else str(r))
    return 0
