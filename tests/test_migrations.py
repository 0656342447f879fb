"""A store written with the first schema is upgraded when today's code opens it."""

import os
import sqlite3

import pytest
from sqlalchemy import create_engine, text

from tmon_core import Recorder, open_store
from tmon_core.store.schema import SCHEMA_VERSION

DATA = os.path.join(os.path.dirname(__file__), "data")
V1_RUN = ("INSERT INTO tmon_runs (id, name, status, framework, created_at, ended_at, heartbeat_at, heartbeat_timeout, "
          "host, pid, last_step, total_steps, config, error, dropped_points) VALUES "
          "('oldrun', 'from-v1', 'completed', 'lightning', 1700000000, 1700000100, 1700000100, 30, 'h', 1, 2, 3, "
          "'{\"lr\": 0.1}', NULL, 0)")


def _v1_statements(dialect: str) -> list[str]:
    lines = open(os.path.join(DATA, f"schema_v1_{dialect}.sql")).read().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    return [s.strip() for s in ddl.split(";") if s.strip()] + [
        "INSERT INTO tmon_schema (version, created_at) VALUES (1, 1700000000)", V1_RUN,
        # ids from the database's own sequence, as a store written by tmon 1 has them
        "INSERT INTO tmon_series (run_id, key) VALUES ('oldrun', 'loss')",
        "INSERT INTO tmon_points (series_id, step, seq, value, wall_time) "
        "SELECT id, 0, 0, 2.5, 1700000001 FROM tmon_series WHERE run_id = 'oldrun'",
    ]


def _check_upgraded(url):
    store = open_store(url)
    run = store.run("oldrun")
    assert run.info()["config"] == {"lr": 0.1} and run.info()["tags"] == []
    assert run.metrics("loss").value.tolist() == [2.5]
    with store.engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM tmon_schema ORDER BY id")).scalars().all()
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    rec = Recorder(url, flush_interval=0.05, tags=["after-upgrade"], notes="written by the new code")
    rec.log({"loss": 1.0}, step=0)
    rec.close()
    assert not rec.problems, rec.problems
    new = store.run(rec.run_id).info()
    assert new["tags"] == ["after-upgrade"] and new["notes"] == "written by the new code"
    assert store.runs().tags.tolist() == [["after-upgrade"], []]


def test_a_version_1_sqlite_store_is_upgraded_on_open(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    for stmt in _v1_statements("sqlite"):
        con.execute(stmt)
    con.commit()
    con.close()
    _check_upgraded(f"sqlite:///{path}")


def test_a_version_1_postgres_store_is_upgraded_on_open(pg_url):
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        for stmt in _v1_statements("postgresql"):
            conn.execute(text(stmt))
    engine.dispose()
    _check_upgraded(pg_url)


def test_callback_rejects_bad_tags():
    pytest.importorskip("lightning")
    from tmon_callbacks.lightning import TMonCallback

    with pytest.raises(ValueError, match="tags must be a list of non-empty strings, received tags='baseline'"):
        TMonCallback(tags="baseline")
