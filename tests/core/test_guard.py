"""The guard's decisions, framework-free: a toy model trained by a plain loop, a real Recorder and
Controller into a real store, and the same calls, in the same order, as an adapter makes (see
``tmon_core.guard``). What is checked is what a user reads: the weights and lr of the toy model,
the run's events and alerts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tmon_core import Guard, Recorder, open_store
from tmon_core import events as ev
from tmon_core.control import Controller, SetParams, Stop
from tmon_core.guard import GuardRollback, GuardSnapshot


class Toy:
    """One weight trained towards 0 on loss = w², lr per param group (one group)."""

    def __init__(self, w: float = 4.0, lr: float = 0.1):
        self.w, self.lr = w, [lr]


class ToySnapshots:
    """A snapshot store of the toy's state: what ``_guard_torch.TorchSnapshots`` does for torch."""

    def __init__(self, toy: Toy):
        self.toy, self.kept = toy, {}

    def save(self, step):
        self.kept[step] = (self.toy.w, list(self.toy.lr))

    def restore(self, step):
        self.toy.w, self.toy.lr = self.kept[step][0], list(self.kept[step][1])
        self.kept = {s: v for s, v in self.kept.items() if s <= step}

    def describe(self):
        return {"where": "memory", "bytes": 16}


def fit(url, guard, *, steps=40, nan_at=(), loss_at=None, start_w=4.0, flush=None, snapshots=ToySnapshots):
    """Train the toy for ``steps`` steps with ``guard``; a NaN loss (and gradient) at ``nan_at``;
    ``loss_at(step, w)`` replaces the loss (a diverging one). Returns (toy, guard run, run id, log)."""
    rec = Recorder(url, flush_interval=0.05)
    ctl = Controller(rec, control="off")  # the guard acts whatever the control level
    toy = Toy(start_w)
    snaps = snapshots(toy)
    g = guard.begin(rec, ctl, lrs=lambda: toy.lr)
    log = {"w_before": {}, "w_after": {}, "lr": {}}
    stopped = False
    for step in range(steps):
        if step >= ctl.next_step:
            for d in ctl.due(step):
                if isinstance(d, GuardSnapshot):
                    try:
                        g.snapshot(d, step, snaps)
                    except (
                        OSError
                    ) as exc:  # as apply_decisions does: the decision is rejected, training goes on
                        ctl.resolve(d, step, applied=False, reason=str(exc))
                elif isinstance(d, GuardRollback):
                    ctl.resolve(d, step, applied=True, **g.rollback(d, step, snaps))
                elif isinstance(d, SetParams):
                    old = list(toy.lr)
                    for c in d.changes:
                        toy.lr[c.group] = c.value
                    ctl.resolve(d, step, applied=True, old={"lr": old}, new={"lr": list(toy.lr)})
                elif isinstance(d, Stop):
                    stopped = True
                    ctl.resolve(d, step, applied=True, event=ev.STOPPED, reason=d.reason)
        if stopped:
            break
        log["lr"][step] = toy.lr[0]
        loss = toy.w**2 if loss_at is None else loss_at(step, toy.w)
        grad = 2 * toy.w
        if step in nan_at:
            loss = grad = math.nan
        log["w_before"][step] = toy.w
        if not g.check(step, math.isfinite(loss) and math.isfinite(grad)):
            toy.w -= toy.lr[0] * grad
        log["w_after"][step] = toy.w
        rec.log({"loss": loss}, step)
        if flush and step in flush:
            rec.flush()
        g.step_end(step)
    g.close()
    rec.close()
    return toy, g, rec.run_id, log


def guard_events(url, run_id):
    run = open_store(url).run(run_id)
    return run, run.events(ev.GUARD), run.alerts()


# ------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "retry"}, "Guard mode must be one of 'skip', 'rollback', 'stop', received 'retry'"),
        ({"every": 0}, "Guard every must be an int >= 1, received every=0"),
        ({"lr_factor": 0}, "Guard lr_factor must be a number in (0, 1], received lr_factor=0"),
        ({"lr_factor": 2.0}, "received lr_factor=2.0"),
        ({"max_retries": 0}, "Guard max_retries must be an int >= 1, received max_retries=0"),
        ({"max_skips": -1}, "Guard max_skips must be an int >= 0, received max_skips=-1"),
        (
            {"on": ("nan",)},
            "Guard on must name one or more of 'nonfinite', 'divergence', received on=('nan',)",
        ),
        ({"on": ()}, "received on=()"),
        ({"mode": "skip", "on": ("divergence",)}, "Guard('skip') acts on non-finite steps only"),
        ({"keep": 0}, "Guard keep must be an int >= 1, received keep=0"),
    ],
)
def test_bad_options_fail_with_the_value_and_what_was_expected(kwargs, message):
    with pytest.raises(ValueError) as info:
        Guard(**kwargs)
    assert message in str(info.value)


def test_the_option_takes_none_a_mode_or_a_guard():
    assert Guard.from_option(None) is None
    assert Guard.from_option("skip").mode == "skip" and Guard.from_option("skip").on == ("nonfinite",)
    g = Guard("stop", every=7)
    assert Guard.from_option(g) is g and g.on == ("nonfinite", "divergence")
    with pytest.raises(
        ValueError,
        match="guard must be None, one of 'skip', 'rollback', 'stop' or a tmon_core.Guard, received guard=True",
    ):
        Guard.from_option(True)


# ------------------------------------------------------------------ healthy
@pytest.mark.parametrize("mode", ["skip", "rollback", "stop"])
def test_a_healthy_run_has_no_guard_event_and_no_alert(store_url, mode):
    toy, g, run_id, _ = fit(store_url, Guard(mode, every=5), steps=30)
    run, events, alerts = guard_events(store_url, run_id)
    assert events.empty and alerts.empty and g.actions == []
    assert run.status == "completed" and abs(toy.w) < 0.01
    if mode == "rollback":  # snapshots were kept (the first at step 0, then every 5 clean steps)
        assert [s for s, _ in g.snapshots] == [20, 25]
        assert run.info()["config"]["guard"]["snapshot"] == {"where": "memory", "bytes": 16}


# ------------------------------------------------------------------ skip
def test_skip_leaves_the_weights_of_a_nonfinite_step_as_they_were(store_url):
    toy, g, run_id, log = fit(store_url, Guard("skip"), steps=30, nan_at=(5, 6, 17))
    for s in (5, 6, 17):
        assert log["w_after"][s] == log["w_before"][s]
    assert log["w_after"][4] != log["w_before"][4]
    run, events, alerts = guard_events(store_url, run_id)
    assert run.status == "completed" and math.isfinite(toy.w) and abs(toy.w) < 0.1
    assert events.step.tolist() == [5, 6, 17]
    assert [d["action"] for d in events.data] == ["skip"] * 3
    assert [d["skips_in_a_row"] for d in events.data] == [1, 2, 1]
    assert alerts.rule.tolist() == ["guard"] * 3 and set(alerts.level) == {"warning"}
    assert alerts.step.tolist() == [5, 6, 17]


def test_skip_stops_after_max_skips_in_a_row(store_url):
    toy, g, run_id, log = fit(store_url, Guard("skip", max_skips=2), steps=30, nan_at=range(10, 30))
    run, events, alerts = guard_events(store_url, run_id)
    assert [d["action"] for d in events.data] == ["skip", "skip", "stop"]
    assert events.step.tolist() == [10, 11, 12]
    assert alerts.level.tolist() == ["warning", "warning", "critical"]
    stopped = run.events(ev.STOPPED)
    assert stopped.step.tolist() == [13] and stopped.data[0]["source"] == "guard"
    assert "3 non-finite steps in a row (max_skips=2)" in stopped.message[0]
    assert max(log["w_after"]) == 12 and math.isfinite(toy.w)  # not one NaN update got in


# ------------------------------------------------------------------ rollback
def test_rollback_restores_the_snapshot_and_halves_the_lr(store_url):
    toy, g, run_id, log = fit(store_url, Guard("rollback", every=5), steps=40, nan_at=(12, 23))
    run, events, alerts = guard_events(store_url, run_id)
    assert run.status == "completed" and math.isfinite(toy.w) and abs(toy.w) < 0.1
    # NaN at 12: back to the snapshot of step 10 at the boundary of step 13, lr 0.1 -> 0.05
    first, second = events.data
    assert (first["action"], first["trigger"], first["step"], first["restored_step"]) == (
        "rollback",
        "nonfinite",
        12,
        10,
    )
    assert first["lr_before"] == [0.1] and first["lr_after"] == [0.05] and first["attempt"] == 1
    assert log["w_before"][13] == log["w_before"][10] and log["lr"][13] == 0.05
    # NaN at 23: snapshots at 18 and 23 (every 5 clean steps from 13) came after the first rollback:
    # back to 23's (the state before the NaN step), attempt 1 again, its lr (0.05) halved
    assert (second["restored_step"], second["attempt"], second["lr_after"]) == (23, 1, [0.025])
    assert log["w_before"][24] == log["w_before"][23] and log["lr"][24] == 0.025
    rollbacks = run.events(ev.ROLLBACK)
    assert rollbacks.step.tolist() == [13, 24] and {d["source"] for d in rollbacks.data} == {"guard"}
    assert rollbacks.data[0]["new"]["restored_step"] == 10
    changes = run.events(ev.PARAM_CHANGE)
    assert changes.step.tolist() == [13, 24] and {d["source"] for d in changes.data} == {"guard"}
    assert changes.data[0]["new"] == {"lr": [0.05]}
    assert alerts.rule.tolist() == ["guard", "guard"] and set(alerts.level) == {"warning"}


def test_rollback_gives_up_after_max_retries_with_a_critical_alert(store_url):
    # NaN every few steps: no `every` clean steps between rollbacks, so they are retries of one
    toy, g, run_id, log = fit(
        store_url, Guard("rollback", every=10, max_retries=2), steps=60, nan_at=(12, 15, 18, 21)
    )
    run, events, alerts = guard_events(store_url, run_id)
    assert [(d["action"], d["attempt"]) for d in events.data] == [
        ("rollback", 1),
        ("rollback", 2),
        ("stop", 2),
    ]
    assert [d["lr_after"] for d in events.data][:2] == [[0.05], [0.025]]  # the snapshot's lr x 0.5, x 0.25
    assert alerts.level.tolist() == ["warning", "warning", "critical"]
    assert "gave up" in alerts.title.iloc[-1]
    assert run.events(ev.STOPPED).step.tolist() == [19] and run.status == "completed"
    assert math.isfinite(toy.w)


def test_divergence_found_by_the_live_detector_rolls_back_to_before_its_onset(store_url):
    # the loss falls, then from step 200 climbs far above its best: AlertEngine's divergence
    def loss_at(step, w):
        base = 1.0 / (1 + step / 20) * (1 + 0.02 * np.sin(step))
        return base * (1.0 if step < 200 else 1.03 ** (step - 200))

    toy, g, run_id, log = fit(
        store_url,
        Guard("rollback", every=50, keep=3),
        steps=320,
        loss_at=loss_at,
        flush=set(range(0, 320, 10)),
    )
    run, events, alerts = guard_events(store_url, run_id)
    assert len(events) >= 1
    first = events.data[0]
    assert first["trigger"] == "divergence" and first["action"] == "rollback"
    assert first["restored_step"] <= 200 < first["step"]  # a snapshot before the onset, acted on after it
    assert run.events(ev.ROLLBACK).data[0]["source"] == "guard"


def test_a_snapshot_that_fails_is_retried_every_steps_later_and_a_nan_then_stops(store_url):
    class Full(ToySnapshots):
        def save(self, step):
            raise OSError(f"No space left on device (step {step})")

    toy, g, run_id, log = fit(store_url, Guard("rollback", every=5), steps=30, nan_at=(12,), snapshots=Full)
    run = open_store(store_url).run(run_id)
    rejected = run.events(ev.REQUEST_REJECTED)
    assert rejected.step.tolist() == [0, 5, 10] and {d["source"] for d in rejected.data} == {"guard"}
    (data,) = run.events(ev.GUARD).data
    assert (data["action"], data["step"]) == ("stop", 12)
    assert "there is no snapshot to roll back to" in run.events(ev.STOPPED).message[0]


def test_stop_ends_the_run_at_the_next_boundary(store_url):
    toy, g, run_id, log = fit(store_url, Guard("stop"), steps=30, nan_at=(7,))
    run, events, alerts = guard_events(store_url, run_id)
    assert [(d["action"], d["trigger"], d["step"]) for d in events.data] == [("stop", "nonfinite", 7)]
    assert alerts.level.tolist() == ["critical"] and run.status == "completed"
    assert run.events(ev.STOPPED).step.tolist() == [8] and max(log["w_after"]) == 7
    assert log["w_after"][7] == log["w_before"][7]  # the NaN update was skipped: the weights stay finite


def test_without_a_guard_the_nan_gets_into_the_weights(store_url):
    # what the guard prevents: the same loop, no guard, NaN at step 5
    toy = Toy()
    for step in range(10):
        grad = math.nan if step == 5 else 2 * toy.w
        toy.w -= toy.lr[0] * grad
    assert math.isnan(toy.w)


def test_the_modules_examples_run():
    import doctest

    import tmon_core.guard

    result = doctest.testmod(tmon_core.guard, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------ the report
def guard_findings(url, run_id):
    from tmon_core import report

    r = report(run_id, store=url)
    return [f for f in r.findings if f.rule == "guard.actions"], r


def test_the_report_lists_the_rollbacks_and_says_the_run_recovered(store_url):
    toy, g, run_id, _ = fit(store_url, Guard("rollback", every=5), steps=60, nan_at=(12, 23))
    (f,), r = guard_findings(store_url, run_id)
    assert f.severity == "info" and f.evidence["verdict"] == "helped"
    assert [(a["step"], a["action"], a["restored_step"]) for a in f.evidence["actions"]] == [
        (12, "rollback", 10),
        (23, "rollback", 23),
    ]
    assert "step 12: rollback (nonfinite, back to step 10, lr 0.1 -> 0.05)" in f.detail
    assert "the run completed with a final loss of" in f.detail
    advice = [x for x in r.recommendations if x.rule == "guard.actions"]
    assert advice and advice[0].recommended_value == 0.025
    # the guard's lr changes are its own to judge, not control.lr_change's
    assert not [x for x in r.findings if x.rule == "control.lr_change"]
    # the NaN is said, but as a warning: the guard saved the run, so the run is not rated critical
    (nan,) = [x for x in r.findings if x.rule == "stability.nonfinite"]
    assert nan.severity == "warning" and "The guard acted on it" in nan.detail
    assert r.health != "critical"


def test_the_report_says_when_the_guard_stopped_the_run(store_url):
    toy, g, run_id, _ = fit(store_url, Guard("skip", max_skips=2), steps=30, nan_at=range(10, 30))
    (f,), _ = guard_findings(store_url, run_id)
    assert f.severity == "warning" and f.evidence["verdict"] == "stopped"
    assert f.title == "The guard stopped the run at step 12 (it gave up)"
    assert f.evidence["counts"] == {"skip": 2, "rollback": 0, "stop": 1}


def test_the_report_says_when_the_run_did_not_recover(store_url):
    # a skipped NaN, then a loss that climbs: skipping did not help
    def loss_at(step, w):
        return 1.0 + 0.1 * step

    toy, g, run_id, _ = fit(store_url, Guard("skip"), steps=40, nan_at=(8,), loss_at=loss_at)
    (f,), r = guard_findings(store_url, run_id)
    assert f.severity == "warning" and f.evidence["verdict"] == "did not help"
    assert f.title == "The guard acted, but the run did not recover"


def test_a_run_without_guard_events_has_no_guard_finding(store_url):
    toy, g, run_id, _ = fit(store_url, Guard("rollback"), steps=30)
    assert guard_findings(store_url, run_id)[0] == []
