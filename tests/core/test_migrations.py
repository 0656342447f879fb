"""A store written with the first schema is upgraded when today's code opens it."""

import math
import os
import sqlite3

import pytest
from sqlalchemy import create_engine, text

from tmon_core import Recorder, open_store
from tmon_core.store.schema import SCHEMA_VERSION

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
V1_RUN = (
    "INSERT INTO tmon_runs (id, name, status, framework, created_at, ended_at, heartbeat_at, heartbeat_timeout, "
    "host, pid, last_step, total_steps, config, error, dropped_points) VALUES "
    "('oldrun', 'from-v1', 'completed', 'lightning', 1700000000, 1700000100, 1700000100, 30, 'h', 1, 2, 3, "
    "'{\"lr\": 0.1}', NULL, 0)"
)


def _v1_statements(dialect: str) -> list[str]:
    lines = open(os.path.join(DATA, f"schema_v1_{dialect}.sql")).read().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    return (
        [s.strip() for s in ddl.split(";") if s.strip()]
        + [
            "INSERT INTO tmon_schema (version, created_at) VALUES (1, 1700000000)",
            V1_RUN,
            # ids from the database's own sequence, as a store written by tmon 1 has them
            "INSERT INTO tmon_series (run_id, key) VALUES ('oldrun', 'loss')",
        ]
        + [  # one row per point, as schemas 1 and 2 stored them: NaN as NULL, a step logged twice
            "INSERT INTO tmon_points (series_id, step, seq, value, wall_time) "
            f"SELECT id, {step}, {seq}, {value}, {1700000001 + seq} FROM tmon_series WHERE run_id = 'oldrun'"
            for step, seq, value in ((0, 0, "2.5"), (2, 3, "1.5"), (1, 1, "NULL"), (2, 2, "1.75"))
        ]
    )


def _check_upgraded(url):
    store = open_store(url)
    run = store.run("oldrun")
    assert run.info()["config"] == {"lr": 0.1} and run.info()["tags"] == []
    loss = run.metrics("loss")
    assert loss.step.tolist() == [0, 1, 2, 2] and loss.wall_time.tolist() == [
        1700000001,
        1700000002,
        1700000003,
        1700000004,
    ]
    assert (
        loss.value.iloc[0] == 2.5
        and math.isnan(loss.value.iloc[1])
        and loss.value.iloc[2:].tolist() == [1.75, 1.5]
    )
    assert run.count_points() == 4 and run.latest() == {"loss": (2, 1.5)}
    with store.engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM tmon_schema ORDER BY id")).scalars().all()
        # v3 rebuilt the summaries from the points; v4 records that they hold every chunk
        covered, top = conn.execute(
            text(
                "SELECT s.summarized_chunk, (SELECT MAX(id) FROM tmon_chunks c WHERE c.series_id = s.id) "
                "FROM tmon_series s WHERE s.run_id = 'oldrun'"
            )
        ).one()
        finest = conn.execute(
            text("SELECT n, n_nan, min_value, max_value FROM tmon_summaries WHERE level = 0")
        ).one()
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert top is not None and covered == top and tuple(finest) == (4, 1, 1.5, 2.5)
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

    with pytest.raises(
        ValueError, match="tags must be a list of non-empty strings, received tags='baseline'"
    ):
        TMonCallback(tags="baseline")


def test_upgrades_carry_their_own_sql():
    # an old upgrade must not change when the writer or the engine does: migrations.py imports
    # neither (and so the engine, which runs the upgrades, and the migrations make no import circle)
    import ast

    from tmon_core.store import migrations

    tree = ast.parse(open(migrations.__file__).read())
    imported = {
        (n.module or "").split(".")[-1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level
    }
    imported |= {
        a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.level and not n.module
        for a in n.names
    }
    assert not imported & {"writer", "engine", "batch"}, imported
