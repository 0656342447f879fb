"""What a live view polls: ``Run.points_since``, ``events_since``, ``samples_since`` and
``gpu_samples_since`` return what was recorded since the last read, each row once, on SQLite and on
a real PostgreSQL server."""

import json
import math
import time

import numpy as np
import pytest
from sqlalchemy import insert

from tmon_core import Recorder, open_store
from tmon_core.store.run import OVERLAP_S
from tmon_core.store.schema import EventRow, GpuSampleRow


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tmon.db"
    return request.getfixturevalue("pg_url")


def test_points_since_returns_each_new_point_once_for_every_key(url):
    rec = Recorder(url, run_name="poll", flush_interval=20)
    for s in range(300):
        rec.log({"loss": 1.0 / (s + 1), "lr": 0.1}, s)
    rec.flush()
    store = open_store(url)
    run = store.run(rec.run_id)
    cursor, got = run.points_since(None)  # only where to start
    assert got == {} and cursor > 0
    cursor, got = run.points_since(cursor)
    assert got == {}  # nothing written since
    seen = {"loss": [], "lr": [], "val_loss": []}
    for chunk in range(4):
        for s in range(300 + 50 * chunk, 350 + 50 * chunk):
            rec.log({"loss": math.nan if s == 420 else 1.0 / (s + 1), "lr": 0.1}, s)
        if chunk == 2:
            rec.log({"val_loss": 0.5}, 449)  # a metric first seen now
        rec.flush()
        cursor, got = run.points_since(cursor, reread_keys=chunk == 3)
        if chunk == 2:  # the keys were read before val_loss was written: it is left out
            assert set(got) == {"loss", "lr"}
        for key, (step, value, wall) in got.items():
            assert np.all(np.diff(step) >= 0) and len(step) == len(value) == len(wall)
            seen[key] += list(zip(step.tolist(), value.tolist()))
    steps = [s for s, _ in seen["loss"]]
    assert steps == list(range(300, 500))  # every new point, once, in step order
    assert math.isnan(dict(seen["loss"])[420]) and dict(seen["loss"])[499] == 1.0 / 500
    assert [s for s, _ in seen["lr"]] == steps
    # once the keys are read again, its points in chunks after the cursor are returned (those before
    # are ``latest()``'s and ``metrics()``' to read): here its first point's chunk came after loss's
    assert seen["val_loss"] in ([], [(449, 0.5)])
    assert run.points_since(cursor) == (cursor, {})
    rec.log({"val_loss": 0.25}, 549)
    rec.flush()
    cursor, got = run.points_since(cursor)
    assert set(got) == {"val_loss"} and got["val_loss"][1].tolist() == [0.25]
    rec.close()
    store.close()


def test_points_since_costs_what_was_written_not_the_run(url):
    """Thousands of chunks per key: a poll reads the new chunks only (asserted on the rows read)."""
    rec = Recorder(url, run_name="long", flush_interval=20)
    for s in range(3000):
        rec.log({"loss": float(s)}, s)
        if s % 2 == 1:
            rec.flush()  # a chunk per two steps: 1,500 chunks
    rec.flush()
    store = open_store(url)
    run = store.run(rec.run_id)
    cursor, _ = run.points_since(None)
    rec.log({"loss": -1.0}, 3000)
    rec.flush()
    cursor2, got = run.points_since(cursor)
    assert got["loss"][0].tolist() == [3000] and cursor2 > cursor
    with store.engine.connect() as conn:
        new = conn.exec_driver_sql(f"SELECT COUNT(*) FROM tmon_chunks WHERE id > {cursor}").scalar()
    assert new == 1
    rec.close()
    store.close()


def test_events_since_returns_each_event_once_even_when_committed_late(url):
    rec = Recorder(url, run_name="events", flush_interval=20)
    rec.event("note", step=1, message="first ✓ 日本")
    rec.flush()
    store = open_store(url)
    run = store.run(rec.run_id)
    cursor, first = run.events_since(None)
    assert "note" in first.type.tolist() and first.data.map(lambda d: d is None or isinstance(d, dict)).all()
    before = len(first)
    cursor, none = run.events_since(cursor)
    assert len(none) == 0 and list(none.columns) == list(first.columns)
    rec.event("note", step=2, message="second", data={"x": 1})
    rec.flush()
    cursor, new = run.events_since(cursor)
    assert new.message.tolist() == ["second"] and new.data.tolist() == [{"x": 1}]
    assert new.step.dtype == "Int64"
    # a row another writer's transaction made visible after a larger id was read (PostgreSQL's
    # sequences allow it): an id below the cursor's, a recent time: found, and only once
    with store.engine.begin() as conn:
        top = conn.exec_driver_sql("SELECT MAX(id) FROM tmon_events").scalar()
        conn.execute(
            insert(EventRow).values(
                id=top + 100, run_id=run.id, wall_time=time.time(), step=3, type="note", message="ahead"
            )
        )
    cursor, new = run.events_since(cursor)
    assert new.message.tolist() == ["ahead"]
    with store.engine.begin() as conn:
        conn.execute(
            insert(EventRow).values(
                id=top + 50, run_id=run.id, wall_time=time.time() - 1, step=3, type="note", message="late"
            )
        )
    cursor, new = run.events_since(cursor)
    assert new.message.tolist() == ["late"]
    cursor, new = run.events_since(cursor)
    assert len(new) == 0
    # all the polls together hold what ``events()`` holds, each once
    assert len(run.events()) == before + 3
    assert all(w >= cursor.last_wall - OVERLAP_S for w in cursor.recent.values())
    rec.close()
    store.close()


def test_samples_since_adds_up_to_the_whole_tables(url):
    rec = Recorder(url, run_name="hw", flush_interval=0.05)
    rec.start_sampler(0.1)
    store = open_store(url)
    run = store.run(rec.run_id)
    cursor, polled = None, []
    gcursor, gpolled = None, []
    # GPU rows as the sampler writes them (no GPU here): two per sample time
    now = time.time()
    with store.engine.begin() as conn:
        for i in range(3):
            for gpu in (1, 0):
                conn.execute(
                    insert(GpuSampleRow).values(
                        run_id=run.id, wall_time=now + i, gpu=gpu, mem_used=1e9 * (i + 1)
                    )
                )
    deadline = time.time() + 30
    while time.time() < deadline and sum(len(p) for p in polled) < 6:
        time.sleep(0.1)
        cursor, new = run.samples_since(cursor)
        polled.append(new)
        gcursor, gnew = run.gpu_samples_since(gcursor)
        gpolled.append(gnew)
    rec.close()
    cursor, new = run.samples_since(cursor)
    polled.append(new)
    ids = [i for p in polled for i in p.id.tolist()]
    whole = run.samples()
    assert len(ids) >= 6 and sorted(ids) == sorted(whole.id.tolist()) and len(set(ids)) == len(ids)
    assert list(polled[-1].columns) == list(whole.columns)
    got = [(r.gpu, r.mem_used) for p in gpolled for r in p.itertuples()]
    assert sorted(got) == sorted((g, 1e9 * (i + 1)) for i in range(3) for g in (0, 1))
    assert [p for p in gpolled if len(p)][0].gpu.tolist()[:2] == [0, 1]  # ordered as gpu_samples()
    store.close()


def test_a_run_row_and_its_keys_read_alike_through_the_driver(url):
    """``Run.info()`` and ``metric_keys()`` read through the driver's cursor: the same values and
    types as before (JSON decoded, NULLs as None), odd names included."""
    rec = Recorder(url, run_name="naïve run ☃", flush_interval=20, config={"lr": 0.1, "n": [1, 2]})
    rec.log({"loss/ü": 1.0, "acc": 0.5}, 0)
    rec.flush()
    store = open_store(url)
    run = store.run(rec.run_id)
    info = run.info()
    assert info["name"] == "naïve run ☃" and info["config"]["n"] == [1, 2] and info["status"] == "running"
    assert info["ended_at"] is None and isinstance(info["created_at"], float) and info["last_step"] == 0
    assert json.loads(json.dumps(info["tags"])) == [] and info["group"] is None
    assert run.metric_keys() == ["acc", "loss/ü"]
    with pytest.raises(KeyError, match="not in"):
        store.run(rec.run_id).__class__(store, "nope").info()
    rec.close()
    store.close()
