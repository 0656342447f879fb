"""How ``store_v5.db`` and ``store_v5_postgresql.sql`` were made: real stores written by tmon at
schema 5 (commit d408510), frozen for the v5 -> v6 upgrade test (``tests/core/test_groups_store.py``).

Run from the repository root with that commit's code (today's code writes a newer schema)::

    python tests/data/make_store_v5.py

The SQLite file is the store itself (vacuumed, rollback journal); the PostgreSQL one is ``pg_dump
--inserts`` of a store written the same way (loaded by the test into a fresh database).
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tmon_core import Recorder  # noqa: E402
from tmon_core.store.schema import SCHEMA_VERSION  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def write(url: str) -> None:
    assert SCHEMA_VERSION == 5, f"this makes a schema 5 store; this code writes schema {SCHEMA_VERSION}"
    rec = Recorder(
        url,
        run_name="from-v5",
        framework="lightning",
        config={"hparams": {"lr": 0.01, "optimizer": "adam"}},
        flush_interval=0.05,
        tags=["old"],
        notes="written by schema 5",
    )
    for step in range(20):
        rec.log({"loss": math.nan if step == 7 else 1.0 / (step + 1)}, step)
    rec.event("train_end", step=19, reason="max_steps")
    rec.close()
    assert not rec.problems, rec.problems


def main() -> None:
    path = os.path.join(HERE, "store_v5.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    write(f"sqlite:///{path}")
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("VACUUM")
    con.close()

    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    from tests.pg import PgServer

    server = PgServer()
    try:
        url = server.new_database()
        write(url)
        dbname = url.rsplit("/", 1)[1]
        dump = subprocess.run(
            server.prefix
            + [
                os.path.join(server.bin, "pg_dump"),
                "--inserts",
                "--no-owner",
                "--no-privileges",
                "-h",
                "127.0.0.1",
                "-p",
                str(server.port),
                "-U",
                server.user,
                dbname,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        with open(os.path.join(HERE, "store_v5_postgresql.sql"), "w") as f:
            f.write(
                f"-- a tmon store at schema 5 written by tmon, dumped by pg_dump: see {os.path.basename(__file__)}\n"
            )
            # psql's meta-commands (\\restrict ...) out: the test runs the dump as plain SQL
            f.write("".join(line for line in dump.splitlines(True) if not line.startswith("\\")))
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
