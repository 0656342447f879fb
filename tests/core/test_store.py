"""The store and its query API, on real SQLite files."""

import math
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

import tmon_core
from tmon_core import Recorder, StoreVersionError, open_store
from tmon_core.store.schema import SCHEMA_VERSION


def record(url, points, **kw):
    rec = Recorder(url, flush_interval=0.05, **kw)
    for step, metrics in points:
        rec.log(metrics, step=step)
    rec.close()
    return rec


def test_import_tmon_core_imports_no_framework_or_jupyter():
    code = (
        "import sys, tmon_core, tmon_core.cli, tmon_callbacks, tmon_widgets; "
        "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning', 'transformers', 'keras', 'ipywidgets', "
        "'bqplot', 'IPython') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_nan_and_inf_round_trip_exactly(store_url):
    values = [1.5, math.nan, math.inf, -math.inf, -0.0, 1e-300, 2.0]
    rec = record(store_url, [(i, {"loss": v}) for i, v in enumerate(values)])
    df = open_store(store_url).run(rec.run_id).metrics("loss")
    assert df.step.tolist() == list(range(len(values)))
    got = df.value.tolist()
    assert got[0] == 1.5 and math.isnan(got[1]) and got[2] == math.inf and got[3] == -math.inf
    assert got[4:] == values[4:]


@pytest.mark.parametrize("bad", ["", "   ", "a\nb", "tab\there", "nul\x00", "x" * 251, 42, None])
def test_bad_metric_key_is_a_clear_error(store_url, bad):
    rec = Recorder(store_url, flush_interval=0.05)
    with pytest.raises(ValueError, match="metric key"):
        rec.log({bad: 1.0}, step=0)
    rec.close()


def test_bad_values_and_steps_are_clear_errors(store_url):
    rec = Recorder(store_url, flush_interval=0.05)
    with pytest.raises(TypeError, match="'acc'.*str"):
        rec.log({"acc": "high"}, step=0)
    with pytest.raises(
        ValueError, match="step must be a non-negative integer below 2[*][*]63, received step=-1"
    ):
        rec.log({"acc": 1.0}, step=-1)
    with pytest.raises(ValueError, match="step=1.5"):
        rec.log({"acc": 1.0}, step=1.5)
    with pytest.raises(ValueError, match=f"received step={2**63}"):
        rec.log({"acc": 1.0}, step=2**63)
    with pytest.raises(
        ValueError, match="wall_time must be seconds since the epoch.*received wall_time='now'"
    ):
        rec.log({"acc": 1.0}, step=0, wall_time="now")
    with pytest.raises(ValueError, match="wall_time=nan"):
        rec.log({"acc": 1.0}, step=0, wall_time=float("nan"))
    rec.log({"acc": 1.0}, step=0, wall_time=1_700_000_000)  # a given wall time is kept as given
    rec.log({"acc": 2.0}, step=1)
    rec.close()
    acc = open_store(store_url).run(rec.run_id).metrics("acc")
    assert (
        acc.wall_time[0] == 1_700_000_000.0
        and acc.wall_time[1] > 1_700_000_000
        and acc.value.tolist() == [1, 2]
    )


def test_constructor_errors_name_the_argument(store_url):
    with pytest.raises(
        ValueError, match="flush_interval must be between 0.05 and 60 seconds, received flush_interval=0"
    ):
        Recorder(store_url, flush_interval=0)
    with pytest.raises(
        ValueError, match="sample_interval must be >= 0.1 seconds, received sample_interval=0.01"
    ):
        rec = Recorder(store_url)
        try:
            rec.start_sampler(0.01)
        finally:
            rec.close()


def test_numpy_scalars_and_python_ints_are_recorded(store_url):
    rec = record(store_url, [(0, {"a": np.float32(0.5), "b": np.int64(3), "c": 7, "d": True})])
    run = open_store(store_url).run(rec.run_id)
    assert {k: run.metrics(k).value[0] for k in "abcd"} == {"a": 0.5, "b": 3.0, "c": 7.0, "d": 1.0}


def test_query_api_runs_info_keys_and_lookup(store_url):
    a = record(
        store_url,
        [(s, {"loss": 1.0 / (s + 1), "acc": s / 10}) for s in range(10)],
        run_name="first",
        framework="lightning",
        config={"lr": 0.1},
    )
    b = record(store_url, [(0, {"loss": 3.0})], run_name="second")
    store = open_store(store_url)
    runs = store.runs()
    assert runs.id.tolist() == [b.run_id, a.run_id]  # newest first
    assert runs.status.tolist() == ["completed", "completed"]
    run = store.run(a.run_id[:6])  # a unique prefix is enough
    assert run.id == a.run_id
    assert store.run("first").id == a.run_id
    info = run.info()
    assert info["framework"] == "lightning" and info["config"] == {"lr": 0.1} and info["last_step"] == 9
    assert run.metric_keys() == ["acc", "loss"]
    assert run.latest() == {"acc": (9, 0.9), "loss": (9, 0.1)}
    with pytest.raises(KeyError, match="no metric 'los'"):
        run.metrics("los")
    with pytest.raises(KeyError, match="no run 'zzz'"):
        store.run("zzz")
    assert tmon_core.latest_run(store_url).id == b.run_id
    assert len(tmon_core.runs(store_url)) == 2


def test_default_store_is_tmon_db_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("TMON_STORE")
    rec = record(None, [(0, {"x": 1.0})])
    assert (tmp_path / "tmon.db").exists()
    assert tmon_core.latest_run().id == rec.run_id


def test_tmon_store_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("TMON_STORE", str(tmp_path / "elsewhere.db"))  # a bare path means SQLite
    rec = record(None, [(0, {"x": 1.0})])
    assert (tmp_path / "elsewhere.db").exists()
    assert open_store(f"sqlite:///{tmp_path}/elsewhere.db").run(rec.run_id).metrics("x").value[0] == 1.0


def test_store_is_sqlite_wal(store_url, tmp_path):
    record(store_url, [(0, {"x": 1.0})])
    con = sqlite3.connect(tmp_path / "tmon.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "tmon_runs",
        "tmon_series",
        "tmon_chunks",
        "tmon_summaries",
        "tmon_events",
        "tmon_samples",
        "tmon_gpu_samples",
        "tmon_checkpoints",
        "tmon_requests",
        "tmon_logs",
        "tmon_reports",
        "tmon_schema",
    } <= tables
    assert con.execute("SELECT version FROM tmon_schema").fetchone()[0] == SCHEMA_VERSION


def test_newer_schema_is_refused_naming_both_versions(store_url, tmp_path):
    record(store_url, [(0, {"x": 1.0})])
    con = sqlite3.connect(tmp_path / "tmon.db")
    con.execute("UPDATE tmon_schema SET version = ?", (SCHEMA_VERSION + 5,))
    con.commit()
    with pytest.raises(
        StoreVersionError, match=f"schema version {SCHEMA_VERSION + 5}.*up to {SCHEMA_VERSION}"
    ):
        open_store(store_url)


@pytest.mark.parametrize("raw_limit", [None, 1000], ids=["from-points", "from-summaries"])
def test_downsample_keeps_every_bucket_extreme(store_url, raw_limit, monkeypatch):
    if raw_limit:  # ranges over this many points are read from the summaries kept at write time
        monkeypatch.setattr(tmon_core.store.points, "RAW_DOWNSAMPLE_POINTS", raw_limit)
    rng = np.random.default_rng(0)
    n = 50_000
    values = rng.normal(size=n).cumsum()
    values[12_345] = 1e6  # a spike
    values[40_000] = -1e6
    values[777] = math.nan
    rec = Recorder(store_url, flush_interval=0.05)
    for s in range(n):
        rec.log({"y": float(values[s])}, step=s)
        if s % 9000 == 0:
            rec.flush()  # summaries are merged across several flushes
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    full = run.metrics("y")
    assert len(full) == n
    for max_points, start, end in [
        (2000, None, None),
        (500, None, None),
        (2000, 10_003, 19_998),
        (100, 5, 70),
    ]:
        df = run.metrics("y", max_points=max_points, start=start, end=end)
        assert len(df) <= max_points
        window = full[(full.step >= (start or 0)) & (full.step <= (end if end is not None else n))]
        assert df.step.is_monotonic_increasing
        assert df.value.max() == window.value.max() and df.value.min() == window.value.min()
        # every returned point is a real point of the series
        merged = df.merge(full, on="step", suffixes=("", "_raw"))
        assert len(merged) == len(df)
        assert np.allclose(merged.value, merged.value_raw, equal_nan=True)
    assert run.metrics("y", max_points=2000).value.max() == 1e6


def test_downsample_of_a_short_series_returns_it_whole(store_url):
    rec = record(store_url, [(s * 100, {"val": float(s)}) for s in range(50)])
    df = open_store(store_url).run(rec.run_id).metrics("val", max_points=100)
    assert df.step.tolist() == [s * 100 for s in range(50)]


def test_tail_returns_the_last_points_in_order(store_url):
    rec = record(store_url, [(s, {"x": float(s)}) for s in range(1000)])
    run = open_store(store_url).run(rec.run_id)
    assert run.tail("x", 5).step.tolist() == [995, 996, 997, 998, 999]
    assert run.tail("x", 5000).step.tolist() == list(range(1000))
    with pytest.raises(ValueError, match="n must be a positive int, received n=0"):
        run.tail("x", 0)


def test_the_last_points_over_many_flushes_and_a_flush_of_older_steps(store_url):
    """``tail`` / ``latest`` read the newest chunks first; a later flush that holds smaller steps (a
    second writer, steps logged out of order) must not hide the largest step, nor must n points that
    span more chunks than the first read takes."""
    from tmon_core.store import points

    rec = Recorder(store_url, flush_interval=60, heartbeat_timeout=120)
    for flush in range(40):  # 40 chunks of 10 points
        for s in range(flush * 10, flush * 10 + 10):
            rec.log({"x": float(s)}, s)
        rec.flush()
    for s in range(100, 105):  # a 41st chunk, written last, of older steps
        rec.log({"x": -1.0}, s)
    rec.flush()
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    assert run.latest()["x"] == (399, 399.0)
    assert run.tail("x", 1).step.tolist() == [399]
    got = run.tail("x", 300)  # 30 chunks: more than the first read
    assert len(got) == 300 and got.step.iloc[-1] == 399 and points.LAST_FIRST_CHUNKS < 30
    whole = points.LAST_FIRST_CHUNKS
    try:
        points.LAST_FIRST_CHUNKS = None  # the whole index at once, as before the first read was cut
        assert run.tail("x", 300).equals(got) and run.tail("x", 7).equals(got.tail(7).reset_index(drop=True))
    finally:
        points.LAST_FIRST_CHUNKS = whole


def test_metrics_by_wall_time(store_url):
    rec = record(store_url, [(s, {"x": float(s)}) for s in range(100)])
    run = open_store(store_url).run(rec.run_id)
    full = run.metrics("x", x="time")
    mid = full.wall_time.iloc[50]
    part = run.metrics("x", x="time", start=mid)
    assert part.step.iloc[0] <= 50 and part.wall_time.min() >= mid
    with pytest.raises(ValueError, match="x must be 'step' or 'time', received x='epoch'"):
        run.metrics("x", x="epoch")


def test_a_second_recorder_attached_to_a_run_extends_its_series(store_url):
    # run_id= attaches: keys the run already has keep their series, new ones get theirs, and a
    # flush meeting many new keys at once creates them all
    first = Recorder(store_url)
    first.log({"loss": 1.0, "acc": 0.5}, step=0)
    first.close(status=None)
    keys = ["loss"] + [f"layer{i}/grad" for i in range(600)]  # more than one SELECT ... IN (...)
    second = Recorder(store_url, run_id=first.run_id)
    second.log(dict.fromkeys(keys, 2.0), step=1)
    second.close()
    run = open_store(store_url).run(first.run_id)
    assert sorted(run.metric_keys()) == sorted(set(keys) | {"acc"})
    assert run.metrics("loss")[["step", "value"]].values.tolist() == [[0, 1.0], [1, 2.0]]
    assert run.metrics("layer599/grad").value.tolist() == [2.0]
    assert run.status == "completed"


def test_sql_lives_under_store_only():
    # every query is a function of tmon_core.store (its requests, reports, checkpoints modules):
    # other modules call those and never build SQL on the schema themselves
    import re
    from pathlib import Path

    root = Path(tmon_core.__file__).resolve().parents[1]
    store_dir = root / "tmon_core" / "store"
    sql = re.compile(
        r"^\s*(from sqlalchemy import|import sqlalchemy\b|from \.+store\.schema import|"
        r"from tmon_core\.store\.schema import)|\bexec_driver_sql\(|\.engine\.connect\(|write_engine\.begin\(",
        re.MULTILINE,
    )
    found = [
        f"{p.relative_to(root)}: {m.group(0).strip()}"
        for pkg in ("tmon_core", "tmon_callbacks", "tmon_widgets")
        for p in sorted((root / pkg).rglob("*.py"))
        if store_dir not in p.parents
        for m in sql.finditer(p.read_text(encoding="utf-8"))
    ]
    assert not found, found
