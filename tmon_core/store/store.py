"""``Store``: a tmon store opened for reading (and for the few writes a reader makes).

>>> import os, tempfile
>>> from tmon_core import Recorder
>>> path = os.path.join(tempfile.mkdtemp(), "tmon.db")
>>> with Recorder(path, run_name="doc", flush_interval=0.1) as rec:
...     rec.log({"train_loss": 0.5}, 0)
>>> store = open_store(path)
>>> store.runs()[["name", "status", "steps"]].values.tolist()     # one row per run, newest first
[['doc', 'completed', 1]]
>>> store.run("doc").metrics("train_loss").value.tolist()          # a run by id prefix or name
[0.5]
>>> store.close()

Widgets, the report, the CLI and the tests read through ``Store`` and ``Run`` only.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import Engine, select

from . import checkpoints
from .engine import create_store_engine, ensure_schema, resolve_url
from .run import Run, effective_status, loads, steps_done
from .schema import RunRow


def _pd():
    import pandas as pd

    return pd


class Store:
    """A tmon store opened for reading (and for control requests, later)."""

    def __init__(self, url: str | os.PathLike | None = None, *, create: bool = True):
        """``create=False``: open an existing store only; a missing one is a ``FileNotFoundError``
        ("no tmon store at PATH") and nothing is created (a SQLite file is never made to read it)."""
        self.url = resolve_url(url)
        if not create:
            path = sqlite_path(self.url)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"no tmon store at {path}")
        self.engine: Engine = create_store_engine(self.url, writer=False)
        self._write_engine: Engine | None = None
        try:
            ensure_schema(self.engine, create=create)
        except Exception:
            self.engine.dispose()
            raise

    @property
    def write_engine(self) -> Engine:
        """An engine for the few writes a reader makes (control requests, checkpoint tags): on
        SQLite its transactions take the write lock up front, like the recorder's."""
        if self._write_engine is None:
            self._write_engine = create_store_engine(self.url, writer=True)
        return self._write_engine

    def close(self) -> None:
        self.engine.dispose()
        if self._write_engine is not None:
            self._write_engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def runs(self, group: str | None = None):
        """One row per run, newest first: id, name, status, framework, created_at, ended_at,
        duration (s), last_step, steps (how many were recorded: see ``steps_done``), host, pid, tags,
        group (None for a run in none). ``group``: only the runs of that group."""
        pd = _pd()
        query = select(RunRow).order_by(RunRow.created_at.desc())
        if group is not None:
            if not isinstance(group, str):
                raise ValueError(f"group must be a group's name (a string), received group={group!r}")
            query = query.where(RunRow.group_name == group)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        now = time.time()
        out = []
        for r in rows:
            end = r["ended_at"] or r["heartbeat_at"] or now
            out.append(
                {
                    "id": r["id"],
                    "name": r["name"],
                    "status": effective_status(r["status"], r["heartbeat_at"], r["heartbeat_timeout"], now),
                    "framework": r["framework"],
                    "created_at": r["created_at"],
                    "ended_at": r["ended_at"],
                    "duration": end - r["created_at"],
                    "last_step": r["last_step"],
                    "steps": steps_done(r["last_step"], r["framework"]),
                    "host": r["host"],
                    "pid": r["pid"],
                    "tags": loads(r["tags"]) or [],
                    "group": r["group_name"],
                }
            )
        cols = [
            "id",
            "name",
            "status",
            "framework",
            "created_at",
            "ended_at",
            "duration",
            "last_step",
            "steps",
            "host",
            "pid",
            "tags",
            "group",
        ]
        return pd.DataFrame(out, columns=cols)

    def run(self, run_id: str) -> Run:
        """The run ``run_id`` (a unique prefix of the id, or the run's exact name, is enough)."""
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"run_id must be a non-empty string, received {run_id!r}")
        with self.engine.connect() as conn:
            ids = (
                conn.execute(select(RunRow.id).where(RunRow.id.startswith(run_id, autoescape=True)))
                .scalars()
                .all()
            )
            if not ids:
                ids = conn.execute(select(RunRow.id).where(RunRow.name == run_id)).scalars().all()
        if len(ids) == 1:
            return Run(self, ids[0])
        if not ids:
            raise KeyError(f"no run {run_id!r} in {self}")
        raise KeyError(
            f"{run_id!r} matches {len(ids)} runs in {self}: {', '.join(sorted(ids)[:5])}; give more of the id"
        )

    def checkpoint(self, checkpoint_id: int) -> dict:
        """The recorded checkpoint ``checkpoint_id`` (any run) as a dict; KeyError when unknown."""
        out = checkpoints.checkpoint_row(self, int(checkpoint_id))
        if out is None:
            raise KeyError(f"no checkpoint {checkpoint_id} in {self}")
        out["tags"] = loads(out["tags"]) or []
        return out

    def find_checkpoint(self, path: str | os.PathLike) -> dict | None:
        """The newest recorded checkpoint at ``path`` (absolute or relative to here), or None."""
        row = checkpoints.newest_id_at_path(self, os.path.abspath(os.fspath(path)))
        return None if row is None else self.checkpoint(row)

    def latest_run(self) -> Run | None:
        with self.engine.connect() as conn:
            rid = conn.execute(select(RunRow.id).order_by(RunRow.created_at.desc()).limit(1)).scalar()
        return Run(self, rid) if rid else None


def open_store(url: str | os.PathLike | None = None, *, create: bool = True) -> Store:
    """Open (and on first use create) the store at ``url``; default ``$TMON_STORE`` or ``sqlite:///tmon.db``.
    ``create=False`` opens an existing store only (FileNotFoundError when there is none)."""
    return Store(url, create=create)


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite store URL (absolute), or None for another database or an in-memory one."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if (
        u.get_backend_name() != "sqlite"
        or not u.database
        or u.database == ":memory:"
        or u.database.startswith("file:")
    ):
        return None
    return os.path.abspath(u.database)
