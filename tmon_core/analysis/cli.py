"""``tmon report [RUN] [--json] [--no-save]``: a run's health, findings and recommendations.

RUN is a run id, a unique prefix of one, a run name, or ``latest`` (the default). The report is
computed from the store and saved with the run; ``--json`` prints its structured form.
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
        "run", nargs="?", default="latest", help="run id, unique id prefix, run name, or 'latest' (default)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-save", action="store_true", help="do not store the report with the run")
    return {"report": cmd_report}


def cmd_report(store, args) -> int:
    from ..cli import resolve_run

    run = resolve_run(store, args.run)
    r = report(run, save=not args.no_save)
    print(r.to_json(indent=1) if args.json else str(r))
    return 0
