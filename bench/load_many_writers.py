"""Many writers, one reader: 8 processes each logging 5 metrics at 1 kHz for 60 s into one store,
while a reader polls the latest points of every run every 500 ms. SQLite, and PostgreSQL when a
server can be started here (the tests' throwaway cluster).

    python bench/load_many_writers.py [--quick] [--procs 8] [--rate 1000] [--seconds 60] [--no-postgres]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.loadgen import run_load  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="4 writers, 10 s")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.procs, args.seconds = 4, 10.0
    rows = []
    d = tempfile.mkdtemp()
    rows.append(("sqlite", run_load(f"sqlite:///{d}/load.db", args.procs, args.rate, args.seconds)))
    if not args.no_postgres:
        try:
            from tests.pg import PgServer

            server = PgServer()
        except Exception as exc:
            print(f"(no PostgreSQL server here: {exc})")
        else:
            try:
                rows.append(
                    ("postgresql", run_load(server.new_database(), args.procs, args.rate, args.seconds))
                )
            finally:
                server.destroy()
    print(
        f"\n{args.procs} writers x 5 metrics x {args.rate:g} steps/s x {args.seconds:g} s, reader every 500 ms\n"
    )
    head = (
        f"{'store':<11} {'points/s':>10} {'expected':>10} {'lost':>6} {'lock err':>8} {'reads':>6} "
        f"{'read p50 ms':>11} {'read p99 ms':>11}"
    )
    print(head)
    print("-" * len(head))
    for name, r in rows:
        print(
            f"{name:<11} {r['points_per_s']:>10,.0f} {r['points_expected']:>10,} {r['points_lost']:>6} "
            f"{r['lock_errors']:>8} {r['reads']:>6} {r['read_p50_ms']:>11.1f} {r['read_p99_ms']:>11.1f}"
        )
        for e in r["process_errors"] + r["reader_errors"] + r["problems"][:3]:
            print("   !", e[:200])
    return 0


if __name__ == "__main__":
    sys.exit(main())
