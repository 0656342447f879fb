"""Alert delivery through apprise to real local servers: an HTTP server taking JSON webhooks and an
SMTP server (aiosmtpd) taking e-mail. Rate limiting, retries, a target that is down or slow, and
secrets kept out of what is recorded."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("apprise")

from tmon_core.alerts.notify import Notifier, notify_urls, redact  # noqa: E402


class Hook:
    """A real HTTP server on localhost that keeps every JSON body POSTed to it."""

    def __init__(self, hold: threading.Event | None = None):
        self.bodies: list[dict] = []
        self.got = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                if hold is not None:
                    hold.wait(30)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.got:
                    hook.bodies.append(body)
                    hook.got.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[dict]:
        with self.got:
            self.got.wait_for(lambda: len(self.bodies) >= n, timeout)
        return list(self.bodies)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def _alert(rule="nonfinite", step=60, level="critical"):
    return {
        "rule": rule,
        "level": level,
        "title": f"NaN loss at step {step}",
        "text": "loss became NaN",
        "step": step,
    }


def _outcomes():
    got, cond = [], threading.Condition()

    def on_outcome(alert, outcome):
        with cond:
            got.append((alert, outcome))
            cond.notify_all()

    def wait(n, timeout=20.0):
        with cond:
            cond.wait_for(lambda: len(got) >= n, timeout)
        return list(got)

    return on_outcome, wait


def test_a_json_webhook_receives_the_alert_and_the_outcome_is_recorded(hook):
    on_outcome, wait = _outcomes()
    n = Notifier([f"json://127.0.0.1:{hook.port}/hook"], label="run 3f2a", on_outcome=on_outcome)
    n.send(_alert())
    body = hook.wait_for(1)[0]
    assert body["title"] == "[tmon critical] NaN loss at step 60 · run 3f2a"
    assert "loss became NaN" in body["message"] and "(step 60)" in body["message"]
    assert body["type"] == "failure"
    alert, outcome = wait(1)[0]
    assert outcome["delivered"] is True and outcome["reason"] is None
    n.close()


def test_a_flood_of_nans_sends_one_message_and_a_summary_of_what_was_held_back(hook):
    on_outcome, wait = _outcomes()
    n = Notifier([f"json://127.0.0.1:{hook.port}/hook"], on_outcome=on_outcome, min_interval_s=600)
    for step in range(50):
        n.send(_alert(step=step))
    n.send(_alert(rule="memory.gpu", level="warning"))  # another rule is not held back by this one
    outcomes = wait(51)
    assert sum(1 for _, o in outcomes if o["delivered"] is None) == 49
    n.close()
    bodies = hook.wait_for(3)
    assert len(bodies) == 3, [b["title"] for b in bodies]
    summary = [b for b in bodies if "held back" in b["message"]]
    assert len(summary) == 1 and "48 more alerts of this kind were held back" in summary[0]["message"]
    assert "(step 49)" in summary[0]["message"], "the summary carries the latest alert held back"


def test_a_target_that_is_down_is_retried_then_recorded_as_failed_without_its_secret():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    on_outcome, wait = _outcomes()
    url = f"json://tmonuser:s3cretpassw0rd@127.0.0.1:{port}/hook"
    n = Notifier([url], on_outcome=on_outcome, retries=2, backoff_s=0.01)
    n.send(_alert())
    alert, outcome = wait(1)[0]
    assert outcome["delivered"] is False and outcome["reason"]
    assert "s3cretpassw0rd" not in json.dumps(outcome), outcome
    assert all("s3cretpassw0rd" not in t for t in n.targets)
    n.close()


def test_a_slow_target_does_not_hold_up_the_caller():
    release = threading.Event()
    slow = Hook(hold=release)
    try:
        n = Notifier([f"json://127.0.0.1:{slow.port}/hook"])
        for step in range(5):
            n.send(_alert(rule=f"r{step}", step=step))  # returns at once: the server holds the first request
        assert slow.bodies == [], "send() waited for the server"
        release.set()
        assert len(slow.wait_for(5)) == 5
        n.close()
    finally:
        release.set()
        slow.close()


def test_an_email_reaches_a_real_smtp_server():
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")
    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    with socket.socket() as s:  # aiosmtpd checks its port by connecting to it: it needs a real one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctl = aiosmtpd.Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        on_outcome, wait = _outcomes()
        n = Notifier(
            [f"mailto://127.0.0.1:{port}?from=tmon@example.org&to=me@example.org"],
            on_outcome=on_outcome,
            retries=1,
        )
        n.send(_alert())
        _, outcome = wait(1)[0]
        assert outcome["delivered"] is True, outcome
        assert received and received[0].rcpt_tos == ["me@example.org"]
        assert b"NaN loss at step 60" in received[0].content
        n.close()
    finally:
        ctl.stop()


def test_urls_come_from_the_environment_or_a_file_and_bad_ones_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TMON_NOTIFY", "json://a/b, ntfy://topic")
    assert notify_urls() == ["json://a/b", "ntfy://topic"]
    f = tmp_path / "urls"
    f.write_text("# team channel\nslack://T000/B000/XXXXXXXX\n")
    monkeypatch.setenv("TMON_NOTIFY", str(f))
    assert notify_urls() == ["slack://T000/B000/XXXXXXXX"]
    with pytest.raises(ValueError, match="apprise URLs") as err:
        notify_urls(["hooks.slack.com/T000/B000/XXXXXXXX"])
    assert "XXXXXXXX" not in str(err.value)
    shown = redact("slack://T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX")
    assert "XXXXXXXXXXXXXXXXXXXXXXXX" not in shown and shown.startswith("slack://")


# ---------------------------------------------------------------------------- through a real Recorder
def test_a_recorder_alerts_nan_at_its_step_within_a_flush_and_delivers_it(hook, store_url):
    from tmon_core import Recorder, open_store

    rec = Recorder(
        store_url, run_name="nan-run", flush_interval=0.05, notify=[f"json://127.0.0.1:{hook.port}/hook"]
    )
    for step in range(100):
        rec.log({"loss": 1.0 / (step + 1) if step < 60 else float("nan")}, step)
    assert rec.flush()  # one flush interval: the alert is in the store
    run = open_store(store_url).run(rec.run_id)
    first = run.alerts()
    assert (
        first.rule.tolist() == ["nonfinite"]
        and first.step.tolist() == [60]
        and first.level.tolist() == ["critical"]
    )
    body = hook.wait_for(1)[0]
    assert "NaN loss at step 60" in body["title"] and "nan-run" in body["title"]
    rec.close()
    alerts = open_store(store_url).run(rec.run_id).alerts()
    assert alerts.rule.tolist() == ["nonfinite", "finished"]
    assert alerts.delivered.tolist() == [True, True], alerts
    assert len(hook.wait_for(2)) == 2


def test_alerts_are_off_unless_asked_and_a_bad_rule_fails_at_construction(store_url, monkeypatch):
    from tmon_core import Recorder, open_store

    monkeypatch.delenv("TMON_NOTIFY", raising=False)
    with Recorder(store_url) as rec:
        rec.log({"loss": float("nan")}, 0)
    assert open_store(store_url).run(rec.run_id).alerts().empty
    with pytest.raises(ValueError, match="alerts takes True, False, rule names"):
        Recorder(store_url, alerts=["nan"])
    with Recorder(store_url, alerts=True) as rec:  # recorded, nowhere to deliver
        rec.log({"loss": float("nan")}, 0)
    alerts = open_store(store_url).run(rec.run_id).alerts()
    assert alerts.rule.tolist() == ["nonfinite", "finished"] and alerts.delivered.isna().all()


def test_a_lightning_fit_that_goes_nan_alerts_at_that_step_through_the_callback(hook, store_url, tmp_path):
    pytest.importorskip("lightning")
    from lightning.pytorch import Trainer

    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback
    from tmon_core import open_store

    TinyRegressor, SyntheticData = make("lightning.pytorch")
    cb = TMonCallback(
        store_url,
        flush_interval=0.1,
        sample_interval=None,
        alerts=True,
        notify=[f"json://127.0.0.1:{hook.port}/hook"],
    )
    Trainer(
        max_epochs=1,
        callbacks=[cb],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    ).fit(TinyRegressor(nan_at_step=9), SyntheticData(n=256, batch_size=16))
    alerts = open_store(store_url).run(cb.run_id).alerts()
    nan = alerts[alerts.rule == "nonfinite"]
    assert nan.step.tolist() == [9] and nan.level.tolist() == ["critical"], alerts
    titles = [b["title"] for b in hook.wait_for(2)]
    assert any("NaN loss at step 9" in t for t in titles), titles
    with pytest.raises(ValueError, match="alerts takes True, False, rule names"):
        TMonCallback(alerts=["nan"])
