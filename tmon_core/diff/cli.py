"""``tmon diff A B [--top 20] [--json]``: what changed between two checkpoints, in a terminal.

A and B are recorded checkpoint ids (the ``id`` column of a run's checkpoints, in the store of
``--store``) or paths to checkpoint files or directories. An argument made only of digits is an
id; write ``./12`` for a file named ``12``. Exit status 2 when a checkpoint cannot be read.
"""

from __future__ import annotations

import json
import math
import sys

from ..checkpoints import CheckpointError
from .engine import diff


def register(subparsers) -> dict:
    p = subparsers.add_parser(
        "diff",
        help="what changed between two checkpoints, tensor by tensor",
        description="Compare two checkpoints: tensors, parameters, metrics.",
    )
    p.add_argument("a", help="the earlier checkpoint: a recorded checkpoint id, or a file or directory")
    p.add_argument("b", help="the later checkpoint: a recorded checkpoint id, or a file or directory")
    p.add_argument(
        "--top", type=int, default=20, metavar="N", help="show the N most-changed tensors (default 20)"
    )
    p.add_argument("--json", action="store_true", help="print the whole diff as JSON")
    return {"diff": cmd_diff}


def _ref(arg: str):
    return int(arg) if arg.isdigit() else arg


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf: "nan", "inf", "-inf" (as tmon export writes them)
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _one_line(text: str) -> str:
    return " ".join(text.split())


def cmd_diff(store, args) -> int:
    if args.top < 0:
        print(f"tmon diff: --top must be >= 0, received {args.top}", file=sys.stderr)
        return 2
    try:
        d = diff(_ref(args.a), _ref(args.b), store=store.url)  # opened only if an id needs it
    except CheckpointError as exc:
        print(f"tmon diff: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except (
        MemoryError,
        RecursionError,
        OSError,
    ) as exc:  # what a reader missed: still one line, not a traceback
        print(
            f"tmon diff: cannot compare {args.a} and {args.b}: {type(exc).__name__}: {_one_line(str(exc))}",
            file=sys.stderr,
        )
        return 2
    if args.json:
        print(json.dumps(_json_safe(d.to_dict()), indent=1, default=str))
    else:
        print(d.format(top=args.top))
    return 0
