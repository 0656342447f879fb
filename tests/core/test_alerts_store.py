"""Alerts as the store holds them: ``Run.alerts()`` with each alert's latest delivery outcome,
``tmon alerts`` (text and ``--json``), and the claims that keep watchers from sending twice."""

from __future__ import annotations

import json
import os
import threading
import time

from tmon_core import Recorder, open_store
from tmon_core import events as ev
from tmon_core.cli import main
from tmon_core.store import alerts as store_alerts


def _alert_data(uid, rule="nonfinite", level="critical", source="run"):
    return {
        "uid": uid,
        "rule": rule,
        "level": level,
        "title": f"{rule} title",
        "evidence": {"x": 1},
        "source": source,
    }


def _recorded_run(url):
    """A run that raised four alerts, each with another delivery story, written as the recorder
    writes them (``alert`` and ``alert_delivery`` events). Returns its id and a time between the
    second and the third alert."""
    a, b, c, d = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)
    with Recorder(url, run_name="alerting", flush_interval=0.05) as rec:
        rec.log({"loss": 1.0}, 0)
        rec.event(ev.ALERT, step=3, message="loss became NaN", data=_alert_data(a))
        rec.event(ev.ALERT_DELIVERY, data={"uid": a, "delivered": None, "reason": "held back", "targets": []})
        rec.event(ev.ALERT_DELIVERY, data={"uid": a, "delivered": True, "reason": None, "targets": []})
        rec.event(ev.ALERT, step=9, message="GPU memory at 97%", data=_alert_data(b, "memory.gpu", "warning"))
        rec.event(ev.ALERT_DELIVERY, data={"uid": b, "delivered": False, "reason": "down", "targets": []})
        time.sleep(0.05)
        between = time.time()
        time.sleep(0.05)
        rec.event(ev.ALERT, step=12, message="spiked", data=_alert_data(c, "spikes", "warning"))
        rec.event(ev.ALERT_DELIVERY, data={"uid": c, "delivered": None, "reason": "held", "targets": []})
        rec.event(ev.ALERT, message="no heartbeat", data=_alert_data(d, "lost", "critical", "watch"))
    return rec.run_id, between


def test_run_alerts_gives_each_alert_with_its_latest_delivery_outcome(store_url):
    run_id, between = _recorded_run(store_url)
    store = open_store(store_url)
    df = store.run(run_id).alerts()
    assert list(df.columns) == [
        "time",
        "step",
        "rule",
        "level",
        "title",
        "text",
        "delivered",
        "uid",
        "source",
    ]
    assert df.rule.tolist() == ["nonfinite", "memory.gpu", "spikes", "lost"]  # newest last
    assert df.delivered.tolist() == [True, False, "held", None]
    assert df.step.tolist()[:3] == [3, 9, 12] and df.step.isna().tolist()[3]
    assert df.source.tolist() == ["run", "run", "run", "watch"]
    assert df.text.iloc[0] == "loss became NaN" and df.title.iloc[1] == "memory.gpu title"
    assert store.run(run_id).alerts(since=between).rule.tolist() == ["spikes", "lost"]
    store.close()


def test_a_run_without_alerts_has_an_empty_table(store_url):
    with Recorder(store_url, flush_interval=0.05) as rec:
        rec.log({"loss": 1.0}, 0)
    store = open_store(store_url)
    df = store.run(rec.run_id).alerts()
    assert df.empty and "delivered" in df.columns
    store.close()


def test_tmon_alerts_prints_one_line_each_and_json_for_scripts(store_url, capsys):
    run_id, _ = _recorded_run(store_url)
    assert main(["--store", store_url, "alerts", run_id]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert "nonfinite" in lines[0] and "delivered" in lines[0] and "step 3" in lines[0]
    assert "not delivered" in lines[1] and "held back" in lines[2] and lines[3].endswith("[watch]")
    assert main(["alerts", "latest", "--json", "--store", store_url]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [a["rule"] for a in doc] == ["nonfinite", "memory.gpu", "spikes", "lost"]
    assert [a["delivered"] for a in doc] == [True, False, "held", None]
    assert doc[3]["step"] is None and doc[0]["step"] == 3 and doc[0]["run_id"] == run_id
    assert all(len(a["uid"]) == 32 for a in doc)
    # --since counts back from now
    assert main(["--store", store_url, "alerts", "--json", "--since", "1h"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4
    time.sleep(1.1)
    assert main(["--store", store_url, "alerts", "--since", "1s"]) == 0
    assert "no alerts" in capsys.readouterr().out


def test_tmon_alerts_only_reads(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    assert main(["--store", str(missing), "alerts"]) == 2
    assert f"no tmon store at {missing}" in capsys.readouterr().err
    assert not missing.exists()
    url = f"sqlite:///{tmp_path}/t.db"
    with Recorder(url, flush_interval=0.05) as rec:
        rec.log({"loss": 1.0}, 0)
    assert main(["--store", url, "alerts", "--since", "ten minutes"]) == 1
    assert "--since" in capsys.readouterr().err


def test_a_claim_is_taken_once_even_by_racing_threads(store_url):
    with Recorder(store_url, flush_interval=0.05) as rec:
        rec.log({"loss": 1.0}, 0)
    store = open_store(store_url)
    alert = {
        "rule": "lost",
        "level": "critical",
        "title": "Lost",
        "text": "No heartbeat.",
        "step": 0,
        "wall_time": time.time(),
        "evidence": {"pid": os.getpid()},
    }
    won, go = [], threading.Barrier(6)

    def take(i):
        go.wait()
        uid = store_alerts.claim(store, rec.run_id, "lost@1.0", alert, watcher=f"w{i}")
        if uid is not None:
            won.append(uid)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    df = store.run(rec.run_id).alerts()
    assert df.uid.tolist() == won and df.source.tolist() == ["watch"]
    # another condition of the same run is another claim
    assert store_alerts.claim(store, rec.run_id, "stall@0", alert, watcher="w") is not None
    # deleting the run deletes its claims with it (the foreign key cascades)
    from sqlalchemy import text

    from tmon_core.store.retention import delete_run

    delete_run(store, rec.run_id)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM tmon_alert_claims")).scalar() == 0
    store.close()


def test_the_store_modules_examples_run(tmp_path, monkeypatch):
    import doctest

    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(store_alerts, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
