"""Hostile control request rows (written straight into ``tmon_requests`` by anyone who can write
the store) against a real Lightning fit, on SQLite and PostgreSQL: each bad row ends rejected with
its reason, the run keeps writing and ends completed, and good requests after them still work."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

pytest.importorskip("lightning")
from lightning.pytorch import Callback, Trainer  # noqa: E402

from examples.tiny_lightning import make  # noqa: E402
from tests.callbacks.control_helpers import handed_over  # noqa: E402
from tmon_callbacks.lightning import TMonCallback  # noqa: E402
from tmon_core import Recorder, open_store  # noqa: E402
from tmon_core.cli import main as tmon  # noqa: E402
from tmon_core.control import Controller  # noqa: E402
from tmon_core.store.requests import MAX_DEPTH, MAX_PAYLOAD_CHARS, json_depth, parse_request_row  # noqa: E402
from tmon_core.store.schema import RequestRow  # noqa: E402

TinyRegressor, SyntheticData = make("lightning.pytorch")
TMON = shutil.which("tmon", path=os.path.dirname(sys.executable)) or "tmon"

DEEP = "[" * 20_000 + "]" * 20_000  # within the length bound, far beyond the depth bound
HOSTILE = {
    "deep": ("set_param", DEEP),
    "deep_in_object": ("set_param", '{"values": ' + "[" * 5000 + "]" * 5000 + "}"),
    "huge_id": ("rollback", json.dumps({"checkpoint_id": 10**30})),
    "huge_value": ("set_param", json.dumps({"values": {"lr": 10**40}})),
    "long": ("stop", json.dumps({"reason": "x" * (MAX_PAYLOAD_CHARS + 1)})),
    "not_json": ("stop", "{nope"),
    "digits": ("stop", '{"reason": ' + "9" * 5000 + "}"),
    "list": ("checkpoint", "[1, 2]"),
    "kind": ("format_disk", "{}"),
    "values_type": ("set_param", json.dumps({"values": [["lr", 0.1]]})),
}
REASONS = {
    "deep": "nested 20000 levels deep",
    "deep_in_object": "nested 5001 levels deep",
    "huge_id": "beyond 64 bits",
    "huge_value": "beyond 64 bits",
    "long": f"at most {MAX_PAYLOAD_CHARS}",
    "not_json": "not a valid JSON object",
    "digits": "not a valid JSON object",
    "list": "received list",
    "kind": "unknown request kind 'format_disk'",
    "values_type": "values must be a JSON object",
}


def insert_rows(url: str, run_id: str) -> dict[str, int]:
    """The hostile rows, inserted as a raw client would: no tmon API, no validation."""
    ids = {}
    with open_store(url) as store, store.write_engine.begin() as conn:
        for name, (kind, payload) in HOSTILE.items():
            ids[name] = conn.execute(
                RequestRow.__table__.insert().values(
                    run_id=run_id,
                    kind=kind,
                    payload=payload,
                    status="pending",
                    requested_by="intruder",
                    requested_at=time.time(),
                )
            ).inserted_primary_key[0]
    return ids


def outcomes(url: str, run_id: str) -> dict[int, tuple]:
    with open_store(url) as store:
        df = store.run(run_id).requests()
    return {int(r.id): (r.status, r.reason) for r in df.itertuples()}


class Steer(Callback):
    def __init__(self, actions):
        self.actions, self.lrs, self.statuses = actions, {}, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        step = trainer.global_step
        self.lrs[step] = trainer.optimizers[0].param_groups[0]["lr"]
        if step in self.actions:
            self.actions[step](trainer)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tmon.db"
    return request.getfixturevalue("pg_url")


@pytest.mark.slow
def test_hostile_rows_are_rejected_and_the_run_keeps_writing_and_obeys_later_requests(tmp_path, url):
    ids, good, statuses, recorders = {}, {}, [], []

    def attack(trainer):
        recorders.append(cb.session.recorder)
        ids.update(insert_rows(url, cb.run_id))
        deadline = time.time() + 20
        while time.time() < deadline:  # the writer rejects them at its next polls
            done = outcomes(url, cb.run_id)
            if all(done[i][0] != "pending" for i in ids.values()):
                break
            time.sleep(0.05)
        with open_store(url) as store:
            statuses.append(store.run(cb.run_id).status)
            good["lr"] = store.run(cb.run_id).set_param("lr", 0.02)
        handed_over(cb)

    def stop(trainer):
        assert tmon(["--store", url, "stop", cb.run_id, "-m", "enough", "--no-wait"]) == 0
        handed_over(cb)

    cb = TMonCallback(
        url, flush_interval=0.05, sample_interval=None, control="admin", report="off", widget=False
    )
    steer = Steer({3: attack, 8: stop})
    Trainer(
        max_epochs=3,
        callbacks=[cb, steer],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    ).fit(TinyRegressor(lr=0.05), SyntheticData(n=256, batch_size=16))

    done = outcomes(url, cb.run_id)
    for name, rid in ids.items():
        status, reason = done[rid]
        assert status == "rejected" and REASONS[name] in reason, (name, status, reason)
    assert statuses == ["running"]  # never "lost" while the writer met the rows
    assert good["lr"].status == "applied"
    assert steer.lrs[4] == pytest.approx(0.02)
    with open_store(url) as store:
        run = store.run(cb.run_id)
        assert run.status == "completed"
        assert run.events("stopped").message.tolist() == ["enough"]
        # applied before step 9, which completes; every step is in the store, none lost
        assert run.metrics("loss").step.tolist() == list(range(10))
    assert recorders[0].problems == []  # the writer never failed a batch over the rows
    # and `tmon requests` lists them all, each on its line, with its reason
    proc = subprocess.run(
        [TMON, "--store", url, "requests", cb.run_id], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(HOSTILE) + 2
    assert all(len(line) < 1500 for line in lines)
    assert any("rejected: unknown request kind 'format_disk'" in line for line in lines)


def test_a_listener_that_fails_rejects_its_requests_instead_of_leaving_them_pending(store_url):
    rec = Recorder(store_url, flush_interval=0.05)

    def broken(requests):
        raise RuntimeError("controller gone")

    rec.on_requests(broken)
    rec.log({"loss": 1.0}, step=0)
    assert rec.flush()
    with open_store(store_url) as store:
        req = store.run(rec.run_id).stop()
        assert req.wait(timeout=10) == "rejected"
        assert "could not take the request: RuntimeError: controller gone" in req.reason
        rec.log({"loss": 0.5}, step=1)
        rec.close()
        assert store.run(rec.run_id).metrics("loss").value.tolist() == [1.0, 0.5]


def test_the_parser_measures_before_it_parses():
    assert json_depth('{"a": [1, {"b": "[[[\\"["}]}') == 3
    assert json_depth("[" * 100_000) == 100_000  # counted in a loop: no recursion limit to hit
    with pytest.raises(ValueError, match=f"at most {MAX_DEPTH}"):
        parse_request_row({"id": 1, "kind": "stop", "payload": "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)})
    req = parse_request_row(
        {"id": 7, "kind": "stop", "payload": '{"reason": "[{ in a string"}', "requested_by": "me"}
    )
    assert req == {"id": 7, "kind": "stop", "payload": {"reason": "[{ in a string"}, "requested_by": "me"}
    assert parse_request_row({"id": 8, "kind": "checkpoint", "payload": None})["payload"] == {}


def test_a_request_the_controller_cannot_read_is_rejected_not_raised():
    class Rec:
        run_id = "r"

        def __init__(self):
            self.outcomes, self.events = [], []

        def resolve_request(self, rid, **fields):
            self.outcomes.append((rid, fields["status"], fields.get("reason")))

        def event(self, *a, **kw):
            self.events.append(a)

    rec = Rec()
    ctl = Controller(rec, control="admin")
    ctl.offer(
        [
            {"id": 1, "kind": "set_param", "payload": ["not", "an object"]},
            {"id": 2, "kind": "stop", "payload": {}},
        ]
    )
    decisions = ctl.due(0)
    assert [type(d).__name__ for d in decisions] == ["Stop"]
    assert rec.outcomes[0][:2] == (1, "rejected")
    assert "cannot read the request: AttributeError" in rec.outcomes[0][2]
