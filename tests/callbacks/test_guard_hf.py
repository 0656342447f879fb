"""Guards on real Hugging Face Trainer runs (a tiny BERT from a config, CPU) whose logits are NaN at
chosen steps; what is checked is what the optimizer and the model hold at each step's start, and
the run's events and alerts."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

from tests.callbacks.test_hf import TokenData, args, tiny_bert  # noqa: E402
from tmon_callbacks.hf import TMonCallback  # noqa: E402
from tmon_core import Guard, open_store  # noqa: E402
from tmon_core import events as ev  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Probe(TrainerCallback):
    """Makes the classifier's output NaN during the steps ``nan_steps`` (as HF numbers them: the
    global_step the optimizer step is recorded at) and reads the lr and the weights at each step's
    start, after tmon applied its decisions."""

    def __init__(self, model, nan_steps=()):
        self.nan_steps, self.on = set(nan_steps), False
        self.lrs, self.weights = {}, {}
        model.classifier.register_forward_hook(lambda m, i, out: out * float("nan") if self.on else out)

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kw):
        step = state.global_step + 1
        self.on = step in self.nan_steps
        self.lrs[step] = [g["lr"] for g in optimizer.param_groups]
        self.weights[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(tmp_path, cb, nan_steps=(), n=64, **kw):
    """64 samples, batch 8: 8 optimizer steps an epoch, 2 epochs: steps 1..16."""
    kw.setdefault("save_strategy", "no")
    kw.setdefault("learning_rate", 1e-3)
    model = tiny_bert()
    probe = Probe(model, nan_steps)
    trainer = Trainer(
        model=model, train_dataset=TokenData(n), callbacks=[cb, probe], args=args(tmp_path, **kw)
    )
    trainer.train()
    return trainer, probe


def linear(k, base=1e-3, total=16):
    """HF's default schedule (linear decay, no warm-up) at the step HF records as ``k``."""
    return base * (total - (k - 1)) / total


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def finite(w):
    return all(torch.isfinite(v).all() for v in w.values())


def read(cb):
    run = open_store(cb.options.store).run(cb.run_id)
    return run, run.events(ev.GUARD), run.alerts()


def test_skip_leaves_the_weights_of_each_nan_step_unchanged(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard="skip")
    trainer, probe = train(tmp_path, cb, nan_steps=(3, 5, 6))
    for s in (3, 5, 6):
        assert same(probe.weights[s], probe.weights[s + 1]), f"step {s}'s update was applied"
    assert not same(probe.weights[2], probe.weights[3])
    run, events, alerts = read(cb)
    assert run.status == "completed" and finite(dict(trainer.model.state_dict()))
    assert events.step.tolist() == [3, 5, 6] and {d["action"] for d in events.data} == {"skip"}
    assert alerts.rule.tolist() == ["guard"] * 3 and set(alerts.level) == {"warning"}


def test_rollback_restores_the_snapshot_and_halves_the_lr(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard=Guard("rollback", every=3))
    trainer, probe = train(tmp_path, cb, nan_steps=(8,))
    # snapshots before steps 1, 4, 7; NaN at 8: before step 9, the weights of 7's and its lr x 0.5
    assert same(probe.weights[9], probe.weights[7])
    assert probe.lrs[7][0] == pytest.approx(linear(7))
    assert probe.lrs[9][0] == pytest.approx(linear(7) * 0.5)
    assert probe.lrs[10][0] == pytest.approx(linear(8) * 0.5)  # the schedule continues from there
    run, events, alerts = read(cb)
    assert run.status == "completed" and finite(dict(trainer.model.state_dict()))
    (data,) = events.data
    assert (data["action"], data["step"], data["restored_step"], data["attempt"]) == ("rollback", 8, 7, 1)
    assert data["lr_after"] == pytest.approx([linear(7) * 0.5] * 2)  # HF: a decay and a no-decay group
    rb, pc = run.events(ev.ROLLBACK), run.events(ev.PARAM_CHANGE)
    assert rb.step.tolist() == [9] and rb.data[0]["source"] == "guard"
    assert pc.step.tolist() == [9] and pc.data[0]["source"] == "guard"
    assert alerts.level.tolist() == ["warning"]


def test_stop_ends_the_run_before_another_update(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard="stop")
    trainer, probe = train(tmp_path, cb, nan_steps=(4,))
    assert trainer.state.global_step == 4 and max(probe.weights) == 4
    assert finite(dict(trainer.model.state_dict()))
    run, events, alerts = read(cb)
    assert run.status == "completed"
    assert [(d["action"], d["step"]) for d in events.data] == [("stop", 4)]
    stopped = run.events(ev.STOPPED)
    assert stopped.data[0]["source"] == "guard" and alerts.level.tolist() == ["critical"]
    assert run.events(ev.TRAIN_END).data[0]["reason"] == ev.END_STOP_REQUEST


def test_without_a_guard_the_nan_gets_into_the_weights(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None)
    trainer, probe = train(tmp_path, cb, nan_steps=(4,))
    run, events, alerts = read(cb)
    assert run.status == "completed" and events.empty
    assert not finite(dict(trainer.model.state_dict()))


def test_a_healthy_run_with_a_guard_has_no_guard_event_and_no_alert(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, guard=Guard("rollback", every=3))
    trainer, probe = train(tmp_path, cb)
    run, events, alerts = read(cb)
    assert run.status == "completed" and events.empty and alerts.empty
    assert run.events(ev.ROLLBACK).empty and run.events(ev.PARAM_CHANGE).empty
    assert [probe.lrs[k][0] for k in (1, 9, 16)] == pytest.approx([linear(1), linear(9), linear(16)])
    assert math.isfinite(run.metrics("loss").value.iloc[-1])


TORCHRUN = textwrap.dedent("""
    import json, os, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {repo!r})
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from tests.callbacks.test_hf import TokenData, tiny_bert
    from tmon_callbacks.hf import TMonCallback
    from tmon_core import Guard
    cb = TMonCallback({url!r}, flush_interval=0.05, sample_interval=None, guard=Guard("rollback", every=2))
    model = tiny_bert()
    class Probe(TrainerCallback):
        seen, on = {{}}, False
        def on_step_begin(self, args, state, control, model=None, optimizer=None, **kw):
            step = state.global_step + 1
            # process 1 only: after DDP's all-reduce both processes' gradients are NaN
            Probe.on = step == 4 and args.process_index == 1
            w = torch.cat([p.detach().flatten() for p in model.parameters()])
            self.seen[step] = [optimizer.param_groups[0]["lr"], w.sum().item(), bool(torch.isfinite(w).all())]
    model.classifier.register_forward_hook(lambda m, i, out: out * float("nan") if Probe.on else out)
    args = TrainingArguments(output_dir={out!r}, per_device_train_batch_size=4, num_train_epochs=2,
                             save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
                             lr_scheduler_type="constant")
    Trainer(model=model, args=args, train_dataset=TokenData(32), callbacks=[cb, Probe()]).train()
    groups = list(torch.distributed.distributed_c10d._world.pg_names.values())
    with open(os.path.join({out!r}, f"rank{{args.process_index}}.json"), "w") as f:
        json.dump({{"seen": Probe.seen, "run_id": cb.run_id, "groups": groups}}, f)
""")


@pytest.mark.slow
def test_torchrun_processes_roll_back_at_the_same_step(tmp_path, store_url):
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN.format(repo=REPO, url=store_url, out=str(tmp_path)))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["seen"] == r1["seen"]  # the same lr and weights at every step on both processes
    # tmon's own gloo group is released when the fit ends: left to the interpreter's exit, one process
    # once aborted there ("terminate called without an active exception") while the other still ran
    assert r0["groups"] == r1["groups"] == ["0"]
    seen = r0["seen"]
    # snapshots before steps 1, 3; NaN at 4 (process 1): before step 5, the weights of 3's, lr halved
    assert seen["5"][1] == seen["3"][1] and seen["4"][0] == 5e-5 and seen["5"][0] == 2.5e-5
    assert all(v[2] for v in seen.values())
    run = open_store(store_url).run(r0["run_id"])
    (data,) = run.events(ev.GUARD).data
    assert (data["action"], data["step"], data["restored_step"]) == ("rollback", 4, 3)
    assert run.events(ev.ROLLBACK).step.tolist() == [5] and run.status == "completed"
