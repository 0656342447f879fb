"""tmon prune / tmon delete on a real store with real files."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from tmon_core import Recorder, open_store
from tmon_core.store.retention import delete_run, parse_duration, prune

TMON = shutil.which("tmon", path=os.path.dirname(sys.executable)) or "tmon"


def disk_size(folder):
    """The store's footprint: the database file and its write-ahead log."""
    return sum(os.path.getsize(folder / f) for f in ("tmon.db", "tmon.db-wal") if (folder / f).exists())


def make_run(url, tmp_path, name, n=2000):
    ckpt = tmp_path / f"{name}.ckpt"
    ckpt.write_bytes(b"x" * 1000)
    rec = Recorder(url, run_name=name, flush_interval=0.05)
    rec.start_sampler(0.1)
    for s in range(n):
        rec.log({"loss": 1.0 / (s + 1)}, step=s)
    rec.checkpoint(ckpt, step=n - 1)
    rec.log_record("WARNING", "careful")
    time.sleep(0.25)
    rec.close()
    return rec.run_id, ckpt


def test_prune_keeps_records_removes_bulk_and_files(store_url, tmp_path):
    old, old_ckpt = make_run(store_url, tmp_path, "old")
    time.sleep(1.1)
    new, new_ckpt = make_run(store_url, tmp_path, "new")
    store = open_store(store_url)
    size_before = disk_size(tmp_path)
    dry = prune(store, 1.0, dry_run=True)
    assert dry["runs"] == [old] and dry["rows"]["points"] == 2000 and dry["files"] == [str(old_ckpt)]
    assert old_ckpt.exists() and store.run(old).count_points() == 2000  # a dry run touches nothing
    rep = prune(store, 1.0)
    assert rep["runs"] == [old] and not old_ckpt.exists() and new_ckpt.exists()
    run = store.run(old)
    assert run.count_points() == 0 and run.samples().empty and run.logs().empty and run.metric_keys() == []
    assert run.status == "completed" and len(run.events()) > 0  # the record stays
    assert run.checkpoints(include_deleted=True).deleted.all()
    assert store.run(new).count_points() == 2000
    assert disk_size(tmp_path) < size_before  # VACUUM gave the space back


def test_delete_removes_everything_of_one_run(store_url, tmp_path):
    a, a_ckpt = make_run(store_url, tmp_path, "a", n=100)
    b, _ = make_run(store_url, tmp_path, "b", n=100)
    store = open_store(store_url)
    delete_run(store, a)
    assert store.runs().id.tolist() == [b] and not a_ckpt.exists()
    with pytest.raises(KeyError):
        store.run(a)
    assert store.run(b).count_points() == 100


def test_running_run_cannot_be_deleted(store_url):
    rec = Recorder(store_url, flush_interval=0.05)
    try:
        with pytest.raises(ValueError, match="still running"):
            delete_run(open_store(store_url), rec.run_id)
    finally:
        rec.close()


def test_cli_prune_and_delete(store_url, tmp_path):
    a, a_ckpt = make_run(store_url, tmp_path, "a", n=50)
    out = subprocess.run(
        [TMON, "--store", store_url, "prune", "--older-than", "0s", "--dry-run", "--keep-checkpoints"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "would remove" in out.stdout and "50 points" in out.stdout
    out = subprocess.run([TMON, "--store", store_url, "delete", a], capture_output=True, text=True)
    assert out.returncode == 0 and "removed" in out.stdout and str(a_ckpt) in out.stdout
    bad = subprocess.run(
        [TMON, "--store", store_url, "prune", "--older-than", "soon"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "a duration like 30d" in bad.stderr


def test_parse_duration():
    assert (
        parse_duration("30d") == 30 * 86400
        and parse_duration("90m") == 5400
        and parse_duration("1.5h") == 5400
    )
    with pytest.raises(ValueError, match="received '30 days'"):
        parse_duration("30 days")
