"""``tmon watch``: real runs killed with SIGKILL in child processes, watchers in processes of their
own, a real local HTTP server taking the JSON webhook, SQLite and PostgreSQL stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tmon_core import Recorder, open_store
from tmon_core import events as ev
from tmon_core.alerts.watch import Watcher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
ENV.pop("TMON_NOTIFY", None)

CHILD = textwrap.dedent("""
    import sys, time
    from tmon_core import Recorder
    recs = [Recorder(sys.argv[1], run_name=f"victim-{i}", flush_interval=0.05, heartbeat_timeout=0.5)
            for i in range(int(sys.argv[2]))]
    for step in range(50):
        for rec in recs:
            rec.log({"loss": 1.0 / (step + 1)}, step)
    time.sleep(0.5)  # written: the writer flushes every 0.05 s
    print(" ".join(r.run_id for r in recs), flush=True)
    time.sleep(600)
""")


def _killed_runs(url: str, n: int = 1) -> list[str]:
    """``n`` runs recorded by a child process, then killed with SIGKILL: their status stays
    ``running`` and their heartbeat stops."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(n)], env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        ids = child.stdout.readline().split()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert len(ids) == n, "the child process did not record its runs"
    time.sleep(1.0)  # past the heartbeat timeout (0.5 s): the runs read as lost
    store = open_store(url)
    assert {store.run(i).status for i in ids} == {ev.LOST}
    store.close()
    return ids


def _watch_cmd(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tmon_core.cli", "--store", url, "watch", *args]


def _watch_once(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _watch_cmd(url, "--once", *args), env=ENV, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
def hook():
    pytest.importorskip("apprise")
    from tests.core.test_alert_delivery import Hook

    h = Hook()
    yield h
    h.close()


def _alerts(url: str, run_id: str):
    store = open_store(url)
    try:
        return store.run(run_id).alerts()
    finally:
        store.close()


def _lost_once_and_not_again(url: str, hook) -> None:
    (rid,) = _killed_runs(url)
    old_news = Watcher(url, notify=[], lookback=0.5)  # its heartbeat stopped a second ago: before that
    assert old_news.poll() == []
    old_news.close()
    out = _watch_once(url, "--notify", f"json://127.0.0.1:{hook.port}/hook")
    assert out.returncode == 0, out.stderr
    assert "lost" in out.stdout and rid in out.stdout and "Traceback" not in out.stderr
    (body,) = hook.wait_for(1)
    assert (
        body["title"].startswith("[tmon critical] victim-0: No heartbeat for") and body["type"] == "failure"
    )
    assert "SIGKILL" in body["message"] and "(step 49)" in body["message"]
    df = _alerts(url, rid)
    assert df.rule.tolist() == ["lost"] and df.source.tolist() == ["watch"] and df.step.tolist() == [49]
    assert df.delivered.tolist() == [True], "the watcher records the delivery outcome before it exits"
    again = _watch_once(url, "--notify", f"json://127.0.0.1:{hook.port}/hook")  # a restarted watcher
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    time.sleep(0.5)
    assert len(hook.bodies) == 1 and len(_alerts(url, rid)) == 1


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_alerted_lost_once_and_a_restarted_watcher_does_not_repeat(
    store_url, hook
):
    _lost_once_and_not_again(store_url, hook)


def _two_watchers_send_one_message(url: str, hook) -> None:
    ids = _killed_runs(url, 3)
    notify = ("--notify", f"json://127.0.0.1:{hook.port}/hook")
    procs = [
        subprocess.Popen(
            _watch_cmd(url, "--once", *notify),
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    said = [line for o in outs for line in o[0].splitlines()]
    assert len(said) == 3, said  # each run once, by one watcher or the other
    bodies = hook.wait_for(3)
    time.sleep(0.5)
    assert len(hook.bodies) == 3, [b["title"] for b in hook.bodies]
    assert sorted(b["title"].split(":")[0] for b in bodies) == [
        "[tmon critical] victim-0",
        "[tmon critical] victim-1",
        "[tmon critical] victim-2",
    ]
    for rid in ids:
        assert _alerts(url, rid).rule.tolist() == ["lost"]


@pytest.mark.slow
def test_two_watchers_started_together_send_one_message_per_alert(store_url, hook):
    _two_watchers_send_one_message(store_url, hook)


def test_a_run_seen_running_alerts_when_it_ends_unless_it_said_so_itself(store_url):
    watcher = Watcher(store_url, notify=[], interval=1.0)
    quiet = Recorder(store_url, run_name="quiet", flush_interval=0.05)
    talker = Recorder(store_url, run_name="talker", flush_interval=0.05)
    broken = Recorder(store_url, run_name="broken", flush_interval=0.05)
    for rec in (quiet, talker, broken):
        rec.log({"loss": 1.0}, 0)
    time.sleep(0.3)
    assert watcher.poll() == []  # all running: nothing to say, but each is now seen running
    quiet.close()
    talker.event(
        ev.ALERT,
        step=0,
        message="Completed at step 0.",
        data={
            "uid": "f" * 32,
            "rule": "finished",
            "level": "info",
            "title": "The run finished",
            "evidence": {},
            "source": "run",
        },
    )
    talker.close()
    broken.close(ev.FAILED, RuntimeError("boom"))
    with Recorder(store_url, run_name="unseen", flush_interval=0.05) as unseen:  # began and ended unwatched
        unseen.log({"loss": 1.0}, 0)
    raised = watcher.poll()
    assert sorted((a["run_id"], a["rule"], a["level"]) for a in raised) == sorted(
        [(quiet.run_id, "finished", "info"), (broken.run_id, "failed", "critical")]
    )
    failed = next(a for a in raised if a["rule"] == "failed")
    assert "RuntimeError: boom" in failed["text"]
    assert watcher.poll() == []
    watcher.close()
    assert Watcher(store_url, notify=[]).poll() == [], "a new watcher finds the ends claimed"
    store = open_store(store_url)
    assert store.run(quiet.run_id).alerts().source.tolist() == ["watch"]
    assert store.run(talker.run_id).alerts().source.tolist() == ["run"]
    assert store.run(unseen.run_id).alerts().empty
    store.close()


def test_a_running_run_that_makes_no_progress_is_stalled_once_per_stall(store_url):
    later = [0.0]  # seconds the watchers' clock runs ahead: a stall without waiting for one

    def clock():
        return time.time() + later[0]

    rec = Recorder(store_url, run_name="hung", flush_interval=0.05, heartbeat_timeout=60)
    try:
        for step in range(3):
            rec.log({"loss": 1.0}, step)
        time.sleep(0.3)
        watcher = Watcher(store_url, notify=[], stall_after=10, clock=clock)
        assert watcher.poll() == []
        later[0] = 11  # the heartbeat goes on, the steps do not
        (stall,) = watcher.poll()
        assert (stall["rule"], stall["level"], stall["step"], stall["run_id"]) == (
            "stall",
            "warning",
            2,
            rec.run_id,
        )
        assert stall["title"].startswith("No new step for 1") and "step 2" in stall["text"]
        assert watcher.poll() == [], "one alert per stall"
        assert Watcher(store_url, notify=[], stall_after=10, clock=clock).poll() == [], (
            "nor from a restarted watcher"
        )
        rec.log({"loss": 1.0}, 3)
        time.sleep(0.3)
        assert watcher.poll() == [], "it moved on"
        later[0] = 22
        assert [a["step"] for a in watcher.poll()] == [3], "a new stall is a new alert"
        watcher.close()
    finally:
        rec.close()
    store = open_store(store_url)
    assert store.run(rec.run_id).alerts().step.tolist() == [2, 3]
    store.close()


def test_a_validation_or_the_first_step_gets_phase_factor_times_longer_before_it_is_a_stall(store_url):
    later = [0.0]

    def clock():
        return time.time() + later[0]

    validating = Recorder(store_url, run_name="long validation", flush_interval=0.05, heartbeat_timeout=60)
    starting = Recorder(store_url, run_name="slow start", flush_interval=0.05, heartbeat_timeout=60)
    try:
        for step in range(3):
            validating.log({"loss": 1.0}, step)
        validating.event(ev.VALIDATION_START, step=2)
        time.sleep(0.3)
        watcher = Watcher(store_url, notify=[], stall_after=10, phase_factor=3, clock=clock)
        assert watcher.poll() == []
        later[0] = 25  # past stall_after, within 3 x stall_after: a validation may take this long
        assert watcher.poll() == []
        later[0] = 31
        alerts = {a["run_id"]: a for a in watcher.poll()}
        assert set(alerts) == {validating.run_id, starting.run_id}
        v, s = alerts[validating.run_id], alerts[starting.run_id]
        assert v["title"].endswith("in validation") and v["evidence"]["phase"] == "validation"
        assert v["evidence"]["stall_after_s"] == 30 and "allowed 30 s there" in v["text"]
        assert s["evidence"]["phase"] == "the first step" and s["step"] is None
        watcher.close()

        # a closed validation is training again: stall_after alone
        validating.event(ev.VALIDATION_END, step=2)
        validating.log({"loss": 1.0}, 3)
        time.sleep(0.3)
        later[0] = 0
        watcher = Watcher(store_url, notify=[], stall_after=10, phase_factor=3, clock=clock)
        assert [a for a in watcher.poll() if a["run_id"] == validating.run_id] == []
        later[0] = 11
        (again,) = [a for a in watcher.poll() if a["run_id"] == validating.run_id]
        assert again["step"] == 3 and again["evidence"]["phase"] is None
        watcher.close()
    finally:
        validating.close()
        starting.close()


def test_bad_options_are_refused_and_no_store_is_created(store_url, capsys):
    with pytest.raises(ValueError, match="stall_after must be seconds > 0, received stall_after=0"):
        Watcher(store_url, notify=[], stall_after=0)
    with pytest.raises(ValueError, match="phase_factor must be a number >= 1, received phase_factor=0.5"):
        Watcher(store_url, notify=[], phase_factor=0.5)
    from tmon_core.cli import main

    assert main(["--store", store_url, "watch", "--once"]) == 2
    assert "no tmon store at" in capsys.readouterr().err
    assert not os.path.exists(store_url.removeprefix("sqlite:///"))
    with Recorder(store_url, flush_interval=0.05) as rec:
        rec.log({"loss": 1.0}, 0)
    assert main(["--store", store_url, "watch", "--once", "--lookback", "soon"]) == 1
    assert "--lookback" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_ends_the_watcher_cleanly(store_url):
    with Recorder(store_url, flush_interval=0.05) as rec:
        rec.log({"loss": 1.0}, 0)
    proc = subprocess.Popen(
        _watch_cmd(store_url, "--interval", "0.2"),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stderr.readline()
    assert "tmon watch: watching" in first and "recording only" in first
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err


@pytest.mark.slow
def test_watch_on_postgres(pg_server, pg_url, hook):
    _lost_once_and_not_again(pg_url, hook)
    hook.bodies.clear()
    _two_watchers_send_one_message(pg_url, hook)


@pytest.mark.slow
def test_watch_survives_a_postgres_outage(pg_server, pg_url, hook):
    if os.environ.get("TMON_TEST_POSTGRES"):
        pytest.skip("the outage stops the tests' own server; TMON_TEST_POSTGRES names another")
    open_store(pg_url).close()  # a store to watch
    proc = subprocess.Popen(
        _watch_cmd(pg_url, "--interval", "0.2", "--notify", f"json://127.0.0.1:{hook.port}/h"),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "tmon watch: watching" in proc.stderr.readline()
        time.sleep(0.5)
        pg_server.stop()
        assert "cannot reach the store" in proc.stderr.readline(), "the outage is said"
        time.sleep(1.0)  # several polls fail meanwhile: said once
    finally:
        pg_server.start()
    assert "reachable again" in proc.stderr.readline()
    (rid,) = _killed_runs(pg_url)  # the watcher goes on where it was: the run killed now is alerted
    (body,) = hook.wait_for(1)
    assert "victim-0: No heartbeat" in body["title"]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "cannot reach" not in err and rid in out
    assert _alerts(pg_url, rid).delivered.tolist() == [True]
