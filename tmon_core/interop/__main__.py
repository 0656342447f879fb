"""``python -m tmon_core.interop import ... | export RUN --format tensorboard|mlflow ...``: the
commands of ``interop.cli`` on their own, the same as ``tmon import`` / ``tmon export``."""

from __future__ import annotations

import argparse
import sys

from .cli import EXPORT_FORMATS, add_export_arguments, export_run, register


class _Url:
    def __init__(self, url):
        self.url = url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tmon_core.interop")
    p.add_argument("--store", help="database URL or SQLite file (default $TMON_STORE or sqlite:///tmon.db)")
    sub = p.add_subparsers(dest="command", required=True)
    handlers = register(sub)
    e = sub.add_parser("export", help="write a run as TensorBoard event files or into an MLflow store")
    e.add_argument("run", help="run id, unique id prefix, run name, or 'latest'")
    e.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    e.add_argument("-o", "--output", help="--format tensorboard: the log directory")
    e.add_argument("--store", dest="store_sub", help=argparse.SUPPRESS)
    add_export_arguments(e)
    args = p.parse_args(argv)
    url = getattr(args, "store_sub", None) or args.store
    if args.command == "export":
        from ..store import open_store

        with open_store(url, create=False) as s:
            run = s.latest_run() if args.run == "latest" else s.run(args.run)
            if run is None:
                raise KeyError(f"{s} holds no runs yet")
            return export_run(run, args)
    return handlers[args.command](_Url(url), args)


if __name__ == "__main__":
    sys.exit(main())
