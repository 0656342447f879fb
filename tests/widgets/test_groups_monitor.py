"""``Monitor(group=...)``: a group's trials compared on the same charts, joined by trials that start
later, with a table of the settings that varied; real runs written by the Recorder."""

from __future__ import annotations

import html
import time

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("bqplot")

from tmon_core import Recorder, open_store  # noqa: E402
from tmon_widgets import Monitor, _group  # noqa: E402


def trial(url, name, lr, steps=20, group="sweep-3"):
    rec = Recorder(
        url, run_name=name, group=group, config={"hparams": {"lr": lr, "depth": 2}}, flush_interval=0.05
    )
    for s in range(steps):
        rec.log({"loss": lr * 100 / (s + 1)}, s)
    rec.flush()
    return rec


def loss_line(mon, run_id):
    for chart in mon.metrics.charts.values():
        if (run_id, "loss") in chart.lines:
            st = chart.lines[(run_id, "loss")][0].get_state()["y"]
            return np.frombuffer(st["value"], dtype=st["dtype"])
    raise KeyError(run_id)


def test_a_group_monitor_waits_for_its_first_trial_and_takes_later_ones(store_url):
    mon = Monitor(group="sweep-3", store=store_url, interval=None)
    assert "waiting for a run in group 'sweep-3'" in html.unescape(mon.header.html.value)
    other = Recorder(store_url, run_name="not-in-the-group", flush_interval=0.05)  # never shown
    other.log({"loss": 5.0}, 0)
    other.flush()
    first = trial(store_url, "lr=0.1", 0.1)
    mon.refresh(slow=True)
    assert [rs.name for rs in mon.runs] == ["lr=0.1"]
    second = trial(store_url, "lr=0.01", 0.01)  # starts while the Monitor shows the first
    mon.refresh(slow=True)
    assert [rs.name for rs in mon.runs] == ["lr=0.1", "lr=0.01"]
    mon.refresh(slow=True)
    store = open_store(store_url)
    for rec in (first, second):
        np.testing.assert_allclose(loss_line(mon, rec.run_id), store.run(rec.run_id).metrics("loss").value)
    table = mon.group.widget.value
    assert "group sweep-3" in table and "2 trials" in table and ">lr<" in table
    assert "0.1" in table and "0.01" in table and ">depth<" not in table  # the same in both: no column
    assert ">loss<" in table and ">0.5<" in table  # lr=0.1's latest loss: 0.1 * 100 / 20
    for rec in (first, second, other):
        rec.close()
    mon.close()
    store.close()


def test_a_group_monitor_stays_live_a_while_after_its_trials_end(store_url, monkeypatch):
    monkeypatch.setattr(_group, "LINGER_S", 4.0)
    first = trial(store_url, "one", 0.1)
    first.close()
    mon = Monitor(group="sweep-3", store=store_url, interval=0.1)
    time.sleep(0.5)
    assert mon.live  # every trial shown has ended, but the next one may come
    second = trial(store_url, "two", 0.01)
    deadline = time.time() + 10
    while len(mon.runs) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert [rs.name for rs in mon.runs] == ["one", "two"]
    second.close()
    deadline = time.time() + 15
    while mon.live and time.time() < deadline:
        time.sleep(0.1)
    assert not mon.live and all(rs.status == "completed" for rs in mon.runs)
    mon.close()


def test_group_goes_alone(store_url):
    rec = trial(store_url, "one", 0.1)
    with pytest.raises(ValueError, match="give one of run=, runs= or group="):
        Monitor(rec.run_id, group="sweep-3", store=store_url, interval=None)
    with pytest.raises(ValueError, match="group must be one line of text"):
        Monitor(group="a\nb", store=store_url, interval=None)
    rec.close()
