"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temp dir, on loopback.

``TMON_TEST_POSTGRES=postgresql+psycopg://...`` uses an existing server instead. Without a
server (no PostgreSQL binaries, no psycopg) the postgres tests skip with the reason; under
``CI=true`` they fail instead, because CI installs PostgreSQL and must run them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid


class PgServer:
    def __init__(self):
        # a directory of its own: pytest's temp dirs are private to root, and initdb runs as postgres
        base_dir = tempfile.mkdtemp(prefix="tmon-pg-")
        self.base = base_dir
        self.dir = os.path.join(base_dir, "pgdata")
        self.sock = base_dir
        self.port = _free_port()
        self.bin = _bin_dir()
        self.user = "tmon"
        as_root = os.geteuid() == 0
        self.prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
        if as_root:
            shutil.chown(base_dir, "postgres")
            os.chmod(base_dir, 0o755)
        self._run("initdb", "-D", self.dir, "-A", "trust", "-U", self.user, "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run(
            self.prefix + [os.path.join(self.bin, tool), *args], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", self.dir, "-o", opts, "-l", os.path.join(self.dir, "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.dir, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _bin_dir() -> str:
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb): apt-get install postgresql")
    return os.path.dirname(candidates[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
