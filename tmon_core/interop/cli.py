"""``tmon import ...`` (TensorBoard, MLflow, CSV logs -> runs) and, for ``tmon export``, the
``tensorboard`` and ``mlflow`` formats.

    tmon import tensorboard runs/exp1/
    tmon import mlflow --tracking-uri sqlite:///mlflow.db [--experiment NAME]
    tmon import csv lightning_logs/version_3/metrics.csv     # or Keras' CSVLogger file, trainer_state.json
    tmon export RUN --format tensorboard -o tb/               # and --format mlflow --tracking-uri URI

``register`` adds ``import`` (and ``exporter`` when the exporter is installed); ``export_run``
is what ``tmon export`` calls for the two formats it adds (``EXPORT_FORMATS``).
"""

from __future__ import annotations

import argparse
import os

EXPORT_FORMATS = ("tensorboard", "mlflow")


def register(subparsers) -> dict:
    p = subparsers.add_parser(
        "import",
        help="import TensorBoard logs, an MLflow store or CSV logs as runs",
        description="Import runs recorded by other tools; each becomes an ordinary tmon "
        "run. Importing the same source again does not duplicate it.",
    )
    kinds = p.add_subparsers(dest="source_kind", required=True)
    tb = kinds.add_parser("tensorboard", help="TensorBoard event files: one run per directory holding them")
    tb.add_argument("path", help="a log directory (searched recursively) or an event file")
    ml = kinds.add_parser("mlflow", help="an MLflow tracking store, through MLflow's client")
    ml.add_argument(
        "--tracking-uri", required=True, help="sqlite:///mlflow.db, a file store path, http://..."
    )
    ml.add_argument("--experiment", help="only this experiment (by name)")
    cs = kinds.add_parser("csv", help="Lightning or Keras CSVLogger file, or HF trainer_state.json")
    cs.add_argument("path", help="the file, or a directory holding metrics.csv or trainer_state.json")
    for sp in (tb, cs):
        sp.add_argument("--name", help="the run's name (default: from the path)")
    for sp in (tb, ml, cs):
        # SUPPRESS: unset here must not hide a --store given before the source kind
        sp.add_argument(
            "--store",
            dest="store_sub",
            default=argparse.SUPPRESS,
            help="database URL or SQLite file (as tmon --store)",
        )
    handlers = {"import": cmd_import}
    try:
        from . import exporter
    except ImportError:
        return handlers
    handlers.update(exporter.register(subparsers))
    return handlers


def _url(store) -> str | None:
    """The store URL of the CLI's store object (its ``url``), or None for the default store."""
    return getattr(store, "url", None)


def cmd_import(store, args) -> int:
    url = getattr(args, "store_sub", None) or _url(store)
    if args.source_kind == "tensorboard":
        from .tensorboard import import_tensorboard

        results = import_tensorboard(args.path, url, name=args.name)
    elif args.source_kind == "mlflow":
        from .mlflow_store import import_mlflow

        results = import_mlflow(args.tracking_uri, url, experiment=args.experiment)
    else:
        from .csvlog import import_csv

        results = import_csv(args.path, url, name=args.name)
    if not results:
        print("nothing to import")
    for r in results:
        print(r)
    return 0


def add_export_arguments(parser) -> None:
    """The options ``tmon export`` needs for ``--format tensorboard|mlflow``."""
    parser.add_argument("--tracking-uri", help="--format mlflow: the MLflow store to write to")
    parser.add_argument("--experiment", default="tmon", help="--format mlflow: the experiment (default tmon)")


def export_run(run, args) -> int:
    """``tmon export RUN --format tensorboard -o DIR`` / ``--format mlflow --tracking-uri URI``."""
    if args.format == "tensorboard":
        from .tensorboard import export_tensorboard

        if not args.output:
            raise ValueError(
                "--format tensorboard needs -o DIR, the log directory to write the event file in"
            )
        print(export_tensorboard(run, args.output))
    elif args.format == "mlflow":
        from .mlflow_store import export_mlflow

        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ValueError("--format mlflow needs --tracking-uri URI (or $MLFLOW_TRACKING_URI)")
        print(f"MLflow run {export_mlflow(run, uri, experiment=args.experiment)} in {uri}")
    else:
        raise ValueError(f"unknown export format {args.format!r}; these are {', '.join(EXPORT_FORMATS)}")
    return 0
