"""The `tmon` command, run as a user runs it: the installed console script in a subprocess."""

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from tmon_core import Recorder, open_store

TMON = shutil.which("tmon", path=os.path.dirname(sys.executable)) or "tmon"


def tmon(*args, check=True):
    out = subprocess.run([TMON, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture
def recorded(store_url):
    rec = Recorder(store_url, run_name="cli-run", framework="lightning", flush_interval=0.05)
    rec.start_sampler(0.1)
    for s in range(100):
        rec.log({"loss": 1.0 / (s + 1), "lr": 0.01}, step=s)
    rec.log({"val_loss": math.nan}, step=99)
    rec.event("train_start", step=0)
    rec.checkpoint(__file__, step=99, monitor="val_loss", monitor_value=0.5, source="manual")
    rec.close()
    return rec


def test_runs_lists_the_run(store_url, recorded):
    out = tmon("--store", store_url, "runs").stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["ID", "NAME", "STATUS"]
    assert row.split()[:4] == [recorded.run_id, "cli-run", "completed", "lightning"]
    assert row.split()[-1] == "100"


def test_show_summarises_status_steps_metrics_memory(store_url, recorded):
    out = tmon("show", recorded.run_id[:5], "--store", store_url).stdout
    assert "status    completed" in out
    assert "steps     100" in out
    assert "loss" in out and "0.01" in out and "nan" in out
    assert "host RAM used" in out and "process RSS" in out
    assert "checkpoints 1" in out


def test_show_latest_and_unknown_run(store_url, recorded):
    assert recorded.run_id in tmon("--store", store_url, "show", "latest").stdout
    bad = tmon("--store", store_url, "show", "nope", check=False)
    assert bad.returncode == 1 and "no run 'nope'" in bad.stderr


def test_export_csv(store_url, recorded):
    rows = list(csv.DictReader(io.StringIO(tmon("--store", store_url, "export", recorded.run_id).stdout)))
    assert len(rows) == 201
    loss = [r for r in rows if r["key"] == "loss"]
    assert [int(r["step"]) for r in loss] == list(range(100)) and float(loss[1]["value"]) == 0.5


def test_export_json(store_url, recorded, tmp_path):
    path = tmp_path / "run.json"
    tmon("--store", store_url, "export", recorded.run_id, "--format", "json", "-o", str(path))
    doc = json.loads(path.read_text())
    assert doc["run"]["id"] == recorded.run_id and doc["run"]["status"] == "completed"
    assert doc["metrics"]["val_loss"] == [[99, "nan", pytest.approx(doc["metrics"]["val_loss"][0][2])]]
    assert len(doc["metrics"]["loss"]) == 100
    assert doc["events"][0]["type"] == "train_start" or any(e["type"] == "train_start" for e in doc["events"])
    assert doc["checkpoints"][0]["monitor_value"] == 0.5


def test_export_parquet(store_url, recorded, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "run.parquet"
    tmon("--store", store_url, "export", recorded.run_id, "--format", "parquet", "-o", str(path))
    df = pd.read_parquet(path)
    assert len(df) == 201 and set(df.columns) == {"key", "step", "value", "wall_time"}
    assert df[df.key == "val_loss"].value.isna().all()


def test_store_from_environment_and_missing_run(tmp_path, recorded, store_url, monkeypatch):
    env = dict(os.environ, TMON_STORE=store_url)
    out = subprocess.run([TMON, "runs"], capture_output=True, text=True, env=env, timeout=60)
    assert recorded.run_id in out.stdout
    assert open_store(store_url).run(recorded.run_id).status == "completed"


def test_hf_steps_are_counted_as_hf_numbers_them_in_show_runs_and_the_report(tmp_path, store_url, capsys):
    """HF records its global_step, which is 1 after the first optimizer step: 8 steps of 8, not 9."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer

    from tests.callbacks.test_hf import TokenData, args, tiny_bert
    from tmon_callbacks.hf import TMonCallback
    from tmon_core.cli import main

    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None, report="off", widget=False)
    Trainer(
        model=tiny_bert(),
        train_dataset=TokenData(32),
        args=args(tmp_path, num_train_epochs=2),
        callbacks=[cb],
    ).train()  # 32 samples / batch 8 = 4 steps per epoch, numbered 1..8
    run = open_store(store_url).run(cb.run_id)
    assert run.info()["last_step"] == 8 and run.info()["total_steps"] == 8
    capsys.readouterr()
    assert main(["--store", store_url, "show", cb.run_id]) == 0
    assert "steps     8 of 8\n" in capsys.readouterr().out
    assert main(["--store", store_url, "runs"]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[-1] == "STEPS" and row.split()[-1] == "8"
    assert main(["--store", store_url, "report", cb.run_id, "--json", "--no-save"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["steps"] == 8
