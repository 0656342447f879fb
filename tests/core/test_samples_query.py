"""``latest_samples``: each run's newest host sample per node and newest sample per GPU, read in
full once and then only the rows written since, on SQLite and PostgreSQL."""

import doctest
import time

import pytest

from tmon_core import Recorder, open_store
from tmon_core.store import samples_query
from tmon_core.store.samples_query import Cursor, latest_samples


def host(t, node=0, **values):
    return dict(wall_time=t, host=f"n{node}", node_rank=node, **values)


def gpu(t, node, i, **values):
    return dict(wall_time=t, host=f"n{node}", node_rank=node, gpu=i, name="NVIDIA H200", **values)


def test_the_docstring_example():
    result = doctest.testmod(samples_query, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, store_url):
    return store_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_first_read_then_only_what_is_new(url):
    t = time.time() - 1000
    a = Recorder(url, run_name="a", flush_interval=0.1, heartbeat_timeout=600)
    b = Recorder(url, run_name="b", flush_interval=0.1, heartbeat_timeout=600)
    for s in range(300):  # node 1 samples a little behind node 0, as another machine's clock would
        a.sample(host(t + s, 0, ram_used=s), [gpu(t + s, 0, i, mem_used=s * 10 + i) for i in range(2)])
        a.sample(host(t + s - 0.4, 1, ram_used=1000 + s), [gpu(t + s - 0.4, 1, 0, mem_used=-s)])
    b.sample(host(t, 0, cpu_percent=50.0), [])
    for r in (a, b):
        r.flush()
    with open_store(url) as store:
        got = latest_samples(store, [a.run_id, b.run_id])
        assert {k: r["ram_used"] for k, r in got.host.items() if k[0] == a.run_id} == {
            (a.run_id, 0): 299,
            (a.run_id, 1): 1299,
        }
        assert got.host[(b.run_id, 0)]["cpu_percent"] == 50.0
        assert {k[1:]: r["mem_used"] for k, r in got.gpus.items()} == {
            (0, 0): 2990,
            (0, 1): 2991,
            (1, 0): -299,
        }
        assert got.gpus[(a.run_id, 0, 1)]["name"] == "NVIDIA H200"

        again = latest_samples(store, [a.run_id, b.run_id], got.cursor)
        assert (again.host, again.gpus, again.cursor) == ({}, {}, got.cursor)

        # a run that started since: its rows come in whatever run_ids says
        c = Recorder(url, run_name="c", flush_interval=0.1, heartbeat_timeout=600)
        c.sample(host(t + 500, 0, ram_used=5), [gpu(t + 500, 0, 0, util_percent=80.0)])
        b.sample(host(t + 501, 0, cpu_percent=60.0), [])
        c.flush()
        b.flush()
        new = latest_samples(store, [a.run_id], got.cursor)
        assert {k: r.get("ram_used") or r.get("cpu_percent") for k, r in new.host.items()} == {
            (c.run_id, 0): 5,
            (b.run_id, 0): 60.0,
        }
        assert list(new.gpus) == [(c.run_id, 0, 0)] and new.cursor.host_id > got.cursor.host_id
    for r in (a, b, c):
        r.close()


def test_a_long_gap_is_read_afresh_and_a_bad_cursor_is_refused(store_url, monkeypatch):
    rec = Recorder(store_url, flush_interval=0.1, heartbeat_timeout=600)
    t = time.time()
    rec.sample(host(t, ram_used=1), [])
    rec.flush()
    with open_store(store_url) as store:
        first = latest_samples(store, [rec.run_id])
        for s in range(1, 51):
            rec.sample(host(t + s, ram_used=s + 1), [])
        rec.flush()
        # more rows than MAX_INCREMENT since the cursor: the runs asked for are read as at first
        monkeypatch.setattr(samples_query, "MAX_INCREMENT", 10)
        got = latest_samples(store, [rec.run_id], first.cursor)
        assert got.host[(rec.run_id, 0)]["ram_used"] == 51
        assert latest_samples(store, [], first.cursor).host == {}  # (and no other run's)
        with pytest.raises(TypeError, match=r"cursor must be a Cursor .* received \(1, 2\)"):
            latest_samples(store, [rec.run_id], (1, 2))
        assert isinstance(got.cursor, Cursor)
    rec.close()


def test_a_node_lagging_more_than_the_window_comes_with_its_next_sample(store_url):
    rec = Recorder(store_url, flush_interval=0.1, heartbeat_timeout=600)
    t = time.time()
    rec.sample(host(t - 60, 1, ram_used=1), [])  # node 1 stopped sampling a minute ago
    for s in range(5):
        rec.sample(host(t - 4 + s, 0, ram_used=s), [])
    rec.flush()
    with open_store(store_url) as store:
        first = latest_samples(store, [rec.run_id])
        assert sorted(first.host) == [
            (rec.run_id, 0)
        ]  # node 1 is older than the window before node 0's newest
        rec.sample(host(t + 1, 1, ram_used=2), [])
        rec.flush()
        assert latest_samples(store, [rec.run_id], first.cursor).host[(rec.run_id, 1)]["ram_used"] == 2
    rec.close()
