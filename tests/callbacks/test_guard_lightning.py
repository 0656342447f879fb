"""Guards on real Lightning fits: a tiny model whose loss is NaN at chosen steps, and what a user
checks afterwards: the weights and the lr the optimizer holds at each batch start, the run's status,
its last loss, its guard events and alerts. DDP (2 CPU processes): every rank rolls back at the same
step."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("lightning")
import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer  # noqa: E402

from examples.tiny_lightning import make  # noqa: E402
from tmon_callbacks.lightning import TMonCallback  # noqa: E402
from tmon_core import Guard, open_store  # noqa: E402
from tmon_core import events as ev  # noqa: E402

TinyRegressor, SyntheticData = make("lightning.pytorch")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class NanAt(TinyRegressor):
    """The loss is NaN at the steps ``nan_steps`` (so are the gradients of that step)."""

    def __init__(self, nan_steps=(), **kw):
        super().__init__(**kw)
        self.nan_steps = set(nan_steps)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step in self.nan_steps else loss


class Probe(Callback):
    """What the optimizer and the model hold at each batch start, after tmon applied its decisions."""

    def __init__(self):
        self.lrs, self.weights = {}, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        step = trainer.global_step
        self.lrs[step] = [g["lr"] for g in trainer.optimizers[0].param_groups]
        self.weights[step] = {k: v.detach().clone() for k, v in module.state_dict().items()}


def fit(tmp_path, cb, model, epochs=2, **kw):
    probe = Probe()
    t = Trainer(
        max_epochs=epochs,
        callbacks=[cb, probe],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        **kw,
    )
    t.fit(model, SyntheticData(n=256, batch_size=16))  # 12 steps per epoch
    return t, probe


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def finite(w: dict) -> bool:
    return all(torch.isfinite(v).all() for v in w.values())


def read(cb):
    run = open_store(cb.options.store).run(cb.run_id)
    return run, run.events(ev.GUARD), run.alerts(), run.metrics("loss")


def test_skip_leaves_the_weights_of_each_nan_step_unchanged(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard="skip")
    t, probe = fit(tmp_path, cb, NanAt((5, 9, 10)))
    for s in (5, 9, 10):
        assert same(probe.weights[s], probe.weights[s + 1]), f"step {s}'s update was applied"
    assert not same(probe.weights[4], probe.weights[5])  # a finite step updates them
    run, events, alerts, loss = read(cb)
    assert run.status == "completed" and math.isfinite(loss.value.iloc[-1])
    assert events.step.tolist() == [5, 9, 10] and {d["action"] for d in events.data} == {"skip"}
    assert alerts.rule.tolist() == ["guard"] * 3 and alerts.step.tolist() == [5, 9, 10]
    assert set(alerts.level) == {"warning"}
    assert loss.set_index("step").value[[5, 9, 10]].isna().all()  # the NaN steps' loss, as it was


def test_skip_with_gradient_accumulation_skips_the_whole_optimizer_step(tmp_path, store_url):
    class NanMicroBatch(TinyRegressor):
        """NaN in the second micro-batch of optimizer step 3 only."""

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step == 3 and batch_idx % 2 == 1 else loss

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard="skip")
    t, probe = fit(tmp_path, cb, NanMicroBatch(), epochs=1, accumulate_grad_batches=2)
    assert same(probe.weights[3], probe.weights[4]) and not same(probe.weights[4], probe.weights[5])
    run, events, alerts, loss = read(cb)
    assert events.step.tolist() == [3] and math.isfinite(loss.value.iloc[-1])


def test_rollback_restores_the_snapshot_and_halves_the_optimizers_lr(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard=Guard("rollback", every=4))
    t, probe = fit(tmp_path, cb, NanAt((10,), lr=0.05))
    # NaN at step 10: at the boundary of step 11, the weights of the snapshot at step 8, lr 0.05 -> 0.025
    assert same(probe.weights[11], probe.weights[8])
    assert probe.lrs[10] == [0.05] and probe.lrs[11] == [0.025] and probe.lrs[23] == [0.025]
    assert t.optimizers[0].param_groups[0]["lr"] == 0.025
    run, events, alerts, loss = read(cb)
    assert run.status == "completed" and math.isfinite(loss.value.iloc[-1])
    (data,) = events.data
    assert (data["action"], data["trigger"], data["step"], data["restored_step"]) == (
        "rollback",
        "nonfinite",
        10,
        8,
    )
    assert data["lr_before"] == [0.05] and data["lr_after"] == [0.025]
    rb, pc = run.events(ev.ROLLBACK), run.events(ev.PARAM_CHANGE)
    assert rb.step.tolist() == [11] and rb.data[0]["source"] == "guard"
    assert pc.step.tolist() == [11] and pc.data[0]["source"] == "guard"
    assert alerts.level.tolist() == ["warning"] and alerts.rule.tolist() == ["guard"]
    assert run.info()["config"]["guard"]["snapshot"]["where"] == "memory"


def test_rollback_with_a_step_scheduler_continues_it_from_the_halved_level(tmp_path, store_url):
    # StepLR(step_size=5, gamma=0.5) per step: lr 0.05 until 5, 0.025 until 10, ...
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard=Guard("rollback", every=4))
    t, probe = fit(tmp_path, cb, NanAt((6,), lr=0.05, scheduler="step"))
    # NaN at 6: back to the snapshot of step 4 (lr 0.05, the scheduler at 4) at step 7, lr x 0.5
    assert same(probe.weights[7], probe.weights[4])
    assert probe.lrs[4] == [0.05] and probe.lrs[7] == [0.025]
    sched = t.lr_scheduler_configs[0].scheduler
    assert sched.base_lrs == [0.025]  # the schedule continues from the halved level
    assert probe.lrs[8] == [0.0125]  # its step at 5 (counted from the snapshot) came at boundary 8


def test_stop_ends_the_run_completed_with_a_stopped_event_and_a_critical_alert(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard="stop")
    t, probe = fit(tmp_path, cb, NanAt((6,)))
    run, events, alerts, loss = read(cb)
    assert run.status == "completed"
    assert [(d["action"], d["step"]) for d in events.data] == [("stop", 6)]
    stopped = run.events(ev.STOPPED)
    assert stopped.step.tolist() == [7] and stopped.data[0]["source"] == "guard"
    assert alerts.level.tolist() == ["critical"]
    assert run.events(ev.TRAIN_END).data[0]["reason"] == ev.END_STOP_REQUEST
    assert finite(probe.weights[max(probe.weights)]) and same(probe.weights[6], probe.weights[7])
    assert all(finite(p) for p in [dict(t.lightning_module.state_dict())])


def test_without_a_guard_the_nan_stays_in_the_weights(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None)
    t, probe = fit(tmp_path, cb, NanAt((5,)))
    run, events, alerts, loss = read(cb)
    assert run.status == "completed" and events.empty
    assert not finite(probe.weights[6]) and math.isnan(loss.value.iloc[-1])


def test_a_healthy_fit_with_a_guard_has_no_guard_event_and_no_alert(tmp_path, store_url):
    cb = TMonCallback(
        store_url,
        flush_interval=0.05,
        sample_interval=None,
        guard=Guard("rollback", every=3),
        log_grad_norm=True,
    )
    t, probe = fit(tmp_path, cb, NanAt(()))
    run, events, alerts, loss = read(cb)
    assert run.status == "completed" and events.empty and alerts.empty
    assert run.events(ev.ROLLBACK).empty and run.events(ev.PARAM_CHANGE).empty
    norms = run.metrics("grad_norm")  # the guard's check's norm, recorded once per step
    assert len(norms) == 24 and norms.value.gt(0).all()


class Diverging(TinyRegressor):
    """From step 200 the loss it reports climbs 3 % a step (its gradients stay the plain loss's)."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        grow = 1.03 ** max(0, self.global_step - 200) - 1
        return loss + loss.detach() * grow


@pytest.mark.slow
def test_a_divergence_the_live_detector_finds_rolls_back_to_a_snapshot_before_it(tmp_path, store_url):
    cb = TMonCallback(
        store_url, flush_interval=0.05, sample_interval=None, guard=Guard("rollback", every=50, keep=3)
    )
    t = Trainer(
        max_steps=320,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    t.fit(Diverging(lr=0.01), SyntheticData(n=8000, batch_size=16))
    run = open_store(store_url).run(cb.run_id)
    data = run.events(ev.GUARD).data[0]
    assert data["trigger"] == "divergence" and data["action"] == "rollback"
    assert data["restored_step"] <= 200 < data["step"]  # a snapshot from before the onset, after it showed
    assert run.events(ev.ROLLBACK).data[0]["source"] == "guard" and run.status == "completed"


def test_one_callback_guards_two_fits_each_its_own_run(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard=Guard("rollback", every=4))
    fit(tmp_path, cb, NanAt((10,)), epochs=1)
    first = cb.run_id
    t, probe = fit(tmp_path, cb, NanAt((5,)), epochs=1)
    assert cb.run_id != first and same(probe.weights[6], probe.weights[4])  # this fit's own snapshot at 4
    store = open_store(store_url)
    assert [d["step"] for d in store.run(first).events(ev.GUARD).data] == [10]
    assert [d["restored_step"] for d in store.run(cb.run_id).events(ev.GUARD).data] == [4]


def test_the_pytorch_lightning_package_skips_too(tmp_path, store_url):
    pl = pytest.importorskip("pytorch_lightning")
    from tmon_callbacks.pytorch_lightning import TMonCallback as PLCallback

    Model, Data = make("pytorch_lightning")

    class Nan(Model):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step == 3 else loss

    seen = {}

    class Seen(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            seen[trainer.global_step] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    cb = PLCallback(store_url, flush_interval=0.05, sample_interval=None, guard="skip")
    t = pl.Trainer(
        max_epochs=1,
        callbacks=[cb, Seen()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    t.fit(Nan(), Data(n=128, batch_size=16))
    assert same(seen[3], seen[4]) and not same(seen[4], seen[5])
    assert [d["action"] for d in open_store(store_url).run(cb.run_id).events(ev.GUARD).data] == ["skip"]


DDP = textwrap.dedent("""
    import json, os, sys, warnings
    warnings.filterwarnings("ignore")
    sys.path.insert(0, {repo!r})
    import torch
    from lightning.pytorch import Callback, Trainer
    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback
    from tmon_core import Guard
    M, D = make()
    class NanAt(M):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            # rank 1 only: after DDP's all-reduce every rank's gradients are NaN
            if self.global_step == 9 and self.global_rank == 1:
                loss = loss * float("nan")
            return loss
    class Probe(Callback):
        seen = {{}}
        def on_train_batch_start(self, trainer, module, batch, idx):
            w = torch.cat([p.detach().flatten() for p in module.parameters()])
            self.seen[trainer.global_step] = [trainer.optimizers[0].param_groups[0]["lr"], w.tolist()]
    cb = TMonCallback({url!r}, flush_interval=0.05, sample_interval=None, guard=Guard("rollback", every=4))
    p = Probe()
    t = Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", callbacks=[cb, p], logger=False,
                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                log_every_n_steps=1)
    t.fit(NanAt(lr=0.05), D(n=256, batch_size=16))
    groups = list(torch.distributed.distributed_c10d._world.pg_names.values())
    with open(os.path.join({out!r}, f"rank{{t.global_rank}}.json"), "w") as f:
        json.dump({{"seen": p.seen, "run_id": cb.run_id, "groups": groups}}, f)
""")


@pytest.mark.slow
def test_ddp_ranks_roll_back_at_the_same_step(tmp_path, store_url):
    script = tmp_path / "ddp_guard.py"
    script.write_text(DDP.format(repo=REPO, url=store_url, out=str(tmp_path)))
    env = dict(os.environ, MASTER_PORT=str(31500 + os.getpid() % 1000))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["seen"] == r1["seen"]  # the same weights and lr at every step on both ranks
    assert r0["groups"] == r1["groups"] and len(r0["groups"]) <= 1, "tmon's gloo group is released at the end"
    seen = r0["seen"]
    # 96 samples per rank, 6 steps per epoch: NaN at step 9, back to the snapshot of step 8 at step 10
    assert seen["10"][1] == seen["8"][1] and seen["9"][0] == 0.05 and seen["10"][0] == 0.025
    assert all(math.isfinite(x) for x in seen[max(seen, key=int)][1])
    run = open_store(store_url).run(r0["run_id"])
    (data,) = run.events(ev.GUARD).data
    assert (data["action"], data["step"], data["restored_step"]) == ("rollback", 9, 8)
    assert run.events(ev.ROLLBACK).step.tolist() == [10] and run.status == "completed"
