"""TMonCallback in real Lightning fits on CPU, read back through the query API."""

import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

pytest.importorskip("lightning")
import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from examples.tiny_lightning import make  # noqa: E402
from tmon_callbacks.lightning import TMonCallback  # noqa: E402
from tmon_core import events as ev  # noqa: E402
from tmon_core import keys, open_store  # noqa: E402

TinyRegressor, SyntheticData = make("lightning.pytorch")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def trainer(tmp_path, callbacks, **kw):
    kw.setdefault("max_epochs", 2)
    return Trainer(
        callbacks=callbacks,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **kw,
    )


def test_fit_records_metrics_lr_checkpoints_events_and_completes(tmp_path, store_url):
    cb = TMonCallback(
        store_url, flush_interval=0.1, sample_interval=0.2, run_name="fit-test", log_grad_norm=True
    )
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_top_k=2)
    model = TinyRegressor(two_groups=True, scheduler="step", lr=0.08)
    t = trainer(tmp_path, [cb, ckpt], max_epochs=3)
    t.fit(model, SyntheticData(n=256, batch_size=16))  # 12 batches per epoch

    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    info = run.info()
    assert info["name"] == "fit-test" and info["framework"] == "lightning" and info["total_steps"] == 36
    cfg = info["config"]
    assert cfg["hparams"]["lr"] == 0.08 and cfg["batch_size"] == 16 and cfg["num_workers"] == 0
    assert cfg["precision"] == "32-true" and cfg["accumulate_grad_batches"] == 1
    assert cfg["optimizers"][0]["class"] == "SGD" and cfg["lr_schedulers"][0]["class"] == "StepLR"

    # every batch: loss, lr of both param groups as the optimizer had them, step time
    loss = run.metrics(keys.LOSS)
    assert loss.step.tolist() == list(range(36))
    lr0, lr1 = run.metrics("lr"), run.metrics("lr/pg1")
    assert lr0.step.tolist() == list(range(36))
    # StepLR(step_size=5, gamma=0.5) stepping per batch: the lr in effect at batch k is 0.08 * 0.5 ** (k // 5)
    assert lr0.value.tolist() == pytest.approx([0.08 * 0.5 ** (k // 5) for k in range(36)])
    assert lr1.value.tolist() == pytest.approx([0.008 * 0.5 ** (k // 5) for k in range(36)])
    assert run.metrics("momentum").value.eq(0.9).all()
    assert (run.metrics(keys.STEP_TIME).value > 0).all()
    assert (run.metrics(keys.GRAD_NORM).value > 0).all()
    assert run.metrics(keys.EPOCH).value.tolist() == [k // 12 for k in range(36)]

    # what the user logged with self.log, at Lightning's steps, same values as the loss it returned
    train_step = run.metrics("train_loss_step")
    assert train_step.step.tolist() == list(range(36))
    assert train_step.value.tolist() == pytest.approx(loss.value.tolist())
    val = run.metrics("val_loss")
    assert val.step.tolist() == [11, 23, 35]
    assert run.metrics("train_loss_epoch").step.tolist() == [11, 23, 35]
    assert val.value.iloc[-1] == pytest.approx(float(t.callback_metrics["val_loss"]))

    # checkpoints written by ModelCheckpoint, the pruned one marked deleted, the kept files on disk
    ckpts = run.checkpoints()
    assert sorted(ckpts.step.tolist()) == sorted(
        int(os.path.basename(p).split("step=")[1].split(".")[0]) for p in ckpt.best_k_models
    )
    for row in ckpts.itertuples():
        assert os.path.exists(row.path) and row.size_bytes == os.path.getsize(row.path)
        assert row.monitor == "val_loss" and not math.isnan(row.monitor_value)
    assert len(run.checkpoints(include_deleted=True)) == 3

    # events in order
    types = [t for t in run.events().type if t not in ("sampler",)]
    expected = [ev.TRAIN_START]
    for _ in range(3):
        expected += [ev.EPOCH_START, ev.VALIDATION_START, ev.VALIDATION_END, ev.EPOCH_END, ev.CHECKPOINT]
    expected += [ev.TRAIN_END]
    assert types == expected

    # hardware samples of the host
    samples = run.samples()
    assert len(samples) >= 1 and (samples.ram_total > 0).all() and (samples.proc_rss > 0).all()


def test_loss_is_recorded_when_the_user_logs_nothing(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False).fit(
        TinyRegressor(log_metrics=False), SyntheticData(n=64, batch_size=16)
    )
    run = open_store(store_url).run(cb.run_id)
    assert run.metrics("loss").step.tolist() == [0, 1, 2]
    assert set(run.metric_keys()) == {
        "loss",
        "lr",
        "momentum",
        "weight_decay",
        "step_time",
        "data_time",
        "epoch",
    }


@pytest.mark.parametrize("grad_norm", [False, True])
def test_lightning_calls_only_the_batch_hooks_tmon_uses(tmp_path, store_url, grad_norm):
    # Lightning calls every per-batch hook of every callback (~1.5 us each, a profiler context and
    # the call) even when it does nothing: its SimpleProfiler shows which ones it called
    from lightning.pytorch.profilers import SimpleProfiler

    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None, log_grad_norm=grad_norm)
    profiler = SimpleProfiler()
    trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False, profiler=profiler).fit(
        TinyRegressor(), SyntheticData(n=64, batch_size=16)
    )
    called = {
        name.rsplit(".", 1)[1]: len(d)
        for name, d in profiler.recorded_durations.items()
        if name.startswith("[Callback]TMonCallback")
    }
    assert called["on_train_batch_start"] == called["on_train_batch_end"] == 3
    assert "on_before_backward" not in called and "on_after_backward" not in called
    assert "on_before_zero_grad" not in called and "on_validation_batch_end" not in called
    assert called.get("on_before_optimizer_step") == (3 if grad_norm else None)
    run = open_store(store_url).run(cb.run_id)
    assert run.metrics("loss").step.tolist() == [0, 1, 2]
    assert ("grad_norm" in run.metric_keys()) == grad_norm


def test_a_subclass_keeps_the_batch_hooks_it_defines(tmp_path, store_url):
    calls = []

    class Mine(TMonCallback):
        def on_after_backward(self, trainer, pl_module):
            calls.append(("after_backward", trainer.global_step))

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            super().on_before_optimizer_step(trainer, pl_module, optimizer)
            calls.append(("before_step", trainer.global_step))

    cb = Mine(store_url, flush_interval=0.1, sample_interval=None)
    trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False).fit(
        TinyRegressor(), SyntheticData(n=64, batch_size=16)
    )
    assert calls == [(name, s) for s in range(3) for name in ("after_backward", "before_step")]
    assert open_store(store_url).run(cb.run_id).metrics("loss").step.tolist() == [0, 1, 2]


class _LogsLossToo(TinyRegressor):
    """Logs its own ``loss`` (the key tmon uses for the returned loss) and an ``mae`` every step."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x)
        loss = torch.nn.functional.mse_loss(pred, y)
        self.log("loss", 2 * loss.detach(), on_step=True)
        self.log("mae", (pred - y).abs().mean(), on_step=True)
        return loss


@pytest.mark.parametrize("every, accumulate", [(1, 1), (3, 2)])
def test_batch_values_and_self_log_values_keep_lightnings_steps(tmp_path, store_url, every, accumulate):
    # tmon records a logging step's batch values and self.log values together: whatever the
    # cadence, both keep the steps Lightning's own CSVLogger writes, and a key logged by both
    # (here "loss") keeps both values. Between Lightning's logging steps tmon keeps the self.log
    # values too (issue 15: they were lost), and with accumulation there is one record per
    # optimizer step (issue 15: there was one per micro-batch)
    from lightning.pytorch.loggers import CSVLogger

    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    csv = CSVLogger(tmp_path, name="csv")
    Trainer(
        callbacks=[cb],
        default_root_dir=tmp_path,
        logger=csv,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        max_epochs=2,
        log_every_n_steps=every,
        accumulate_grad_batches=accumulate,
        limit_val_batches=0,
    ).fit(_LogsLossToo(log_metrics=False), SyntheticData(n=256, batch_size=16))  # 12 batches per epoch
    import pandas as pd

    theirs = pd.read_csv(os.path.join(csv.log_dir, "metrics.csv"))
    run = open_store(store_url).run(cb.run_id)
    steps = list(range(24 // accumulate))  # one per optimizer step
    mae = run.metrics("mae")
    assert mae.step.tolist() == steps
    logged = theirs.dropna(subset=["mae"])
    at_theirs = mae[mae.step.isin(logged.step)]
    assert len(logged) > 0 and at_theirs.step.tolist() == logged.step.tolist()
    assert at_theirs.value.tolist() == pytest.approx(logged.mae.tolist())
    assert run.metrics("lr").step.tolist() == steps
    loss = run.metrics("loss")
    users = theirs.dropna(subset=["loss"])
    assert sorted(loss.step.tolist()) == sorted(steps + users.step.tolist())
    doubled = loss[loss.step.isin(users.step)].groupby("step").value.max()
    assert doubled.tolist() == pytest.approx(users.loss.tolist(), rel=1e-5)
    assert run.metrics("epoch").value.tolist() == [s * accumulate // 12 for s in steps]


@pytest.mark.parametrize(
    "fail_with, event_type", [("RuntimeError", ev.EXCEPTION), ("OutOfMemoryError", ev.OOM)]
)
def test_exception_in_training_step_marks_failed_and_keeps_points(tmp_path, store_url, fail_with, event_type):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    t = trainer(tmp_path, [cb], max_epochs=5, enable_checkpointing=False)
    with pytest.raises((RuntimeError, torch.OutOfMemoryError)):
        t.fit(TinyRegressor(fail_at_step=7, fail_with=fail_with), SyntheticData(n=256, batch_size=16))
    run = open_store(store_url).run(cb.run_id)
    assert run.status == "failed"
    assert run.metrics("loss").step.tolist() == list(range(7))
    assert run.metrics("train_loss_step").step.tolist() == list(range(7))
    events = run.events()
    # the exception, then why the fit ended (issue 15: train_end carries the reason)
    assert events.type.tolist()[-2:] == [event_type, ev.TRAIN_END]
    assert events.data.iloc[-1] == {"reason": ev.END_EXCEPTION}
    data = events.data.iloc[-2]
    assert data["type"].endswith(fail_with) and data["oom"] == (fail_with == "OutOfMemoryError")
    assert "Traceback" in data["traceback"]
    assert run.info()["error"]["type"].endswith(fail_with)


def test_nan_loss_is_stored_as_nan(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False).fit(
        TinyRegressor(nan_at_step=2), SyntheticData(n=64, batch_size=16)
    )
    loss = open_store(store_url).run(cb.run_id).metrics("loss")
    assert math.isnan(loss.value[2]) and not loss.value.drop(index=2).isna().any()


def test_one_callback_two_fits_two_runs_no_thread_leak(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=0.2)
    before = threading.active_count()
    ids = []
    for _ in range(2):
        trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False).fit(
            TinyRegressor(), SyntheticData(n=64, batch_size=16)
        )
        ids.append(cb.run_id)
    assert ids[0] != ids[1]
    store = open_store(store_url)
    for rid in ids:
        run = store.run(rid)
        assert run.status == "completed" and run.metrics("loss").step.tolist() == [0, 1, 2]
    time.sleep(0.2)
    assert threading.active_count() <= before


def test_validate_after_the_fit_is_recorded_into_the_ended_run_which_keeps_its_status(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    before = threading.active_count()
    t = trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False)
    model, data = TinyRegressor(), SyntheticData(n=64, batch_size=16)  # 3 batches
    t.fit(model, data)
    first = cb.run_id
    t.validate(model, data, verbose=False)
    run = open_store(store_url).run(first)
    assert run.status == "completed"
    events = run.events()
    assert events.type.tolist()[-3:] == [ev.TRAIN_END, ev.EVALUATION_START, ev.EVALUATION_END]
    assert events.data.iloc[-1] == {"stage": "validate"} and events.step.iloc[-1] == 3
    # the fit's validation after step 2, then validate() at Lightning's step 3
    assert run.metrics("val_loss").step.tolist() == [2, 3]
    assert run.metrics("val_loss").value.iloc[-1] == pytest.approx(float(t.callback_metrics["val_loss"]))
    # the evaluation's step (Lightning's step count) does not make the run one step longer than it trained
    assert run.info()["last_step"] == 2 and run.info()["steps"] == 3
    time.sleep(0.2)
    assert threading.active_count() <= before  # the attached recorder is closed

    trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False).fit(TinyRegressor(), data)
    assert cb.run_id != first and open_store(store_url).run(first).status == "completed"


class _StopsAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@pytest.mark.parametrize(
    "kw, callbacks, reason",
    [
        ({"max_steps": 2}, [], ev.END_MAX_STEPS),
        ({"max_epochs": 1}, [], ev.END_MAX_EPOCHS),
        ({"max_epochs": 5}, [_StopsAt(2)], ev.END_SHOULD_STOP),
    ],
)
def test_train_end_says_why_the_fit_ended(tmp_path, store_url, kw, callbacks, reason):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    trainer(tmp_path, [cb, *callbacks], enable_checkpointing=False, **kw).fit(
        TinyRegressor(), SyntheticData(n=64, batch_size=16)
    )
    run = open_store(store_url).run(cb.run_id)
    end = run.events(ev.TRAIN_END)
    assert len(end) == 1 and end.data.iloc[0]["reason"] == reason
    assert [c["name"] for c in run.info()["config"][ev.CONFIG_CALLBACKS]] == [
        type(c).__name__ for c in callbacks
    ]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_two_callbacks_in_one_trainer_and_a_second_fit_leak_no_threads_or_connections(tmp_path, store_url):
    other = f"sqlite:///{tmp_path}/other.db"
    model, data = TinyRegressor(), SyntheticData(n=64, batch_size=16)
    trainer(
        tmp_path, [TMonCallback(store_url, flush_interval=0.1)], max_epochs=1, enable_checkpointing=False
    ).fit(model, data)  # warm-up: imports, thread pools, sqlite module state
    threads, fds = threading.active_count(), _open_fds()
    a, b = TMonCallback(store_url, flush_interval=0.1), TMonCallback(other, flush_interval=0.1)
    for _ in range(2):  # a second fit in the same process (kernel), same callback objects
        trainer(tmp_path, [a, b], max_epochs=1, enable_checkpointing=False).fit(model, data)
    time.sleep(0.3)
    assert threading.active_count() <= threads
    assert _open_fds() <= fds  # every SQLite file and WAL the runs opened is closed again
    assert len(open_store(store_url).runs()) == 3 and len(open_store(other).runs()) == 2
    for url in (store_url, other):
        for rid in open_store(url).runs().id:
            assert open_store(url).run(rid).metrics("loss").step.tolist() == [0, 1, 2]


def test_unwritable_store_training_finishes_with_a_warning(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    cb = TMonCallback(f"sqlite:///{tmp_path}/afile/tmon.db", flush_interval=0.1, sample_interval=None)
    model = TinyRegressor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, [cb], max_epochs=2, enable_checkpointing=False).fit(
            model, SyntheticData(n=64, batch_size=16)
        )
    assert model.trainer.state.finished and model.trainer.global_step == 6  # 48 samples / 16, 2 epochs
    assert any("tmon" in str(w.message) and "store" in str(w.message) for w in caught)


def test_locked_database_training_finishes_and_data_arrives(tmp_path, store_url):
    import sqlite3

    from tmon_core import Recorder

    Recorder(store_url).close()  # create the file and schema
    blocker = sqlite3.connect(tmp_path / "tmon.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    timer = threading.Timer(2.0, lambda: (blocker.execute("ROLLBACK"), blocker.close()))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        timer.start()
        trainer(tmp_path, [cb], max_epochs=2, enable_checkpointing=False).fit(
            TinyRegressor(sleep=0.05), SyntheticData(n=64, batch_size=16)
        )
        timer.join()
    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed" and run.metrics("loss").step.tolist() == list(range(6))


def test_pytorch_lightning_package_works_the_same(tmp_path, store_url):
    pl = pytest.importorskip("pytorch_lightning")
    from tmon_callbacks.pytorch_lightning import TMonCallback as PLCallback

    assert issubclass(PLCallback, pl.Callback)
    M, D = make("pytorch_lightning")
    cb = PLCallback(store_url, flush_interval=0.1, sample_interval=None)
    pl.Trainer(
        max_epochs=1,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    ).fit(M(), D(n=64, batch_size=16))
    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed" and run.info()["framework"] == "pytorch_lightning"
    assert run.metrics("train_loss_step").step.tolist() == [0, 1, 2]


def test_constructor_rejects_bad_options_by_name():
    with pytest.raises(
        ValueError, match="sample_interval must be >= 0.1 seconds or None, received sample_interval=-1"
    ):
        TMonCallback(sample_interval=-1)
    with pytest.raises(ValueError, match="flush_interval"):
        TMonCallback(flush_interval="fast")
    with pytest.raises(ValueError, match="not a valid database URL"):
        TMonCallback(store="postgresql+psycopg://::bad::")


KILLED = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from lightning.pytorch import Callback, Trainer
    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback
    M, D = make()
    cb = TMonCallback({url!r}, flush_interval=0.2, heartbeat_timeout=1.5, sample_interval=0.2)
    class Announce(Callback):
        def on_train_batch_end(self, trainer, *a):
            if trainer.global_step == 5:
                print(cb.run_id, flush=True)
    Trainer(max_epochs=1000, callbacks=[cb, Announce()], logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1).fit(
        M(sleep=0.01), D(n=64, batch_size=16))
""")


@pytest.mark.slow
def test_sigkill_leaves_a_readable_store_and_a_lost_run(tmp_path, store_url):
    script = KILLED.format(repo=REPO, url=store_url)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    time.sleep(1.5)  # train a while longer
    killed_at = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    run = open_store(store_url).run(run_id)
    loss = run.metrics("loss")
    flushed_before = killed_at - 0.2 - 0.1  # one flush interval (+ scheduling slack)
    assert (loss.wall_time < flushed_before).sum() > 20
    # no gap: points are contiguous from step 0 up to the last one written
    assert loss.step.tolist() == list(range(len(loss)))
    assert loss.wall_time.max() >= flushed_before - 0.5
    time.sleep(max(0.0, 1.5 - (time.time() - killed_at)) + 0.3)
    assert run.status == "lost"
    assert run.info()["status"] == "lost"
    assert len(run.samples()) >= 1


DDP = textwrap.dedent("""
    import sys, warnings
    warnings.filterwarnings("ignore")
    sys.path.insert(0, {repo!r})
    from lightning.pytorch import Trainer
    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback
    M, D = make()
    cb = TMonCallback({url!r}, flush_interval=0.1, sample_interval=0.2)
    t = Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", callbacks=[cb], logger=False,
                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                log_every_n_steps=1)
    t.fit(M(), D(n=128, batch_size=16))
    print("RANK", t.global_rank, "RUN", cb.run_id, flush=True)
""")


@pytest.mark.slow
def test_ddp_on_cpu_writes_one_run_once(tmp_path, store_url):
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP.format(repo=REPO, url=store_url))
    env = dict(os.environ, MASTER_PORT=str(29500 + os.getpid() % 1000), PL_DISABLE_FORK="1")
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # found anywhere in the output: both ranks write to it, and another line may lack its newline
    lines = sorted(re.findall(r"RANK (\d+) RUN (\S+)", out.stdout))
    assert [rank for rank, _ in lines] == ["0", "1"], out.stdout[-2000:]
    run_ids = {run_id for _, run_id in lines}
    assert len(run_ids) == 1  # both ranks know the same run
    store = open_store(store_url)
    assert len(store.runs()) == 1
    run = store.run(run_ids.pop())
    assert run.status == "completed" and run.info()["config"]["world_size"] == 2
    # 96 training samples / (2 ranks x 16) = 3 steps per epoch: each step once, no duplicates
    for key in ("loss", "train_loss_step", "lr"):
        assert run.metrics(key).step.tolist() == list(range(6)), key
    assert run.metrics("val_loss").step.tolist() == [2, 5]
    assert run.events(ev.TRAIN_START).shape[0] == 1


def test_a_lazy_instance_as_lightningcli_trainer_defaults_builds_it(tmp_path, store_url):
    # LightningCLI(trainer_defaults={"callbacks": [lazy_instance(TMonCallback, ...)]}) is how a CLI
    # script adds a callback: jsonargparse runs __init__ at the first method call, and Lightning
    # reads the state_key property before any
    jsonargparse = pytest.importorskip("jsonargparse")
    cb = jsonargparse.lazy_instance(TMonCallback, store=store_url, flush_interval=0.1, sample_interval=None)
    trainer(tmp_path, [cb], max_epochs=1, enable_checkpointing=False).fit(
        TinyRegressor(), SyntheticData(n=64, batch_size=16)
    )
    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed" and run.metrics(keys.LOSS).step.tolist() == [
        0,
        1,
        2,
    ]  # 48 training samples: 3 batches
