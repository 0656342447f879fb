"""Steering real Lightning fits: schedules and their modes, live requests from another process,
checkpoint/rollback, the CLI, DDP. What every adapter must do (rejections, control levels, stop,
presets) is tests/callbacks/test_every_adapter.py. Assertions read the optimizer itself."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("lightning")
import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer  # noqa: E402

from examples.tiny_lightning import make  # noqa: E402
from tests.callbacks.control_helpers import LIVE, handed_over, request_arrived  # noqa: E402
from tmon_callbacks.lightning import TMonCallback  # noqa: E402
from tmon_core import At, open_store  # noqa: E402

TinyRegressor, SyntheticData = make("lightning.pytorch")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMON = shutil.which("tmon", path=os.path.dirname(sys.executable)) or "tmon"


class Probe(Callback):
    """Reads what the optimizer holds at each batch start (after tmon applied its decisions) and
    runs ``actions[step](trainer, module)`` at chosen steps."""

    def __init__(self, actions=None):
        self.lrs, self.wds, self.steps, self.weights = [], [], [], {}
        self.actions = actions or {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        step = trainer.global_step
        groups = trainer.optimizers[0].param_groups
        self.steps.append(step)
        self.lrs.append([g["lr"] for g in groups])
        self.wds.append([g["weight_decay"] for g in groups])
        self.weights[step] = {k: v.detach().clone() for k, v in module.state_dict().items()}
        if step in self.actions:
            self.actions[step](trainer, module)


def fit(tmp_path, cb, probe, model=None, epochs=2, n=256, **kw):
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
    t.fit(model or TinyRegressor(), SyntheticData(n=n, batch_size=16))  # 12 steps per epoch at n=256
    return t


def recorded_checkpoints(run, timeout=5.0):
    """The run's checkpoints, once the writer has flushed at least one."""
    deadline = time.time() + timeout
    while (df := run.checkpoints()).empty and time.time() < deadline:
        time.sleep(0.02)
    return df


def test_schedule_changes_lr_at_the_exact_step_and_weight_decay_at_an_epoch(tmp_path, store_url):
    cb = TMonCallback(
        store_url,
        flush_interval=0.1,
        sample_interval=None,
        schedule=[At(step=7, lr=0.01), At(epoch=1, weight_decay=0.001)],
    )
    probe = Probe()
    fit(tmp_path, cb, probe, TinyRegressor(lr=0.05))
    assert [lr[0] for lr in probe.lrs] == pytest.approx([0.05] * 7 + [0.01] * 17)
    assert [wd[0] for wd in probe.wds] == [0.0] * 12 + [0.001] * 12
    run = open_store(store_url).run(cb.run_id)
    assert run.metrics("lr").value.tolist() == pytest.approx([lr[0] for lr in probe.lrs])
    changes = run.events("param_change")
    assert changes.step.tolist() == [7, 12]
    assert changes.data[0]["source"] == "schedule" and changes.data[0]["old"] == {"lr": 0.05}
    assert changes.data[0]["new"] == {"lr": 0.01}
    assert run.info()["config"]["control"]["schedule"][0]["step"] == 7


def test_scale_mode_keeps_a_lambda_schedule_going_from_the_new_level(tmp_path, store_url):
    class Decay(TinyRegressor):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    cb = TMonCallback(
        store_url, flush_interval=0.1, sample_interval=None, schedule=[At(step=10, lr=0.5 / 11)]
    )
    probe = Probe()
    fit(tmp_path, cb, probe, Decay())
    lrs = [lr[0] for lr in probe.lrs]
    assert lrs[:10] == pytest.approx([0.1 / (1 + k) for k in range(10)])
    # the change sets 0.5/11 at step 10 (5x the schedule's 0.1/11); LambdaLR keeps its shape from there
    assert lrs[10:] == pytest.approx([0.5 / (1 + k) for k in range(10, 24)])


def test_pin_mode_holds_the_value_against_the_scheduler_and_a_ramp_is_linear(tmp_path, store_url):
    class Decay(TinyRegressor):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    cb = TMonCallback(
        store_url, flush_interval=0.1, sample_interval=None, schedule=[At(step=4, lr=0.2, ramp=4, mode="pin")]
    )
    probe = Probe()
    fit(tmp_path, cb, probe, Decay(), epochs=1)
    lrs = [lr[0] for lr in probe.lrs]
    start = 0.1 * 0.5**2  # StepLR's value at step 4
    assert lrs[4:9] == pytest.approx([start + (0.2 - start) * f for f in (0, 0.25, 0.5, 0.75, 1.0)])
    events = open_store(store_url).run(cb.run_id).events("param_change")
    assert events.step.tolist() == [4, 8]  # ramp start and end, not every intermediate step


@pytest.mark.slow
def test_live_change_from_another_process_with_onecycle_running(tmp_path, store_url):
    class OneCycle(TinyRegressor):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=60)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    procs = []
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    probe = Probe(
        {
            12: lambda t, m: procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", LIVE, store_url, cb.run_id], stdout=subprocess.PIPE, text=True
                )
            ),
            13: lambda t, m: request_arrived(store_url, cb.run_id),
        }
    )
    fit(tmp_path, cb, probe, OneCycle(sleep=0.05), epochs=5, n=256)  # 60 steps
    out = procs[0].communicate(timeout=60)[0].split()
    assert out[1] == "applied"
    run = open_store(store_url).run(cb.run_id)
    req = run.requests().iloc[0]
    k0 = int(req.applied_step)
    # latency: applied within one poll interval (0.1 s) plus one step (~0.05 s) of being asked
    assert req.applied_at - req.requested_at < 0.1 + 0.05 + 0.35  # + process start and scheduling slack
    lrs = [lr[0] for lr in probe.lrs]
    assert lrs[k0] == pytest.approx(0.02)

    # the same OneCycle schedule without the change, to compare shapes
    ref = Probe()
    fit(
        tmp_path / "ref",
        TMonCallback(f"sqlite:///{tmp_path}/ref.db", sample_interval=None),
        ref,
        OneCycle(),
        epochs=5,
    )
    ref_lrs = [lr[0] for lr in ref.lrs]
    factor = 0.02 / ref_lrs[k0]
    assert lrs[:k0] == pytest.approx(ref_lrs[:k0])
    assert lrs[k0:] == pytest.approx([factor * x for x in ref_lrs[k0:]])  # the cycle goes on, rescaled
    assert run.metrics("lr").value.tolist() == pytest.approx(lrs)
    event = run.events("param_change").iloc[0]
    assert event.data["requested_by"] == "second-process" and event.data["request_id"] == int(out[0])
    impact = run.impact(int(out[0]), window=10)
    assert impact["before_points"] == 10 and impact["after_points"] == 10


def test_manual_checkpoint_then_rollback_restores_weights_and_training_completes(tmp_path, store_url):
    reqs = {}

    def save(trainer, module):
        reqs["ckpt"] = (
            open_store(store_url).run(cb.run_id).request_checkpoint("before lr drop", ["pre-change"])
        )
        handed_over(cb)

    def roll(trainer, module):
        run = open_store(store_url).run(cb.run_id)
        reqs["rollback"] = run.rollback(int(recorded_checkpoints(run).id.iloc[0]))
        handed_over(cb)

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, control="admin")
    probe = Probe({4: save, 15: roll})
    t = fit(tmp_path, cb, probe, epochs=2)
    assert t.state.finished and probe.steps == list(range(24))  # the step counter kept counting
    assert reqs["ckpt"].status == "applied" and reqs["rollback"].status == "applied"
    run = open_store(store_url).run(cb.run_id)
    ckpt = run.checkpoints().iloc[0]
    assert ckpt.source == "manual" and ckpt.description == "before lr drop" and ckpt.tags == ["pre-change"]
    assert ckpt.step == 5 and os.path.exists(ckpt.path)
    saved = torch.load(ckpt.path, weights_only=True)["state_dict"]
    # the checkpoint saved before step 5 holds the weights seen at step 5; after the rollback
    # (applied before step 16) the model holds them again
    for k, v in saved.items():
        assert torch.equal(probe.weights[5][k], v)
    restored = probe.weights[16]  # captured by the probe after tmon applied the rollback at this step
    for k, v in saved.items():
        assert torch.equal(restored[k], v), k
    assert not torch.equal(probe.weights[15]["head.weight"], saved["head.weight"])
    rb = run.events("rollback").iloc[0]
    assert rb.step == 16 and rb.data["new"]["checkpoint_id"] == int(ckpt.id)
    # tags are editable afterwards; deleting removes the file and marks the record
    run.tag_checkpoint(int(ckpt.id), ["good", "pre-change"])
    assert run.checkpoints().tags.iloc[0] == ["good", "pre-change"]
    run.delete_checkpoint(int(ckpt.id))
    assert not os.path.exists(ckpt.path) and run.checkpoints().empty


def test_rollback_to_a_missing_or_corrupt_file_is_rejected(tmp_path, store_url):
    reqs = []

    def save(trainer, module):
        open_store(store_url).run(cb.run_id).request_checkpoint()
        handed_over(cb)

    def roll(trainer, module):
        run = open_store(store_url).run(cb.run_id)
        ckpts = recorded_checkpoints(run)
        with open(ckpts.path.iloc[0], "wb") as f:
            f.write(b"not a checkpoint")
        reqs.append(run.rollback(int(ckpts.id.iloc[0])))
        handed_over(cb)

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, control="admin")
    probe = Probe({2: save, 6: roll})
    fit(tmp_path, cb, probe, epochs=1)
    assert reqs[0].status == "rejected" and "cannot read checkpoint" in reqs[0].reason
    assert probe.steps == list(range(12))


def _add_checkpoint_row(store_url, run_id, path, deleted=False) -> int:
    """A checkpoint row as anyone who can write the store can add one: no file check, no recorder."""
    from tmon_core.store.schema import CheckpointRow

    with open_store(store_url) as store, store.write_engine.begin() as conn:
        return conn.execute(
            CheckpointRow.__table__.insert().values(
                run_id=run_id, wall_time=time.time(), step=1, path=str(path), deleted=deleted
            )
        ).inserted_primary_key[0]


def test_rollback_loads_only_the_run_s_own_checkpoint_dirs_or_a_path_allowed_in_this_process(
    tmp_path, store_url
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    reqs, ids = {}, {}

    def save(trainer, module):
        trainer.save_checkpoint(
            elsewhere / "valid.ckpt"
        )  # a real checkpoint, but not where tmon recorded any
        reqs["ckpt"] = open_store(store_url).run(cb.run_id).request_checkpoint("mine")
        handed_over(cb)

    def attack(trainer, module):
        run = open_store(store_url).run(cb.run_id)
        good = recorded_checkpoints(run).iloc[0]
        ids["mine"] = int(good.id)
        link = os.path.join(os.path.dirname(good.path), "link.ckpt")
        os.symlink(elsewhere / "valid.ckpt", link)  # inside the run's directory, pointing out of it
        for name, path, deleted in (
            ("outside", elsewhere / "valid.ckpt", False),
            ("passwd", "/etc/passwd", False),
            ("link", link, False),
            ("deleted", good.path, True),
        ):
            ids[name] = _add_checkpoint_row(store_url, cb.run_id, path, deleted)
            reqs[name] = run.rollback(ids[name])
        handed_over(cb)

    def allowed(trainer, module):
        run = open_store(store_url).run(cb.run_id)
        reqs["allowed"] = run.rollback(ids["outside"], allow_path=True)  # this process trains the run
        reqs["passwd_allowed"] = run.rollback(ids["passwd"], allow_path=True)
        handed_over(cb)

    def mine(trainer, module):
        run = open_store(store_url).run(cb.run_id)
        reqs["mine"] = run.rollback(ids["mine"])
        handed_over(cb)

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, control="admin")
    probe = Probe({2: save, 5: attack, 8: allowed, 10: mine})
    t = fit(tmp_path, cb, probe, epochs=1)
    assert t.state.finished and probe.steps == list(range(12))
    status = {k: (r.status, r.reason) for k, r in reqs.items()}
    ckpt_dir = os.path.realpath(tmp_path / "checkpoints")
    for name in ("outside", "passwd", "link"):
        assert status[name][0] == "rejected", (name, status[name])
        assert f"checkpoint {ids[name]}: checkpoint path" in status[name][1]
        assert (
            f"is outside the directories where this run recorded its checkpoints ({ckpt_dir})"
            in status[name][1]
        )
    assert status["deleted"][0] == "rejected"
    assert f"checkpoint {ids['deleted']} is marked deleted" in status["deleted"][1]
    assert status["allowed"][0] == "applied"
    assert status["passwd_allowed"] == (
        "rejected",
        "cannot read checkpoint /etc/passwd: not a torch checkpoint (torch.save writes a zip archive; "
        f"this file starts with {open('/etc/passwd', 'rb').read(4)!r})",
    )
    assert status["mine"][0] == "applied" and status["ckpt"][0] == "applied", status["mine"]
    saved = torch.load(elsewhere / "valid.ckpt", weights_only=True)["state_dict"]
    for k, v in saved.items():  # the allowed rollback loaded the file outside (applied before step 9)
        assert torch.equal(probe.weights[9][k], v), k
    # a process that does not train the run cannot allow a path
    script = (
        f"from tmon_core import open_store; open_store({store_url!r}).run({cb.run_id!r})"
        f".rollback({ids['outside']}, allow_path=True)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "allow_path=True works only in the process that trains run" in out.stderr


def test_requests_still_pending_when_the_run_ends_are_rejected(tmp_path, store_url):
    reqs = []

    def ask(trainer, module):
        reqs.append(open_store(store_url).run(cb.run_id).set_param("lr", 0.01))

    cb = TMonCallback(store_url, flush_interval=5.0, heartbeat_timeout=30, sample_interval=None)
    fit(tmp_path, cb, Probe({11: ask}), epochs=1)
    assert reqs[0].status == "rejected" and "run ended (completed)" in reqs[0].reason


@pytest.mark.slow
def test_cli_set_requests_and_tag_against_a_live_run(tmp_path, store_url):
    outs = {}

    def ask(trainer, module):
        outs["set"] = subprocess.Popen(
            [TMON, "--store", store_url, "set", cb.run_id, "lr=0.02", "weight_decay=0.01"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def arrived(trainer, module):
        # the command's start-up (its imports) can outlast this tiny fit on a loaded machine: the
        # fit waits for its request here, so the test is about the command, not about a race
        deadline = time.time() + 60
        while open_store(store_url).run(cb.run_id).requests().empty and time.time() < deadline:
            time.sleep(0.05)
        handed_over(cb)

    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    probe = Probe({2: ask, 4: arrived})
    fit(tmp_path, cb, probe, TinyRegressor(sleep=0.05), epochs=3)
    out, err = outs["set"].communicate(timeout=60)
    assert outs["set"].returncode == 0, (out, err)
    assert out.startswith("request 1 applied at step")
    step = int(out.split("step ")[1].split(":")[0])
    assert probe.lrs[step][0] == pytest.approx(0.02) and probe.wds[step][0] == 0.01
    listing = subprocess.run(
        [TMON, "--store", store_url, "requests", cb.run_id], capture_output=True, text=True
    )
    assert "set_param" in listing.stdout and f"applied at step {step}" in listing.stdout
    rejected = subprocess.run(
        [TMON, "--store", store_url, "set", cb.run_id, "lr=0.01"], capture_output=True, text=True
    )
    assert rejected.returncode == 1 and "rejected" in rejected.stdout and "completed" in rejected.stdout


DDP = textwrap.dedent("""
    import json, os, sys, time, warnings
    warnings.filterwarnings("ignore")
    sys.path.insert(0, {repo!r})
    from lightning.pytorch import Callback, Trainer
    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback
    from tmon_core import open_store
    M, D = make()
    cb = TMonCallback({url!r}, flush_interval=0.05, sample_interval=None)
    class Probe(Callback):
        lrs = []
        def on_train_batch_start(self, trainer, module, batch, idx):
            self.lrs.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))
            if trainer.global_rank == 0 and trainer.global_step == 3:
                open_store({url!r}).run(cb.run_id).set_param("lr", 0.0123)
                time.sleep(0.5)  # rank 1 runs ahead meanwhile only as far as the next collective
    p = Probe()
    t = Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", callbacks=[cb, p], logger=False,
                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                log_every_n_steps=1)
    t.fit(M(lr=0.05), D(n=128, batch_size=16))
    with open(os.path.join({out!r}, f"rank{{t.global_rank}}.json"), "w") as f:
        json.dump(p.lrs, f)
""")


@pytest.mark.slow
def test_ddp_ranks_apply_a_live_change_at_the_same_step(tmp_path, store_url):
    script = tmp_path / "ddp_control.py"
    script.write_text(DDP.format(repo=REPO, url=store_url, out=str(tmp_path)))
    env = dict(os.environ, MASTER_PORT=str(30500 + os.getpid() % 1000))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1  # same lr at every step on both ranks
    lrs = [lr for _, lr in r0]
    k = lrs.index(0.0123)
    assert k > 3 and set(lrs[:k]) == {0.05} and set(lrs[k:]) == {0.0123}
    req = open_store(store_url).runs().id[0]
    assert open_store(store_url).run(req).requests().applied_step.tolist() == [k]


def test_a_requested_checkpoint_in_modelcheckpoints_folder_stays_the_manual_record(tmp_path, store_url):
    # the requested checkpoint is written where ModelCheckpoint writes; its next scan of that folder
    # must not record the file again as its own (which would leave the manual record deleted)
    reqs = {}

    def save(trainer, module):
        reqs["ckpt"] = open_store(store_url).run(cb.run_id).request_checkpoint("mine")
        handed_over(cb)

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None)
    t = Trainer(
        max_epochs=2,
        callbacks=[cb, Probe({3: save})],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    t.fit(TinyRegressor(), SyntheticData(n=256, batch_size=16))
    assert reqs["ckpt"].status == "applied"
    rows = open_store(store_url).run(cb.run_id).checkpoints(include_deleted=True)
    manual = rows[rows.path.str.contains("tmon-")]
    assert len(manual) == 1 and manual.source.iloc[0] == "manual" and manual.description.iloc[0] == "mine"
    assert not manual.deleted.iloc[0] and manual.step.iloc[0] == 4
