"""Control subcommands of ``tmon``:

    tmon set RUN lr=5e-5 [weight_decay=0.01 ...] [--mode scale|pin|set] [--no-wait]
    tmon preset RUN NAME
    tmon checkpoint RUN [-m DESCRIPTION] [--tag TAG ...]
    tmon rollback RUN CHECKPOINT_ID [--compatible]
    tmon stop RUN [-m REASON]
    tmon requests RUN
    tmon tag RUN CHECKPOINT_ID TAG [TAG ...]

By default each command waits (``--wait`` seconds, 30) for the training to apply or reject
the request and prints the outcome; the exit status is 0 when applied, 1 when rejected or
still pending.
"""

from __future__ import annotations

import json


def parse_value(text: str):
    """``5e-5`` -> 5e-05, ``0.9,0.999`` -> [0.9, 0.999], ``true`` -> True; else the text."""
    if "," in text:
        return [parse_value(t) for t in text.split(",")]
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: list[str]) -> dict:
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"expected NAME=VALUE (e.g. lr=5e-5), received {item!r}")
        values[name] = parse_value(value)
    return values


def _outcome(req, args) -> int:
    status = req.wait(timeout=args.wait) if args.wait > 0 else req.status
    info = req.info()
    if status == "applied":
        print(
            f"request {req.id} applied at step {info['applied_step']}"
            + (
                f": {json.dumps(info['old_value'])} -> {json.dumps(info['new_value'])}"
                if info["new_value"]
                else ""
            )
        )
        return 0
    if status == "rejected":
        print(f"request {req.id} rejected: {info['reason']}")
        return 1
    print(f"request {req.id} is pending" + (f" after {args.wait:g} s" if args.wait > 0 else ""))
    return 0 if args.wait <= 0 else 1


def register(sub) -> dict:
    def common(p, run=True):
        if run:
            p.add_argument("run", help="run id, unique prefix, name, or 'latest'")
        p.add_argument(
            "--wait", type=float, default=30.0, help="seconds to wait for the outcome (0: do not wait)"
        )
        p.add_argument("--no-wait", dest="wait", action="store_const", const=0.0)

    p = sub.add_parser("set", help="change parameters of a running run")
    common(p)
    p.add_argument(
        "assignments", nargs="+", metavar="NAME=VALUE", help="lr=5e-5, lr@1=1e-4, betas=0.9,0.99 ..."
    )
    p.add_argument("--mode", choices=("scale", "pin", "set"), default="scale")
    p = sub.add_parser("preset", help="apply one of the run's presets")
    common(p)
    p.add_argument("name")
    p = sub.add_parser("checkpoint", help="ask the run to save a checkpoint now")
    common(p)
    p.add_argument("-m", "--message", dest="description")
    p.add_argument("--tag", action="append", dest="tags", default=[])
    p = sub.add_parser("rollback", help="restore the run's weights and optimizer state from a checkpoint")
    common(p)
    p.add_argument("checkpoint", type=int, help="checkpoint id (see tmon show / run.checkpoints())")
    p.add_argument("--compatible", action="store_true", help="accept a checkpoint of another run")
    p = sub.add_parser("stop", help="stop a run cleanly")
    common(p)
    p.add_argument("-m", "--message", dest="reason")
    p = sub.add_parser("requests", help="the run's control requests and their outcome")
    p.add_argument("run")
    p = sub.add_parser("tag", help="replace a checkpoint's tags")
    p.add_argument("run")
    p.add_argument("checkpoint", type=int)
    p.add_argument("tags", nargs="+")
    return {
        "set": cmd_set,
        "preset": cmd_preset,
        "checkpoint": cmd_checkpoint,
        "rollback": cmd_rollback,
        "stop": cmd_stop,
        "requests": cmd_requests,
        "tag": cmd_tag,
    }


def _run(store, ref):
    from ..cli import resolve_run

    return resolve_run(store, ref)


def cmd_set(store, args) -> int:
    try:
        values = parse_assignments(args.assignments)
    except ValueError as exc:
        print(f"tmon set: {exc}")
        return 2
    return _outcome(_run(store, args.run).set_params(values, mode=args.mode, source="cli"), args)


def cmd_preset(store, args) -> int:
    return _outcome(_run(store, args.run).apply_preset(args.name, source="cli"), args)


def cmd_checkpoint(store, args) -> int:
    return _outcome(_run(store, args.run).request_checkpoint(args.description, args.tags, source="cli"), args)


def cmd_rollback(store, args) -> int:
    return _outcome(
        _run(store, args.run).rollback(args.checkpoint, compatible=args.compatible, source="cli"), args
    )


def cmd_stop(store, args) -> int:
    return _outcome(_run(store, args.run).stop(args.reason, source="cli"), args)


def cmd_requests(store, args) -> int:
    df = _run(store, args.run).requests()
    if df.empty:
        print("no requests")
        return 0
    for r in df.itertuples():
        if isinstance(r.payload, dict):
            what = json.dumps(
                {k: v for k, v in r.payload.items() if k != "source" and v not in (None, [], {})}
            )
        else:  # a row written by hand that is not a JSON object (it was rejected): its text, cut short
            what = " ".join(str(r.payload or "").split())
            what = what if len(what) <= 40 else what[:37] + "..."
        outcome = (
            f"applied at step {r.applied_step}"
            if r.status == "applied"
            else f"rejected: {r.reason}"
            if r.status == "rejected"
            else "pending"
        )
        print(f"{r.id:>4}  {r.kind:<10} {what:<40} {r.requested_by or '-':<24} {outcome}")
    return 0


def cmd_tag(store, args) -> int:
    _run(store, args.run).tag_checkpoint(args.checkpoint, args.tags)
    print(f"checkpoint {args.checkpoint} tags: {', '.join(args.tags)}")
    return 0
