"""What every framework adapter must do when steered, tested once over a harness per adapter
(Lightning, HF Trainer, Keras): rejections with their reasons and an untouched optimizer, the
'off' control level, a clean stop, presets and custom parameters, and the constructor's checks.
What only one framework has (schedulers, rollback file formats, DDP/torchrun) stays in its own
test file. Assertions read the optimizer itself, not only the store."""

from __future__ import annotations

import math

import pytest

from tests.callbacks.adapters import harness_params
from tests.callbacks.control_helpers import handed_over
from tmon_core import Param, open_store
from tmon_core import events as ev

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
]


@pytest.fixture(params=harness_params())
def adapter(request):
    return request.param()


def test_invalid_requests_are_rejected_with_reasons_and_the_optimizer_is_untouched(
    adapter, tmp_path, store_url
):
    reqs = {}

    def ask():
        run = open_store(store_url).run(cb.run_id)
        reqs["unknown"] = run.set_param("learning_rate", 0.1)
        reqs["type"] = run.set_param("lr", "fast")
        reqs["nan"] = run.set_param("lr", math.nan)
        reqs["bounds"] = run.set_param("lr", 20.0)
        reqs["missing"] = run.set_param("eps", 1e-8)  # SGD has no eps
        reqs["betas"] = run.set_param("betas", [0.9, 0.99])  # ... nor betas
        reqs["group"] = run.set_param(f"lr@{adapter.groups}", 0.1)
        reqs["level"] = run.stop()  # needs admin
        reqs["rollback"] = run.rollback(12345)  # needs admin too
        reqs["atomic"] = run.set_params({"lr": 0.2, "eps": 1e-8})  # one bad value: nothing applied
        handed_over(cb)

    cb = adapter.callback(store_url, flush_interval=0.05, sample_interval=None)  # control="manage"
    fit = adapter.run(tmp_path, cb, {adapter.first + 2: ask}, epochs=2)
    reasons = {k: (r.status, r.reason) for k, r in reqs.items()}
    assert all(status == "rejected" for status, _ in reasons.values()), reasons
    assert "unknown parameter 'learning_rate'" in reasons["unknown"][1]
    assert "a number is needed, received str 'fast'" in reasons["type"][1]
    assert "not a finite number" in reasons["nan"][1]
    assert "lr=20.0 is out of bounds: lr must be in (0, 10]" in reasons["bounds"][1]
    assert "SGD has no 'eps'" in reasons["missing"][1] and "SGD has no 'betas'" in reasons["betas"][1]
    assert f"param group {adapter.groups} does not exist" in reasons["group"][1]
    assert "control level is 'manage'; stop needs 'admin'" in reasons["level"][1]
    assert "rollback needs 'admin'" in reasons["rollback"][1]
    assert "SGD has no 'eps'" in reasons["atomic"][1]
    assert len(fit.steps) == 2 * adapter.steps_per_epoch
    for step in fit.steps:  # untouched, every group, every step
        assert fit.lrs[step] == pytest.approx(adapter.untouched_lrs(step)), step
    run = open_store(store_url).run(cb.run_id)
    assert len(run.events(ev.REQUEST_REJECTED)) == len(reqs) and run.events(ev.PARAM_CHANGE).empty
    late = run.set_param("lr", 0.01)  # a finished run rejects at once, in the asking process
    assert late.status == "rejected" and "is completed" in late.reason


def test_control_off_rejects_every_request(adapter, tmp_path, store_url):
    reqs = []

    def ask():
        run = open_store(store_url).run(cb.run_id)
        reqs.extend([run.set_param("lr", 0.01), run.request_checkpoint("x"), run.stop()])
        handed_over(cb)

    cb = adapter.callback(store_url, flush_interval=0.05, sample_interval=None, control="off")
    fit = adapter.run(tmp_path, cb, {adapter.first + 2: ask})
    assert [r.status for r in reqs] == ["rejected"] * 3
    assert all("control level is 'off'" in r.reason for r in reqs)
    assert fit.steps == list(range(adapter.first, adapter.first + adapter.steps_per_epoch))
    assert all(fit.lrs[s] == pytest.approx(adapter.untouched_lrs(s)) for s in fit.steps)
    assert open_store(store_url).run(cb.run_id).checkpoints().empty


def test_stop_request_ends_the_fit_cleanly(adapter, tmp_path, store_url):
    at = adapter.first + 3

    def ask():
        open_store(store_url).run(cb.run_id).stop("enough")
        handed_over(cb)

    cb = adapter.callback(store_url, flush_interval=0.05, sample_interval=None, control="admin")
    fit = adapter.run(tmp_path, cb, {at: ask}, epochs=10)
    assert fit.steps == list(
        range(adapter.first, at + 2)
    )  # applied before the next step, which runs; then it ends
    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    stopped = run.events(ev.STOPPED)
    assert stopped.step.tolist() == [at + 1] and stopped.message.tolist() == ["enough"]
    assert run.events(ev.TRAIN_END).data[0]["reason"] == ev.END_STOP_REQUEST


def test_presets_and_custom_params(adapter, tmp_path, store_url):
    knob = {"value": 0.25}
    reqs, seen = [], []
    at = adapter.first + 1

    def ask():
        run = open_store(store_url).run(cb.run_id)
        reqs.extend(
            [
                run.apply_preset("cool-down"),
                run.set_param("knob", 0.5),
                run.set_param("knob", 2.0),
                run.apply_preset("nope"),
            ]
        )
        handed_over(cb)

    cb = adapter.callback(
        store_url,
        flush_interval=0.05,
        sample_interval=None,
        presets={"cool-down": {"lr": 0.001, "weight_decay": 0.0}},
        params={
            "knob": Param(get=lambda: knob["value"], set=lambda v: knob.update(value=v), bounds=(0.0, 1.0))
        },
        tags=["control"],
        notes="steered",
    )
    fit = adapter.run(tmp_path, cb, {at: ask, at + 1: lambda: seen.append(knob["value"])})
    assert [r.status for r in reqs] == ["applied", "applied", "rejected", "rejected"], [
        r.reason for r in reqs
    ]
    assert fit.lrs[at + 1][0] == pytest.approx(0.001) and fit.wds[at + 1][0] == 0.0
    assert seen == [0.5], "the custom parameter was set before the next step began"
    assert "out of bounds" in reqs[2].reason and "unknown preset 'nope'" in reqs[3].reason
    info = open_store(store_url).run(cb.run_id).info()
    assert info["tags"] == ["control"] and info["notes"] == "steered"


def test_the_constructor_refuses_bad_options_by_name(adapter):
    TMonCallback = adapter.callback_class()
    with pytest.raises(
        ValueError, match="control must be one of off, view, manage, admin, received control='root'"
    ):
        TMonCallback(control="root")
    with pytest.raises(ValueError, match="preset 'bad': lr=-1.0 is out of bounds"):
        TMonCallback(presets={"bad": {"lr": -1.0}})
    with pytest.raises(ValueError, match="schedule items must be tmon_core.At"):
        TMonCallback(schedule=[{"step": 3, "lr": 0.1}])
    with pytest.raises(ValueError, match="tags must be a list of non-empty strings"):
        TMonCallback(tags="a")
    with pytest.raises(ValueError, match="notes must be a string"):
        TMonCallback(notes=3)
    with pytest.raises(TypeError, match="unknown option.*'lr'.*its options are: store"):
        TMonCallback(lr=0.1)
