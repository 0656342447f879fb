"""The same store on a real PostgreSQL server: query API, a Lightning fit with a live request,
several writer processes, and the server going away mid-run."""

import math
import subprocess
import sys
import time
import warnings

import pytest

from tests.core.test_recorder import WRITER
from tmon_core import Recorder, open_store


def test_round_trip_query_and_downsample_on_postgres(pg_url):
    values = [1.5, math.nan, math.inf, -math.inf] + [float(s % 97) for s in range(20_000)]
    rec = Recorder(pg_url, flush_interval=0.05, run_name="pg")
    for s, v in enumerate(values):
        rec.log({"y": v}, step=s)
    rec.event("train_start", step=0, data={"type": "x", "message": "y"})
    rec.close()
    store = open_store(pg_url)
    run = store.run("pg")
    assert run.status == "completed" and store.runs().id.tolist() == [rec.run_id]
    y = run.metrics("y")
    assert len(y) == len(values) and y.value[0] == 1.5 and math.isnan(y.value[1])
    assert y.value[2] == math.inf and y.value[3] == -math.inf
    small = run.metrics("y", max_points=500)
    assert len(small) <= 500 and small.value.max() == math.inf and small.value.min() == -math.inf
    assert run.events().data[0] == {"type": "x", "message": "y"}
    assert run.latest() == {"y": (len(values) - 1, float((len(values) - 5) % 97))}


@pytest.mark.slow
def test_lightning_fit_with_a_live_request_on_postgres(pg_url, tmp_path):
    pytest.importorskip("lightning")
    from lightning.pytorch import Callback, Trainer

    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback

    M, D = make()
    seen = {}

    class Ask(Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            if trainer.global_step == 2:
                seen["req"] = open_store(pg_url).run(cb.run_id).set_param("lr", 0.01)
            seen.setdefault("lr", []).append(trainer.optimizers[0].param_groups[0]["lr"])

    cb = TMonCallback(pg_url, flush_interval=0.05, sample_interval=0.2)
    Trainer(
        max_epochs=2,
        callbacks=[cb, Ask()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    ).fit(M(sleep=0.03), D(n=256, batch_size=16))
    run = open_store(pg_url).run(cb.run_id)
    assert run.status == "completed" and seen["req"].status == "applied"
    k = run.requests().applied_step[0]
    assert seen["lr"][k] == 0.01 and seen["lr"][k - 1] == 0.05
    assert run.metrics("loss").step.tolist() == list(range(24))
    assert run.metrics("val_loss").step.tolist() == [11, 23]


@pytest.mark.slow
def test_two_processes_write_one_postgres_store(pg_url):
    n = 20_000
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, pg_url, f"p{i}", str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    store = open_store(pg_url)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        run = store.run(out.strip())
        assert run.status == "completed" and run.count_points() == 5 * n


@pytest.mark.slow
def test_server_goes_away_mid_run_then_comes_back(tmp_path):
    pytest.importorskip("psycopg")
    from tests.pg import PgServer

    try:
        server = PgServer()
    except Exception as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    url = server.new_database()
    try:
        rec = Recorder(url, flush_interval=0.1, max_buffer=100_000, close_timeout=20)
        for s in range(100):
            rec.log({"x": float(s)}, step=s)
        assert rec.flush()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            server.stop("fast")
            for s in range(100, 2000):  # training goes on while the database is down
                rec.log({"x": float(s)}, step=s)
                if s % 100 == 0:
                    time.sleep(0.05)
            time.sleep(0.5)
            assert any("could not write" in p for p in rec.problems)
            server.start()
            rec.close()
        run = open_store(url).run(rec.run_id)
        assert run.metrics("x").step.tolist() == list(range(2000))  # the backlog was written
        assert rec.dropped == 0 and run.status == "completed"
        assert any(p.startswith("tmon store recovered") for p in rec.problems)
    finally:
        server.destroy()


@pytest.mark.slow
def test_server_down_longer_than_the_buffer_counts_what_it_drops(tmp_path):
    pytest.importorskip("psycopg")
    from tests.pg import PgServer

    try:
        server = PgServer()
    except Exception as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    url = server.new_database()
    try:
        rec = Recorder(url, flush_interval=0.1, max_buffer=1000, close_timeout=20)
        rec.log({"x": 0.0}, step=0)
        assert rec.flush()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            server.stop("fast")
            for s in range(1, 5001):
                rec.log({"x": float(s)}, step=s)
            time.sleep(0.5)
            server.start()
            rec.close()
        run = open_store(url).run(rec.run_id)
        kept = run.metrics("x")
        assert rec.dropped > 0 and len(kept) + rec.dropped == 5001
        assert run.info()["dropped_points"] == rec.dropped
        assert kept.step.iloc[-1] == 5000
    finally:
        server.destroy()
