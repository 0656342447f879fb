"""What steering costs a training step.

(a) single process: the per-step check an adapter makes (``step >= controller.next_step``)
    next to an empty Python function call, with nothing pending;
(b) DDP: the per-step broadcast of one int64 over tmon's own gloo group (what every rank pays
    so that all apply a change at the same step), between 2 CPU processes, next to a
    gradient-sized all_reduce of a tiny model for scale.

    python bench/control_overhead.py [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _util import header, median, parse_args, pct  # noqa: E402


def check_cost(n: int) -> list[tuple[str, float]]:
    from tmon_core import Recorder
    from tmon_core.control import At, Controller

    rec = Recorder(f"sqlite:///{tempfile.mkdtemp()}/c.db")
    ctl = Controller(rec, schedule=[At(step=10**12, lr=0.1)])
    rows = []

    def empty():
        pass

    for label, body in (
        ("empty function call", lambda: [empty() for _ in range(n)]),
        (
            "step >= ctl.next_step (nothing pending)",
            lambda: [ctl.due(s) for s in range(n) if s >= ctl.next_step],
        ),
    ):
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            body()
            runs.append((time.perf_counter() - t) / n * 1e9)
        rows.append((label, median(runs)))
    rec.close()
    return rows


def _ddp_worker(rank: int, world: int, steps: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    group = dist.new_group(backend="gloo")
    flag = torch.zeros(1, dtype=torch.int64)
    grads = torch.zeros(161)  # the tiny test model's parameter count
    times = {
        "broadcast 1 x int64 (tmon's per-step decision count)": [],
        "all_reduce 161 floats (tiny model's grads)": [],
    }
    for _ in range(steps):
        dist.barrier()
        t = time.perf_counter()
        dist.broadcast(flag, src=0, group=group)
        times["broadcast 1 x int64 (tmon's per-step decision count)"].append(time.perf_counter() - t)
        dist.barrier()
        t = time.perf_counter()
        dist.all_reduce(grads)
        times["all_reduce 161 floats (tiny model's grads)"].append(time.perf_counter() - t)
    if rank == 0:
        import json

        with open(out, "w") as f:
            json.dump(times, f)
    dist.destroy_process_group()


def ddp_cost(steps: int) -> dict:
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(tempfile.mkdtemp(), "ddp.json")
    mp.spawn(_ddp_worker, args=(2, steps, port, out), nprocs=2, join=True)
    with open(out) as f:
        return json.load(f)


def main() -> int:
    args = parse_args(__doc__)
    header("control overhead", args.quick)
    n = 200_000 if args.quick else 2_000_000
    rows = check_cost(n)
    print(f"\n(a) per-step check, single process ({n:,} steps)")
    print(f"{'what':<44} {'ns/step':>8} {'vs empty call':>14}")
    base = rows[0][1]
    for label, ns in rows:
        print(f"{label:<44} {ns:>8.1f} {ns / base:>13.2f}x")
    steps = 300 if args.quick else 3000
    times = ddp_cost(steps)
    print(f"\n(b) DDP, 2 CPU processes on gloo ({steps} steps)")
    print(f"{'what':<56} {'p50 µs':>8} {'p99 µs':>8}")
    for label, ts in times.items():
        ts = sorted(x * 1e6 for x in ts[10:])
        print(f"{label:<56} {median(ts):>8.1f} {pct(ts, 99):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
