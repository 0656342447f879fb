"""Guards on a plain PyTorch loop (``tmon_core.track``): a tiny regression whose loss is NaN at chosen
steps; the weights and lr the optimizer holds before each step, the run's events and alerts."""

import math

import pytest
import torch

import tmon_core
from tmon_core import Guard, open_store
from tmon_core import events as ev


def loop(store_url, nan_steps=(), steps=30, scheduler=False, **options):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5) if scheduler else None
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    seen = {"w": {}, "lr": {}}
    with tmon_core.track(
        optimizer=opt,
        model=model,
        scheduler=sched,
        store=store_url,
        flush_interval=0.05,
        sample_interval=None,
        **options,
    ) as t:
        for step in range(steps):
            if t.should_stop:
                break
            seen["w"][step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            seen["lr"][step] = opt.param_groups[0]["lr"]
            loss = torch.nn.functional.mse_loss(model(x), y)
            if step in nan_steps:
                loss = loss * float("nan")
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            opt.zero_grad()
            t.step(loss=loss)
    return t, model, seen


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


def read(t):
    run = open_store(t.options.store).run(t.run_id)
    return run, run.events(ev.GUARD), run.alerts()


def test_skip_drops_the_update_of_each_nan_step(store_url):
    t, model, seen = loop(store_url, nan_steps=(4, 11), guard="skip")
    assert same(seen["w"][4], seen["w"][5]) and same(seen["w"][11], seen["w"][12])
    assert not same(seen["w"][5], seen["w"][6]) and finite(model)
    run, events, alerts = read(t)
    assert run.status == "completed" and events.step.tolist() == [4, 11]
    assert alerts.rule.tolist() == ["guard", "guard"]


def test_rollback_restores_the_snapshot_and_halves_the_lr(store_url):
    t, model, seen = loop(store_url, nan_steps=(13,), guard=Guard("rollback", every=5), scheduler=True)
    # snapshots before steps 0, 5, 10; NaN at 13: before step 14, 10's weights, its lr (0.025) x 0.5
    assert same(seen["w"][14], seen["w"][10])
    assert seen["lr"][10] == 0.025 and seen["lr"][14] == 0.0125
    # StepLR, back at its step 10 too, goes on from the halved level: its step 20 comes at step 24
    assert seen["lr"][23] == 0.0125 and seen["lr"][24] == 0.00625 and finite(model)
    run, events, alerts = read(t)
    (data,) = events.data
    assert (data["action"], data["step"], data["restored_step"], data["lr_after"]) == (
        "rollback",
        13,
        10,
        [0.0125],
    )
    assert run.events(ev.ROLLBACK).data[0]["source"] == "guard" and run.events(ev.ROLLBACK).step.tolist() == [
        14
    ]
    assert math.isfinite(run.metrics("loss").value.iloc[-1])


def test_stop_sets_should_stop_and_ends_the_run_completed(store_url):
    t, model, seen = loop(store_url, nan_steps=(6,), guard="stop")
    assert max(seen["w"]) == 6 and t.should_stop and finite(model)
    run, events, alerts = read(t)
    assert run.status == "completed" and [d["action"] for d in events.data] == ["stop"]
    assert run.events(ev.STOPPED).data[0]["source"] == "guard" and alerts.level.tolist() == ["critical"]


def test_a_healthy_loop_with_a_guard_records_no_guard_event(store_url):
    t, model, seen = loop(store_url, guard="rollback", log_grad_norm=True)
    run, events, alerts = read(t)
    assert events.empty and alerts.empty and len(run.metrics("grad_norm")) == 30


def test_a_guard_needs_the_model_and_the_optimizer(store_url):
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"track\(guard='skip'\) needs model= and optimizer="):
        tmon_core.track(optimizer=opt, store=store_url, guard="skip")
