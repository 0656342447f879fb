"""How fast does ``tmon import tensorboard`` read a 1M-point TensorBoard log into a store?

Writes one event file of N scalar points (4 tags: loss, lr, acc, grad_norm, each at N/4 steps,
every point with its own wall time) with the tensorboard package's own ``EventFileWriter``, then
measures, each the median of ``--repeats`` runs:

  tmon import           ``import_tensorboard`` into a fresh SQLite store: read, parse, record,
                        written and committed (the run closed), points/s over the whole import
  tmon read only        the same reading and parsing, every point handed to a no-op
                        (what the import costs before the recorder)
  EventAccumulator      TensorBoard's own reader alone (``size_guidance={"scalars": 0}``, all points
                        kept), what TensorBoard does before it can show the log
  TB record reader      TensorBoard's record reader alone (``RawEventFileLoader``: framing and its
                        pure-Python CRC checks, no parsing)

Target (issue 21): the import at >= 500k points/s.

    .venv/bin/python bench/import_scale.py [--quick] [--points 1000000] [--repeats 3] [--dir /tmp]
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _util import header, median, num, parse_args, table  # noqa: E402

TAGS = ("loss", "lr", "acc", "grad_norm")


def write_log(path: str, n: int) -> str:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    w = EventFileWriter(path, max_queue_size=10_000, flush_secs=3600)
    t0 = 1.7e9
    Event, Summary, Value = event_pb2.Event, summary_pb2.Summary, summary_pb2.Summary.Value
    for i in range(n):
        w.add_event(
            Event(
                wall_time=t0 + i * 0.001,
                step=i // 4,
                summary=Summary(value=[Value(tag=TAGS[i % 4], simple_value=1.0 / (1 + i))]),
            )
        )
    w.close()
    (f,) = glob.glob(os.path.join(path, "*tfevents*"))
    return f


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument("--points", type=int, default=1_000_000),
            p.add_argument("--repeats", type=int, default=3),
            p.add_argument("--dir", default=None),
        ),
    )
    n = 100_000 if args.quick else args.points
    header(f"import of a {n:,}-point TensorBoard log", args.quick)
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tmon_core.interop.tensorboard import import_tensorboard, scan

    work = tempfile.mkdtemp(prefix="tmon-import-", dir=args.dir)
    try:
        logdir = os.path.join(work, "log")
        t = time.perf_counter()
        f = write_log(logdir, n)
        print(
            f"wrote {os.path.getsize(f) / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s (TensorBoard's writer)"
        )
        results: dict[str, list[float]] = {
            k: [] for k in ("tmon import", "tmon read only", "EventAccumulator", "TB record reader")
        }
        for rep in range(args.repeats):
            url = f"sqlite:///{work}/s{rep}.db"
            out: list = []
            results["tmon import"].append(
                timed(lambda url=url, out=out: out.extend(import_tensorboard(logdir, url)))
            )
            assert out[0].created and out[0].points == n, out
            results["tmon read only"].append(
                timed(lambda: scan(logdir, lambda values, step, wall_time: None))
            )

            def ea():
                acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
                acc.Reload()
                assert sum(len(acc.Scalars(tag)) for tag in TAGS) == n

            results["EventAccumulator"].append(timed(ea))
            results["TB record reader"].append(
                timed(lambda: sum(1 for _ in event_file_loader.RawEventFileLoader(f).Load()))
            )
        rows = []
        for name, times in results.items():
            m = median(times)
            rows.append(
                [
                    name,
                    num(m, "{:.2f}"),
                    num(n / m, "{:,.0f}"),
                    "" if name != "tmon import" else ("yes" if n / m >= 500_000 else "no"),
                ]
            )
        table(["", "s (median)", "points/s", ">= 500k/s"], rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
