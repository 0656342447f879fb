"""Steering real Hugging Face Trainer runs (a tiny BERT from a config, CPU): schedules, live requests
from another process, manual checkpoint and rollback, torchrun. What every adapter must do
(rejections, control levels, stop, presets) is tests/callbacks/test_every_adapter.py. Assertions
read the optimizer the Trainer steps with, not only the store."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

from tests.callbacks.control_helpers import LIVE, handed_over, request_arrived  # noqa: E402
from tests.callbacks.test_hf import TokenData, args, tiny_bert  # noqa: E402
from tmon_callbacks.hf import TMonCallback  # noqa: E402
from tmon_core import At, open_store  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Probe(TrainerCallback):
    """Reads what the optimizer holds at each step's start, after tmon applied its decisions, keyed
    by the step HF records that optimizer step at (global_step + 1); runs ``actions[step](trainer_kw)``
    at chosen steps and sleeps ``sleep`` s per step when asked."""

    def __init__(self, actions=None, sleep=0.0):
        self.actions, self.sleep = actions or {}, sleep
        self.steps, self.lrs, self.wds, self.weights, self.end_weights, self.opt_state = (
            [],
            {},
            {},
            {},
            {},
            {},
        )

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kw):
        step = state.global_step + 1
        self.steps.append(step)
        self.lrs[step] = [g["lr"] for g in optimizer.param_groups]
        self.wds[step] = [g["weight_decay"] for g in optimizer.param_groups]
        self.weights[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.opt_state[step] = {
            i: {k: v.clone() for k, v in s.items()} for i, s in optimizer.state_dict()["state"].items()
        }
        if step in self.actions:
            self.actions[step]()

    def on_step_end(self, args, state, control, model=None, **kw):
        self.end_weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.sleep:
            time.sleep(self.sleep)


def train(tmp_path, cb, probe, n=32, **kw):
    """32 samples, batch 8: 4 optimizer steps an epoch (2 epochs by default)."""
    kw.setdefault("save_strategy", "no")
    kw.setdefault("learning_rate", 1e-3)
    trainer = Trainer(
        model=tiny_bert(), train_dataset=TokenData(n), callbacks=[cb, probe], args=args(tmp_path, **kw)
    )
    trainer.train()
    return trainer


def linear(k, base=1e-3, total=8):
    """HF's default schedule (linear decay, no warm-up) at the step HF records as ``k``."""
    return base * (total - (k - 1)) / total


def recorded_checkpoints(run, timeout=5.0):
    deadline = time.time() + timeout
    while (df := run.checkpoints()).empty and time.time() < deadline:
        time.sleep(0.02)
    return df


def test_schedule_changes_lr_at_the_exact_step_and_weight_decay_at_an_epoch(tmp_path, store_url):
    cb = TMonCallback(
        store_url,
        flush_interval=0.1,
        sample_interval=None,
        schedule=[At(step=3, lr=2e-3), At(epoch=1, weight_decay=0.01)],
    )
    probe = Probe()
    trainer = train(tmp_path, cb, probe)
    lrs = [probe.lrs[k][0] for k in range(1, 9)]
    # before step 3, HF's linear schedule; at 3 the new level; then the same line, rescaled (scale mode)
    factor = 2e-3 / linear(3)
    assert lrs == pytest.approx([linear(1), linear(2)] + [factor * linear(k) for k in range(3, 9)])
    assert all(probe.lrs[k][1] == probe.lrs[k][0] for k in probe.lrs)  # both param groups, same factor
    assert [probe.wds[k] for k in range(1, 9)] == [[0.0, 0.0]] * 4 + [[0.01, 0.01]] * 4  # epoch 1 = step 5
    run = open_store(store_url).run(cb.run_id)
    assert run.metrics("lr").step.tolist() == list(range(1, 9))
    assert run.metrics("lr").value.tolist() == pytest.approx(lrs)
    hf_lr = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert hf_lr == pytest.approx(lrs) and "learning_rate" not in run.metric_keys()  # HF's, stored once as lr
    changes = run.events("param_change")
    assert changes.step.tolist() == [3, 5]
    assert changes.data[0]["source"] == "schedule"
    assert changes.data[0]["old"]["lr"] == pytest.approx([linear(3)] * 2)  # one value per param group
    assert changes.data[0]["new"]["lr"] == pytest.approx([2e-3] * 2)
    assert run.info()["config"]["control"]["schedule"][0]["step"] == 3


@pytest.mark.slow
def test_live_change_from_another_process_sticks_with_the_linear_schedule(tmp_path, store_url):
    procs = []
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    probe = Probe(
        {
            3: lambda: procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", LIVE, store_url, cb.run_id], stdout=subprocess.PIPE, text=True
                )
            ),
            4: lambda: request_arrived(store_url, cb.run_id),
        },
        sleep=0.05,
    )
    train(tmp_path, cb, probe, n=64, max_steps=60)  # 60 steps of ~0.06 s
    out = procs[0].communicate(timeout=60)[0].split()
    assert out[1] == "applied"
    run = open_store(store_url).run(cb.run_id)
    req = run.requests().iloc[0]
    k0 = int(req.applied_step)
    # latency: within one poll interval (0.1 s) plus one step (~0.06 s) of being asked
    assert req.applied_at - req.requested_at < 0.1 + 0.06 + 0.35  # + scheduling slack on a shared machine
    lrs = [probe.lrs[k][0] for k in range(1, 61)]
    assert lrs[: k0 - 1] == pytest.approx([linear(k, total=60) for k in range(1, k0)])
    # from the change on: the linear decay goes on from 0.02, down to 0 at the end as before
    assert lrs[k0 - 1 :] == pytest.approx(
        [0.02 * linear(k, total=60) / linear(k0, total=60) for k in range(k0, 61)]
    )
    assert run.metrics("lr").value.tolist() == pytest.approx(lrs)
    event = run.events("param_change").iloc[0]
    assert event.step == k0 and event.data["requested_by"] == "second-process"
    assert event.data["request_id"] == int(out[0])


def test_manual_checkpoint_then_rollback_restores_weights_and_optimizer_and_training_completes(
    tmp_path, store_url
):
    reqs = {}

    def save():
        reqs["ckpt"] = (
            open_store(store_url).run(cb.run_id).request_checkpoint("before lr drop", ["pre-change"])
        )
        handed_over(cb)

    def roll():
        run = open_store(store_url).run(cb.run_id)
        reqs["rollback"] = run.rollback(int(recorded_checkpoints(run).id.iloc[0]))
        handed_over(cb)

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, control="admin")
    probe = Probe({2: save, 5: roll})
    trainer = train(tmp_path, cb, probe)  # save_strategy="no": the only checkpoint is the one asked for
    assert trainer.state.global_step == 8 and probe.steps == list(
        range(1, 9)
    )  # the step counter kept counting
    assert reqs["ckpt"].status == "applied" and reqs["rollback"].status == "applied"
    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    ckpt = run.checkpoints().iloc[0]
    # asked before step 3: HF saves after that step, through its own mechanism (control.should_save)
    assert ckpt.source == "manual" and ckpt.description == "before lr drop" and ckpt.tags == ["pre-change"]
    assert ckpt.step == 3 and ckpt.path.endswith("checkpoint-3") and os.path.isdir(ckpt.path)
    assert reqs["ckpt"].info()["new_value"] == {"path": ckpt.path}
    from safetensors.torch import load_file

    saved = load_file(os.path.join(ckpt.path, "model.safetensors"))
    for k, v in saved.items():  # the weights after step 3 ...
        assert torch.equal(probe.end_weights[3][k], v), k
    for k, v in saved.items():  # ... are the model's again once the rollback applied before step 6
        assert torch.equal(probe.weights[6][k], v), k
    assert not torch.equal(probe.end_weights[5]["classifier.weight"], saved["classifier.weight"])
    # the optimizer's moments came back with them; its lr stayed the schedule's
    saved_opt = torch.load(os.path.join(ckpt.path, "optimizer.pt"), weights_only=True)["state"]
    for i, s in saved_opt.items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(probe.opt_state[6][i][key], s[key])
    assert probe.lrs[6][0] == pytest.approx(linear(6))
    rb = run.events("rollback").iloc[0]
    assert rb.step == 6 and rb.data["new"]["checkpoint_id"] == int(ckpt.id)
    assert rb.data["new"]["checkpoint_step"] == 3 and rb.data["new"]["optimizer_restored"] is True


def test_rollback_to_a_mismatched_corrupt_or_missing_checkpoint_is_rejected(tmp_path, store_url):
    from safetensors.torch import save_file

    reqs = {}

    def save():
        open_store(store_url).run(cb.run_id).request_checkpoint()
        handed_over(cb)

    def roll(kind):
        def action():
            run = open_store(store_url).run(cb.run_id)
            ckpt = recorded_checkpoints(run).iloc[0]
            weights = os.path.join(ckpt.path, "model.safetensors")
            if kind == "mismatch":
                save_file({"classifier.weight": torch.zeros(3, 16)}, weights)
            elif kind == "corrupt":
                with open(weights, "wb") as f:
                    f.write(b"not a checkpoint")
            else:
                shutil.rmtree(ckpt.path)
            reqs[kind] = run.rollback(int(ckpt.id))
            handed_over(cb)

        return action

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, control="admin")
    probe = Probe({1: save, 3: roll("mismatch"), 4: roll("corrupt"), 5: roll("missing")})
    train(tmp_path, cb, probe)
    assert {k: r.status for k, r in reqs.items()} == dict.fromkeys(
        ("mismatch", "corrupt", "missing"), "rejected"
    )
    assert "does not fit this model: missing [" in reqs["mismatch"].reason
    assert "cannot read checkpoint" in reqs["corrupt"].reason
    assert "does not exist" in reqs["missing"].reason
    for k in (4, 5, 6):  # the model is as the last step left it: nothing half-loaded
        for name, v in probe.weights[k].items():
            assert torch.equal(v, probe.end_weights[k - 1][name]), (k, name)
    assert probe.steps == list(range(1, 9))


TORCHRUN = textwrap.dedent("""
    import json, os, sys, time, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {repo!r})
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from tests.callbacks.test_hf import TokenData, tiny_bert
    from tmon_callbacks.hf import TMonCallback
    from tmon_core import open_store
    cb = TMonCallback({url!r}, flush_interval=0.05, sample_interval=None)
    class Probe(TrainerCallback):
        lrs = []
        def on_step_begin(self, args, state, control, optimizer=None, **kw):
            self.lrs.append((state.global_step + 1, optimizer.param_groups[0]["lr"]))
            if args.process_index == 0 and state.global_step + 1 == 3:
                open_store({url!r}).run(cb.run_id).set_param("lr", 0.0123)
                time.sleep(0.5)  # the other process waits at the next step's decision broadcast
    args = TrainingArguments(output_dir={out!r}, per_device_train_batch_size=4, num_train_epochs=2,
                             save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
                             lr_scheduler_type="constant")
    Trainer(model=tiny_bert(), args=args, train_dataset=TokenData(32), callbacks=[cb, Probe()]).train()
    with open(os.path.join({out!r}, f"rank{{args.process_index}}.json"), "w") as f:
        json.dump(Probe.lrs, f)
""")


@pytest.mark.slow
def test_torchrun_processes_apply_a_live_change_at_the_same_step(tmp_path, store_url):
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
    assert r0 == r1 and [s for s, _ in r0] == list(range(1, 9))  # the same lr at every step on both
    lrs = [lr for _, lr in r0]
    k = lrs.index(0.0123) + 1
    assert k > 3 and set(lrs[: k - 1]) == {5e-5} and set(lrs[k - 1 :]) == {0.0123}  # 5e-5: HF's default lr
    run = open_store(store_url).run(open_store(store_url).runs().id[0])
    assert run.requests().applied_step.tolist() == [k]
    assert run.status == "completed"
