"""Errors a user can cause with the ``tmon`` command: each is one line on stderr, exit status 1 or 2,
no traceback; reading never creates a store."""

import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from tmon_core import Recorder
from tmon_core.cli import main

TMON = shutil.which("tmon", path=os.path.dirname(sys.executable)) or "tmon"


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    d = tmp_path / "empty"
    d.mkdir()
    monkeypatch.chdir(d)
    monkeypatch.delenv("TMON_STORE", raising=False)
    return d


@pytest.fixture
def recorded(store_url):
    rec = Recorder(store_url, run_name="cli-errors", framework="lightning", flush_interval=0.05)
    for s in range(2000):
        rec.log({"loss": 1.0 / (s + 1), "lr": 0.01, "acc": s / 2000}, step=s)
    rec.checkpoint(__file__, step=1999, source="manual")
    rec.close()
    return rec


@pytest.mark.parametrize(
    "args",
    [
        ["runs"],
        ["show", "latest"],
        ["diff", "999", "998"],
        ["export", "latest"],
        ["report"],
        ["requests", "latest"],
        ["stop", "latest"],
        ["tag", "latest", "1", "x"],
    ],
)
def test_no_command_creates_a_store_where_there_is_none(capsys, empty_dir, args):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert f"no tmon store at {empty_dir / 'tmon.db'}" in one_line(err)
    assert os.listdir(empty_dir) == []
    # nor with --store naming a file in a directory that does not exist
    code, out, err = run_cli(capsys, "--store", str(empty_dir / "sub" / "x.db"), *args)
    assert code == 2 and "no tmon store at" in one_line(err) and os.listdir(empty_dir) == []


def test_the_installed_command_says_it_in_one_line(empty_dir):
    out = subprocess.run([TMON, "show", "latest"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert one_line(out.stderr) == f"tmon: no tmon store at {empty_dir / 'tmon.db'}"
    assert os.listdir(empty_dir) == []


def test_export_to_a_missing_directory_or_onto_a_directory(capsys, tmp_path, store_url, recorded):
    code, out, err = run_cli(capsys, "--store", store_url, "export", "latest", "-o", "missing_dir/x.csv")
    assert code == 2
    assert one_line(err) == "tmon: cannot write missing_dir/x.csv: the directory missing_dir does not exist"
    assert not os.path.exists(tmp_path / "missing_dir")
    (tmp_path / "out").mkdir()
    for fmt in ("csv", "json"):
        code, out, err = run_cli(
            capsys, "--store", store_url, "export", "latest", "--format", fmt, "-o", "out"
        )
        assert code == 2 and "cannot write out: it is a directory" in one_line(err)
    assert os.listdir(tmp_path / "out") == []
    code, out, err = run_cli(capsys, "--store", store_url, "export", "latest", "-o", "x.csv")
    assert code == 0 and (tmp_path / "x.csv").read_text().count("\n") == 6001


def _damage_chunks(path: str) -> None:
    """Overwrite the pages of the metric chunks' table with garbage (the file's schema and run rows stay)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tmon_chunks'").fetchone()[0]
    con.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xde\xad\xbe\xef" * (page // 4))


@pytest.mark.parametrize(
    "args",
    [
        ["show", "latest"],
        ["export", "latest"],
        ["export", "latest", "--format", "json"],
        ["report", "latest", "--no-save"],
    ],
)
def test_a_run_whose_pages_are_damaged_is_one_line(capsys, tmp_path, store_url, recorded, args):
    path = str(tmp_path / "tmon.db")
    _damage_chunks(path)
    code, out, err = run_cli(capsys, "--store", store_url, *args)
    assert code in (1, 2)
    line = one_line(err)
    assert line.startswith(f"tmon: the store {store_url} is damaged (database disk image is malformed)"), line


HOLD_LOCK = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_store_locked_by_another_process_waits_the_busy_timeout_then_says_so(
    capsys, tmp_path, store_url, recorded
):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "tmon.db")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for args in (
            ["tag", "latest", "1", "good"],
            ["stop", "latest", "--no-wait"],
            ["prune", "--older-than", "0d"],
        ):
            t0 = time.monotonic()
            code, out, err = run_cli(capsys, "--store", store_url, *args)
            waited = time.monotonic() - t0
            assert code == 1, (args, err)
            assert one_line(err) == (
                f"tmon: the store {store_url} is locked: another process held its write lock "
                f"for longer than the busy timeout (5 s); try again when it is done"
            )
            assert waited >= 4.5, (args, waited)
        code, out, err = run_cli(capsys, "--store", store_url, "runs")  # reading goes on meanwhile
        assert code == 0 and "cli-errors" in out
    finally:
        holder.kill()
        holder.wait()
    code, out, err = run_cli(capsys, "--store", store_url, "tag", "latest", "1", "good")
    assert code == 0, err
