"""A short many-writers load test (the long one is bench/load_many_writers.py): no lock error
reaches anyone, no point is lost, the reader keeps reading."""

import pytest

from tests.loadgen import run_load


@pytest.mark.slow
def test_four_writers_and_a_reader_on_sqlite(store_url):
    r = run_load(store_url, procs=4, rate=500, seconds=6, poll=0.5)
    assert not r["process_errors"], r["process_errors"]
    assert r["points_lost"] == 0 and r["points_expected"] >= 4 * 5 * 500 * 5
    assert r["lock_errors"] == 0 and not r["problems"] and not r["reader_errors"]
    assert r["reads"] >= 5


@pytest.mark.slow
def test_four_writers_and_a_reader_on_postgres(pg_url):
    r = run_load(pg_url, procs=4, rate=500, seconds=6, poll=0.5)
    assert not r["process_errors"], r["process_errors"]
    assert r["points_lost"] == 0 and r["lock_errors"] == 0 and not r["problems"] and not r["reader_errors"]
