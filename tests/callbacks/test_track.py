"""``tmon_core.track()`` on the training loop of pytorch/examples' mnist/main.py (its ``Net``, made
smaller, on synthetic 28×28 data; Adadelta + StepLR as there), checked like the framework callbacks:
rows in the store against what the loop computed and what the optimizer held."""

import math
import threading
import time
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import tmon_core  # noqa: E402
from tests.callbacks.control_helpers import handed_over  # noqa: E402
from tmon_core import At, open_store  # noqa: E402
from tmon_core import events as ev  # noqa: E402


class Net(nn.Module):
    """pytorch/examples mnist/main.py's Net with 4 and 8 channels and a 16-unit hidden layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.conv2 = nn.Conv2d(4, 8, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(8 * 12 * 12, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def mnist(n=128, batch_size=32, delay=0.0):
    """Synthetic MNIST: ``n`` random 28×28 images with labels; ``delay`` seconds of loading per batch."""
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))

    def collate(items):
        if delay:
            time.sleep(delay)
        return torch.utils.data.default_collate(items)

    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=g, collate_fn=collate)


def setup(lr=1.0):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adadelta(model.parameters(), lr=lr)
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)


def test_step(model, loader):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for data, target in loader:
            total += F.nll_loss(model(data), target, reduction="sum").item()
    model.train()
    return total / len(loader.dataset)


test_step.__test__ = False  # pytorch/examples' name for the evaluation, not a test


def opts(store_url, **kw):
    return {"store": store_url, "flush_interval": 0.05, "sample_interval": None, "report": "off", **kw}


@pytest.mark.parametrize("sched_every", ["epoch", "batch"])
def test_mnist_loop_records_its_loss_lr_timings_epochs_and_checkpoints(tmp_path, store_url, sched_every):
    """``epoch``: StepLR after each epoch, as pytorch/examples; ``batch``: a scheduler stepped right
    after ``opt.step()``, before ``t.step()``, which must still record the lr the step used."""
    model, opt, sched = setup()
    if sched_every == "batch":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.7)
    loader = mnist()
    losses, lrs, epochs, ckpts = [], [], [], []
    with tmon_core.track(
        optimizer=opt, model=model, scheduler=sched, config={"batch_size": 32, "epochs": 3}, **opts(store_url)
    ) as t:
        for epoch in range(3):
            for data, target in t.batches(loader):
                opt.zero_grad()
                loss = F.nll_loss(model(data), target)
                loss.backward()
                lrs.append(opt.param_groups[0]["lr"])  # what this step uses
                opt.step()
                if sched_every == "batch":
                    sched.step()
                t.step(loss=loss)
                losses.append(loss.item())
                epochs.append(epoch)
            val = test_step(model, loader)
            t.log({"val_loss": val})
            path = tmp_path / f"mnist_cnn-{epoch}.pt"
            torch.save(model.state_dict(), path)
            t.checkpoint(path, monitor="val_loss", monitor_value=val)
            ckpts.append((str(path), len(losses) - 1, val))
            if sched_every == "epoch":
                sched.step()
    final = test_step(model, loader)
    t.log({"test_loss": final})  # after the block: an evaluation of the trained model
    run = open_store(store_url).run(t.run_id)
    assert run.status == "completed" and len(losses) == 12
    assert run.metrics("loss").value.tolist() == pytest.approx(losses, rel=1e-6)
    assert run.metrics("loss").step.tolist() == list(range(12))
    assert lrs == pytest.approx([1.0] * 4 + [0.7] * 4 + [0.49] * 4)
    assert run.metrics("lr").value.tolist() == pytest.approx(lrs)
    assert run.metrics("epoch").value.tolist() == epochs
    assert run.metrics("weight_decay").value.tolist() == [0.0] * 12
    for key in ("step_time", "data_time"):
        values = run.metrics(key).value
        assert len(values) == 12 and (values >= 0).all() and (values < 30).all(), key
    assert run.metrics("val_loss").step.tolist() == [3, 7, 11]
    df = run.checkpoints()
    assert [(p, s, v) for p, s, v in zip(df.path, df.step, df.monitor_value)] == [
        (p, s, pytest.approx(v)) for p, s, v in ckpts
    ]
    assert df.monitor.tolist() == ["val_loss"] * 3 and (df.size_bytes > 0).all()
    types = run.events().type.tolist()
    epoch_events = [ev.EPOCH_START, ev.EPOCH_END, ev.CHECKPOINT]
    assert types == [ev.TRAIN_START] + epoch_events * 3 + [
        ev.TRAIN_END,
        ev.EVALUATION_START,
        ev.EVALUATION_END,
    ]
    assert run.events(ev.TRAIN_END).data[0]["reason"] == ev.END_MAX_EPOCHS
    assert run.events(ev.EVALUATION_START).data[0]["stage"] == "test"
    test_loss = run.metrics("test_loss")
    assert test_loss.step.tolist() == [11] and test_loss.value.tolist() == pytest.approx([final])
    info = run.info()
    assert info["framework"] == "pytorch" and info["total_steps"] == 12
    cfg = info["config"]
    assert cfg["batch_size"] == 32 and cfg["num_workers"] == 0 and cfg["precision"] == "32-true"
    assert cfg["optimizers"][0]["class"] == "Adadelta" and cfg["lr_schedulers"] == [{"class": "StepLR"}]
    assert cfg["hparams"] == {"batch_size": 32, "epochs": 3} and cfg["num_parameters"] > 0


def _train_until(t, model, opt, loader, done, timeout=30.0):
    """Train epoch after epoch until ``done()`` or ``t.should_stop`` (or the timeout); the lr each step used."""
    used = []
    deadline = time.time() + timeout
    while not done() and not t.should_stop and time.time() < deadline:
        for data, target in t.batches(loader):
            opt.zero_grad()
            F.nll_loss(model(data), target).backward()
            used.append(opt.param_groups[0]["lr"])
            opt.step()
            t.step(loss=torch.tensor(0.5))
            if done():
                break
    return used


def test_set_param_from_another_thread_reaches_the_optimizer_and_the_schedule_continues(store_url):
    model, opt, sched = setup()
    outcome = {}
    with tmon_core.track(optimizer=opt, model=model, scheduler=sched, **opts(store_url)) as t:

        def ask():
            req = open_store(store_url).run(t.run_id).set_param("lr", 0.5, requested_by="another-thread")
            outcome["status"] = req.wait(timeout=30)
            outcome["info"] = req.info()

        asker = threading.Thread(target=ask)
        asker.start()
        used = _train_until(t, model, opt, mnist(n=64), lambda: "status" in outcome)
        asker.join(30)
        assert outcome["status"] == "applied"
        assert opt.param_groups[0]["lr"] == 0.5  # the optimizer itself holds the new value
        step = outcome["info"]["applied_step"]
        assert 0 < step <= len(used) and outcome["info"]["new_value"] == {"lr": 0.5}
        _train_until(t, model, opt, mnist(n=32), lambda: t.step_count > step)  # one step with the new lr
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.35)  # StepLR goes on from the new level
    run = open_store(store_url).run(t.run_id)
    lr = run.metrics("lr").set_index("step").value
    assert lr[step - 1] == 1.0 and lr[step] == 0.5  # applied between two optimizer steps
    change = run.events("param_change")
    assert change.step.tolist() == [step] and change.data[0]["requested_by"] == "another-thread"


def test_stop_request_ends_the_loop_through_should_stop(store_url):
    model, opt, sched = setup()
    with tmon_core.track(optimizer=opt, model=model, **opts(store_url, control="admin")) as t:
        threading.Thread(target=lambda: open_store(store_url).run(t.run_id).stop(reason="enough")).start()
        epochs = 0
        deadline = time.time() + 30
        for _ in range(10_000):
            for data, target in t.batches(mnist(n=64)):
                opt.zero_grad()
                F.nll_loss(model(data), target).backward()
                opt.step()
                t.step()
            epochs += 1
            if t.should_stop or time.time() > deadline:
                break
    assert t.should_stop and epochs < 10_000
    run = open_store(store_url).run(t.run_id)
    assert run.status == "completed"
    stopped = run.events("stopped")
    assert len(stopped) == 1 and stopped.message[0] == "enough"
    end = run.events(ev.TRAIN_END)
    assert end.data[0]["reason"] == ev.END_STOP_REQUEST and end.step[0] == t.step_count
    assert run.requests().status.tolist() == ["applied"]
    assert len(run.metrics("step_time")) == t.step_count  # no step after the stop was applied


def test_checkpoint_request_and_rollback_restore_model_and_optimizer(tmp_path, store_url):
    model, opt, _ = setup(lr=0.5)
    loader = mnist(n=64)
    with tmon_core.track(
        optimizer=opt, model=model, checkpoint_dir=tmp_path / "ckpts", **opts(store_url, control="admin")
    ) as t:
        run = open_store(store_url).run(t.run_id)
        _train_until(t, model, opt, loader, lambda: t.step_count >= 3)
        req = run.request_checkpoint("before the experiment", tags=["keep"])
        handed_over(t)
        _train_until(
            t, model, opt, loader, lambda: t.step_count >= 4
        )  # applied before the next optimizer step
        assert req.wait(5) == "applied"
        ckpt = run.checkpoints().iloc[-1]
        assert (
            ckpt.source == "manual" and ckpt.description == "before the experiment" and ckpt.tags == ["keep"]
        )
        state = torch.load(ckpt.path, weights_only=True)
        assert set(state) >= {"model_state_dict", "optimizer_state_dict", "step"}
        _train_until(t, model, opt, loader, lambda: t.step_count >= 8)
        assert not torch.equal(model.state_dict()["fc2.weight"], state["model_state_dict"]["fc2.weight"])
        back = run.rollback(int(ckpt.id))
        handed_over(t)
        t.step()  # applied at the end of this step, before the next optimizer step
        assert back.wait(5) == "applied"
        for k, v in model.state_dict().items():
            assert torch.equal(v, state["model_state_dict"][k]), k
        saved_opt = state["optimizer_state_dict"]["state"]
        for i, slots in opt.state_dict()["state"].items():
            for k, v in slots.items():
                assert torch.equal(v, saved_opt[i][k]), (i, k)
        assert opt.param_groups[0]["lr"] == 0.5  # hyperparameters in effect stay
    assert open_store(store_url).run(t.run_id).events("rollback").data[0]["new"]["optimizer_restored"] is True


@pytest.mark.parametrize("exc", [RuntimeError("boom at step 5"), KeyboardInterrupt()])
def test_an_exception_in_the_loop_ends_the_run_and_is_reraised(store_url, exc):
    model, opt, _ = setup()
    with pytest.raises(type(exc)):
        with tmon_core.track(optimizer=opt, model=model, **opts(store_url)) as t:
            for data, target in t.batches(mnist(n=256)):
                opt.zero_grad()
                loss = F.nll_loss(model(data), target)
                loss.backward()
                opt.step()
                t.step(loss=loss)
                if t.step_count == 5:
                    raise exc
    run = open_store(store_url).run(t.run_id)
    types = run.events().type.tolist()
    if isinstance(exc, KeyboardInterrupt):
        assert run.status == "interrupted" and types[-2:] == [ev.INTERRUPT, ev.TRAIN_END]
        assert run.events(ev.TRAIN_END).data[0]["reason"] == ev.END_INTERRUPT
    else:
        assert run.status == "failed" and types[-3:] == [ev.EPOCH_END, ev.EXCEPTION, ev.TRAIN_END]
        e = run.events(ev.EXCEPTION)
        assert (
            e.step.tolist() == [5]
            and "boom at step 5" in e.message[0]
            and "RuntimeError" in e.data[0]["type"]
        )
        assert run.events(ev.TRAIN_END).data[0]["reason"] == ev.END_EXCEPTION
        assert "boom at step 5" in run.info()["error"]["message"]
    assert len(run.metrics("loss")) == 5  # every step before it is kept


def test_the_report_is_made_at_the_end_and_names_pytorch_settings(store_url):
    model, opt, sched = setup()
    with tmon_core.track(
        optimizer=opt,
        model=model,
        scheduler=sched,
        config={"batch_size": 16},
        **opts(store_url, report="auto", sample_interval=0.1),
    ) as t:
        for data, target in t.batches(mnist(n=256, batch_size=16, delay=0.02)):  # input-bound: no workers
            opt.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            opt.step()
            t.step(loss=loss * math.nan if t.step_count == 12 else loss)
    r = t.report
    assert r is not None and r.run_id == t.run_id and r.summary["framework"] == "pytorch"
    codes = {rec.code for rec in r.recommendations}
    assert "DataLoader(num_workers=1)" in codes or "DataLoader(num_workers=4)" in codes, codes
    assert any(
        c and c.startswith("torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)") for c in codes
    )
    assert any(c and c.startswith("torch.optim.Adadelta(model.parameters(), lr=") for c in codes), codes
    run = open_store(store_url).run(t.run_id)
    assert run.info()["status"] == "completed"
    assert len(run.samples()) >= 2 and run.samples().proc_rss.notna().all()  # the hardware sampler ran


def test_accelerate_wrapping_the_same_loop(store_url):
    accelerate = pytest.importorskip("accelerate")
    from accelerate.state import AcceleratorState, GradientState

    try:
        accelerator = accelerate.Accelerator(cpu=True)
        model, opt, sched = setup()
        model, opt, loader, sched = accelerator.prepare(model, opt, mnist(n=64, batch_size=16), sched)
        used = []
        with tmon_core.track(
            optimizer=opt, model=model, scheduler=sched, schedule=[At(step=5, lr=0.1)], **opts(store_url)
        ) as t:
            for _ in range(2):
                for data, target in t.batches(loader):
                    opt.zero_grad()
                    loss = F.nll_loss(model(data), target)
                    accelerator.backward(loss)
                    used.append(opt.param_groups[0]["lr"])
                    opt.step()
                    t.step(loss=loss)
                sched.step()
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    run = open_store(store_url).run(t.run_id)
    assert used == pytest.approx(
        [1.0] * 4 + [0.7] + [0.1] * 3
    )  # StepLR, then the schedule through the wrappers
    assert run.metrics("lr").value.tolist() == pytest.approx(used)
    assert len(run.metrics("loss")) == 8
    cfg = run.info()["config"]
    assert cfg["launcher"] == "accelerate" and cfg["mixed_precision"] == "no" and cfg["batch_size"] == 16
    assert cfg["optimizers"][0]["class"] == "Adadelta"


def test_bad_arguments_are_clear_errors_and_bad_values_do_not_stop_training(store_url):
    model, opt, _ = setup()
    with pytest.raises(ValueError, match="optimizer must be a torch.optim.Optimizer.*received str"):
        tmon_core.track(optimizer="adam")
    with pytest.raises(ValueError, match="model must be a torch.nn.Module, received dict"):
        tmon_core.track(model={})
    with pytest.raises(TypeError, match="unknown option.*'lr'.*its options are: store,"):
        tmon_core.track(optimizer=opt, lr=0.1)
    with pytest.raises(
        ValueError, match="total_steps must be a positive int or None, received total_steps=0"
    ):
        tmon_core.track(total_steps=0)
    with tmon_core.track(optimizer=opt, model=model, **opts(store_url)) as t:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t.step(loss=1.5, acc="high")
            t.step(loss=1.25, acc="high")
        assert sum("'acc'" in str(w.message) for w in caught) == 1  # said once, naming the value
        with pytest.raises(ValueError, match="step must be a non-negative int.*received step=-1"):
            t.log({"val_loss": 0.5}, step=-1)
    with pytest.warns(RuntimeWarning, match="has ended.*t.step"):
        t.step(loss=1.0)  # after the block: said, not silently dropped
    assert open_store(store_url).run(t.run_id).metrics("loss").value.tolist() == [1.5, 1.25]


def test_pytorch_terms_give_loop_code_and_accelerator_arguments():
    from tmon_core.analysis.terms import framework_of, terms_for

    cfg = {
        "optimizers": [{"class": "AdamW", "defaults": {"lr": 3e-4, "weight_decay": 0.01}}],
        "num_workers": 0,
        "batch_size": 64,
        "precision": "32-true",
    }
    t = terms_for(framework_of({"framework": "pytorch"}), cfg)
    assert t.name == "pytorch" and t.batch_size().current == 64
    assert t.num_workers().code(4) == "DataLoader(num_workers=4)"
    assert t.lr().code(1e-4) == "torch.optim.AdamW(model.parameters(), lr=0.0001)" and t.lr().current == 3e-4
    assert (
        t.precision("bf16-mixed")
        .code(t.precision_value("bf16-mixed"))
        .startswith('with torch.autocast(device_type="cuda", dtype=torch.bfloat16):')
    )
    assert "GradScaler" in t.precision("16-mixed").code(t.precision_value("16-mixed"))
    acc = terms_for("pytorch", {**cfg, "launcher": "accelerate", "mixed_precision": "no"})
    assert (
        acc.precision("bf16-mixed").code(acc.precision_value("bf16-mixed"))
        == 'Accelerator(mixed_precision="bf16")'
    )
    assert (
        acc.grad_clip().code(1.0).startswith("accelerator.clip_grad_norm_(model.parameters(), max_norm=1.0)")
    )


def test_without_with_finish_ends_the_run(store_url):
    t = tmon_core.track(**opts(store_url))
    for i in range(3):
        t.step(loss=float(i))
    t.finish()
    run = open_store(store_url).run(t.run_id)
    assert run.status == "completed" and run.metrics("loss").value.tolist() == [0.0, 1.0, 2.0]
    assert run.events(ev.TRAIN_END).data[0]["reason"] == ev.END_MAX_STEPS  # no t.batches: no epochs to tell


DDP_LOOP = """
import json, os, sys
import torch, torch.distributed as dist
import torch.nn.functional as F
torch.set_num_threads(1)
dist.init_process_group("gloo")
import tmon_core
from tmon_core import At
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=1.0)
used = []
with tmon_core.track(optimizer=opt, model=model, store=sys.argv[1], schedule=[At(step=3, lr=0.1)], flush_interval=0.05,
                     sample_interval=None, report="off") as t:
    for step in range(6):
        opt.zero_grad()
        F.mse_loss(model(torch.randn(4, 8)), torch.randn(4, 1)).backward()
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        t.step(loss=float(step))
groups = list(dist.distributed_c10d._world.pg_names.values())
print(json.dumps({"rank": dist.get_rank(), "run_id": t.run_id, "used": used, "groups": groups}), flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_record_one_run_and_apply_the_schedule_at_the_same_step(tmp_path, store_url):
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "ddp_loop.py"
    script.write_text(DDP_LOOP)
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "PYTHONPATH": os.getcwd()
            + os.pathsep
            + os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), store_url],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["run_id"] == outs[1]["run_id"]
    assert outs[0]["used"] == outs[1]["used"] == pytest.approx([1.0] * 3 + [0.1] * 3)
    assert outs[0]["groups"] == outs[1]["groups"] == ["0"], "tmon's gloo group is released at the end"
    store = open_store(store_url)
    assert len(store.runs()) == 1
    run = store.run(outs[0]["run_id"])
    assert run.status == "completed" and run.metrics("loss").value.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert run.metrics("lr").value.tolist() == pytest.approx([1.0] * 3 + [0.1] * 3)
    assert run.info()["config"]["world_size"] == 2


def test_rollback_reads_the_checkpoint_layouts_a_plain_loop_saves(tmp_path):
    from safetensors.torch import save_file

    from tmon_callbacks._adapter import Rejected
    from tmon_callbacks._torch import read_loop_checkpoint as _read_checkpoint

    model, opt, _ = setup()
    F.nll_loss(model(torch.randn(2, 1, 28, 28)), torch.tensor([1, 2])).backward()
    opt.step()
    weights, opt_state = model.state_dict(), opt.state_dict()
    torch.save(weights, tmp_path / "mnist_cnn.pt")  # pytorch/examples
    torch.save(
        {"epoch": 3, "model_state_dict": weights, "optimizer_state_dict": opt_state}, tmp_path / "tutorial.pt"
    )
    torch.save({"model": weights, "optimizer": opt_state}, tmp_path / "short.pt")
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / "model.safetensors")
    state_dir = tmp_path / "accelerate_state"  # what accelerator.save_state writes
    state_dir.mkdir()
    save_file({k: v.contiguous() for k, v in weights.items()}, state_dir / "model.safetensors")
    torch.save(opt_state, state_dir / "optimizer.bin")
    for name, has_opt in [
        ("mnist_cnn.pt", False),
        ("tutorial.pt", True),
        ("short.pt", True),
        ("model.safetensors", False),
        ("accelerate_state", True),
    ]:
        state, opts = _read_checkpoint(str(tmp_path / name))
        assert set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights), name
        assert (opts is not None) == has_opt, name
        if has_opt:
            assert opts[0]["state"].keys() == opt_state["state"].keys()
    torch.save({"epoch": 3}, tmp_path / "no_model.pt")
    with pytest.raises(Rejected, match="holds no model state"):
        _read_checkpoint(str(tmp_path / "no_model.pt"))
    with pytest.raises(Rejected, match="does not exist"):
        _read_checkpoint(str(tmp_path / "missing.pt"))


def test_log_grad_norm_records_the_norm_the_optimizer_step_saw(store_url):
    model, opt, _ = setup()
    norms = []
    with tmon_core.track(optimizer=opt, model=model, log_grad_norm=True, **opts(store_url)) as t:
        for data, target in t.batches(mnist(n=96)):
            opt.zero_grad()
            F.nll_loss(model(data), target).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            norms.append(
                torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
            )
            opt.step()
            opt.zero_grad()  # gone by t.step(): read by the optimizer's pre-hook
            t.step()
    assert open_store(store_url).run(t.run_id).metrics("grad_norm").value.tolist() == pytest.approx(
        norms, rel=1e-5
    )
    assert max(norms) <= 0.5 + 1e-6  # after clipping, as the step used them
