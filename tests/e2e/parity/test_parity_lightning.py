"""Lightning: what tmon records is exactly what Lightning's own CSVLogger wrote (issue 15).

One parametrised test, a row per configuration users run: each fit runs ``CSVLogger`` beside
``TMonCallback`` and the harness compares every key the CSV holds, at every step, value by value.
The deliberate differences are the rules below, each with its reason. A row also checks what the
CSV cannot show: why the run ended, the callbacks in its config, validation events at the step of
their metrics, one ``data_time`` per step.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("lightning")
import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from lightning.pytorch.utilities import grad_norm  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, IterableDataset  # noqa: E402

from examples.tiny_lightning import make  # noqa: E402
from tests.e2e.parity.harness import (  # noqa: E402
    Also,
    AtReferenceSteps,
    RepeatedInEveryRow,
    Tolerance,
    compare,
    read_csv,
    read_run,
)
from tmon_callbacks.lightning import TMonCallback  # noqa: E402
from tmon_core import events as ev  # noqa: E402
from tmon_core import open_store  # noqa: E402

TinyRegressor, SyntheticData = make("lightning.pytorch")

#: the rules every Lightning comparison states
EPOCH_ROWS = RepeatedInEveryRow(
    keys=("epoch",),
    why=(
        "Lightning writes `epoch` into every row it logs (an epoch-end row sits at the next epoch's first step, "
        "evaluation rows after the last step); tmon records the epoch of each training step: at each of tmon's "
        "steps its value must be one of the CSV's"
    ),
)
LOSS = Also(
    "loss",
    "train_loss_step",
    why="tmon's `loss` is what training_step returned; the model self.logs the same tensor as train_loss",
)
THROTTLED = AtReferenceSteps(why="tmon keeps every step; Lightning writes only every log_every_n_steps-th")


class Model(TinyRegressor):
    """TinyRegressor with a test step, the lr monitor's keys to compare against, and the options
    the rows need: accumulation-window means, grad norms, manual optimization with two optimizers,
    OneCycleLR per step."""

    def __init__(
        self,
        accumulate: int = 1,
        log_grad_norm: bool = False,
        manual: bool = False,
        onecycle_steps: int = 0,
        log_at_batch_end: bool = False,
        **kw,
    ):
        super().__init__(**kw)
        self.save_hyperparameters()
        self.automatic_optimization = not manual
        self._window: list = []

    def training_step(self, batch, batch_idx):
        if self.hparams.manual:
            return self._manual_step(batch)
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        n = self.hparams.accumulate
        if n > 1:  # the mean of the returned losses over the optimizer step's micro-batches
            self._window.append(loss.detach())
            last = (batch_idx + 1) % n == 0 or self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            if last:
                self.log("loss_mean", torch.stack(self._window).mean(), on_step=True, on_epoch=False)
                self._window = []
        return loss

    def _manual_step(self, batch):
        opt_body, opt_head = self.optimizers()
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        opt_body.zero_grad()
        opt_head.zero_grad()
        self.manual_backward(loss)
        opt_body.step()
        opt_head.step()
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.hparams.log_at_batch_end:  # after tmon's hook: Lightning calls callbacks first
            self.log("batch_end_loss_x2", 2 * outputs["loss"], on_step=True)

    def on_before_optimizer_step(self, optimizer):
        if self.hparams.log_grad_norm:
            self.log_dict(grad_norm(self, norm_type=2))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        hp = self.hparams
        if hp.manual:
            return [
                torch.optim.SGD(self.body.parameters(), lr=hp.lr, momentum=0.9),
                torch.optim.Adam(self.head.parameters(), lr=hp.lr / 10),
            ]
        if hp.onecycle_steps:
            opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=0.9)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=hp.onecycle_steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return super().configure_optimizers()


class Data(SyntheticData):
    def __init__(self, iterable: bool = False, **kw):
        super().__init__(**kw)
        self.save_hyperparameters()

    def train_dataloader(self):
        if self.hparams.iterable:
            return DataLoader(_Stream(self.train_set), batch_size=self.hparams.batch_size)
        return super().train_dataloader()

    def test_dataloader(self):
        return self.val_dataloader()


class _Stream(IterableDataset):
    """An iterable dataset without a length: Lightning cannot know the epoch's size."""

    def __init__(self, data):
        self.data = data

    def __iter__(self):
        return (self.data[i] for i in range(len(self.data)))


# each row: (id, Trainer kwargs, Model kwargs, Data kwargs, extra); n=128 is 6 batches of 16 per epoch
ROWS = [
    (
        "every-step-checkpoints-lr-monitor",
        dict(max_epochs=2, log_every_n_steps=1),
        {},
        {},
        {"ckpt": True, "lrmon": True},
    ),
    (
        "default-cadence-10-steps",
        dict(max_steps=10),
        dict(log_at_batch_end=True),
        dict(n=256),
        {"twin": True},
    ),
    ("default-cadence-60-steps", dict(max_steps=60, limit_val_batches=2), {}, dict(n=256), {}),
    (
        "accumulate-3",
        dict(max_epochs=2, log_every_n_steps=1, accumulate_grad_batches=3),
        dict(accumulate=3),
        dict(n=160),
        {},
    ),  # 7 batches per epoch: the last window of each epoch is one micro-batch
    ("bf16-mixed", dict(max_epochs=1, log_every_n_steps=1, precision="bf16-mixed"), {}, {}, {}),
    (
        "manual-two-optimizers",
        dict(max_epochs=1, log_every_n_steps=1),
        dict(manual=True),
        {},
        {"lrmon": True},
    ),
    (
        "grad-clip-norms",
        dict(max_epochs=1, log_every_n_steps=1, gradient_clip_val=0.1),
        dict(log_grad_norm=True),
        {},
        {"grad_norm": True},
    ),
    ("val-check-interval-0.5", dict(max_epochs=2, log_every_n_steps=2, val_check_interval=0.5), {}, {}, {}),
    (
        "check-val-every-2-epochs",
        dict(max_epochs=3, log_every_n_steps=1, check_val_every_n_epoch=2),
        {},
        {},
        {},
    ),
    ("iterable-without-length", dict(max_epochs=2, log_every_n_steps=1), {}, dict(iterable=True), {}),
    (
        "onecycle-per-step",
        dict(max_epochs=2, log_every_n_steps=1),
        dict(onecycle_steps=12),
        {},
        {"lrmon": True, "momentum": True},
    ),
    ("early-stopping", dict(max_epochs=20, log_every_n_steps=1), {}, {}, {"early": True}),
    (
        "max-time",
        dict(max_epochs=1000, log_every_n_steps=1, max_time="00:00:00:01"),
        dict(sleep=0.02),
        {},
        {"reason": ev.END_TIME_LIMIT},
    ),
    ("test-validate-after-fit", dict(max_epochs=1, log_every_n_steps=1), {}, {}, {"evaluate": True}),
    ("lightning-cli", dict(max_epochs=1, log_every_n_steps=1), {}, {}, {"cli": True}),
]
SLOW_ROWS = {
    "default-cadence-60-steps",
    "max-time",
    "early-stopping",
    "lightning-cli",
    "check-val-every-2-epochs",
}


def _params():
    for row in ROWS:
        marks = [pytest.mark.slow] if row[0] in SLOW_ROWS else []
        yield pytest.param(*row[1:], id=row[0], marks=marks)


def _fit(tmp_path, store_url, trainer_kw, model_kw, data_kw, extra, sub="run"):
    """One seeded fit with CSVLogger and TMonCallback; returns (callback, trainer, csv path)."""
    seed_everything(0, workers=True)
    root = tmp_path / sub
    cb = TMonCallback(
        store_url,
        flush_interval=0.2,
        sample_interval=None,
        widget=False,
        report="off",
        log_grad_norm=bool(extra.get("grad_norm")),
    )
    csv = CSVLogger(root, name="csv")
    callbacks = [cb]
    if extra.get("ckpt"):
        callbacks.append(
            ModelCheckpoint(
                dirpath=root / "ckpts", monitor="val_loss", mode="min", save_top_k=2, save_last=True
            )
        )
    if extra.get("lrmon"):
        callbacks.append(
            LearningRateMonitor(logging_interval="step", log_momentum=extra.get("momentum", False))
        )
    if extra.get("early"):
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=1, min_delta=10.0))
    kw = dict(
        default_root_dir=root,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(extra.get("ckpt")),
        num_sanity_val_steps=0,
        **trainer_kw,
    )
    data_kw = {"n": 128, "batch_size": 16, **data_kw}
    if extra.get("cli"):
        from lightning.pytorch.cli import LightningCLI

        pytest.importorskip("jsonargparse")
        # as a user configures it: classes and their arguments, from the command line
        cli = LightningCLI(
            Model,
            Data,
            run=False,
            save_config_callback=None,
            seed_everything_default=0,
            trainer_defaults=kw,
            args=[
                "--model.lr=0.05",
                f"--data.n={data_kw['n']}",
                "--data.batch_size=16",
                "--trainer.logger=CSVLogger",
                f"--trainer.logger.save_dir={root}",
                "--trainer.logger.name=csv",
                "--trainer.callbacks+=tmon_callbacks.lightning.TMonCallback",
                f"--trainer.callbacks.store={store_url}",
                "--trainer.callbacks.flush_interval=0.2",
                "--trainer.callbacks.sample_interval=null",
                "--trainer.callbacks.widget=false",
                "--trainer.callbacks.report=off",
            ],
        )
        trainer, model, data = cli.trainer, cli.model, cli.datamodule
        cb = next(c for c in trainer.callbacks if isinstance(c, TMonCallback))
        csv = trainer.logger
    else:
        trainer = Trainer(callbacks=callbacks, logger=csv, **kw)
        model, data = Model(**model_kw), Data(**data_kw)
    trainer.fit(model, datamodule=data)
    if extra.get("evaluate"):
        trainer.test(model, datamodule=data, verbose=False)
        trainer.validate(model, datamodule=data, verbose=False)
    return cb, trainer, os.path.join(csv.log_dir, "metrics.csv")


@pytest.mark.parametrize("trainer_kw, model_kw, data_kw, extra", list(_params()))
def test_tmon_records_what_lightnings_csv_logger_wrote(
    tmp_path, store_url, trainer_kw, model_kw, data_kw, extra
):
    cb, trainer, csv_path = _fit(tmp_path, store_url, trainer_kw, model_kw, data_kw, extra)
    tmon, csv = read_run(store_url, cb.run_id), read_csv(csv_path)
    rules = [EPOCH_ROWS, THROTTLED]
    require = ["epoch"]
    if model_kw.get("accumulate", 1) > 1:
        rules.append(
            Also(
                "loss",
                "loss_mean",
                why="with accumulation tmon's loss is the mean of the step's "
                "returned losses, which the model logs as loss_mean",
            )
        )
        rules.append(
            Tolerance(1e-6, keys=("loss_mean",), why="a float32 mean vs tmon's float32 sum of loss/N")
        )
        require.append("loss_mean")
    else:
        rules.append(LOSS)
        require.append("train_loss_step")
    if extra.get("lrmon"):
        rules.append(
            Also("lr", "lr-SGD", why="tmon's lr per step, as LearningRateMonitor logs it at the step's start")
        )
        require.append("lr-SGD")
        if model_kw.get("manual"):
            rules.append(Also("lr/opt1/pg0", "lr-Adam", why="the second optimizer's lr"))
            require.append("lr-Adam")
        if extra.get("momentum"):
            rules.append(
                Also("momentum", "lr-SGD-momentum", why="tmon's momentum is SGD's, as the monitor logs it")
            )
            require.append("lr-SGD-momentum")
    if extra.get("grad_norm"):
        rules.append(
            Also(
                "grad_norm",
                "grad_2.0_norm_total",
                why="tmon's log_grad_norm=True: the total norm before clipping, as the model logs it",
            )
        )
        rules.append(
            Tolerance(1e-5, keys=("grad_2.0_norm_total",), why="float32 norms summed in another order")
        )
        require.append("grad_2.0_norm_total")
    if "val_check_interval" in trainer_kw or trainer_kw.get("max_epochs", 0) > 1:
        require.append("val_loss")
    result = compare(tmon, csv, rules, require=require)

    if extra.get("twin"):
        # with the default log_every_n_steps=50, a 10-step fit writes no per-step value: tmon's must
        # equal those of the same seeded fit that Lightning logs at every step
        _cb, _t, twin_csv = _fit(
            tmp_path,
            f"sqlite:///{tmp_path}/twin.db",
            {**trainer_kw, "log_every_n_steps": 1},
            model_kw,
            data_kw,
            extra,
            sub="twin",
        )
        result = compare(
            tmon,
            read_csv(twin_csv),
            [EPOCH_ROWS, LOSS],
            require=["train_loss_step", "epoch", "batch_end_loss_x2"],
        )
        assert ("train_loss_step", "train_loss_step") in result.compared
        assert "train_loss_step" not in csv
    result.check()

    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    loss = run.metrics("loss")
    n_steps = trainer.fit_loop.epoch_loop._batches_that_stepped
    assert loss.step.tolist() == list(range(n_steps)), "one loss per optimizer step"
    assert run.metrics("data_time").step.tolist() == loss.step.tolist(), (
        "data_time for every step, first included"
    )
    assert run.metrics("step_time").step.tolist() == loss.step.tolist()

    events = run.events()
    val_steps = {s for s, _ in tmon.get("val_loss", [])}
    for row in events[events.type == ev.VALIDATION_END].itertuples():
        assert row.step in val_steps, f"validation_end at step {row.step}, val_loss at {sorted(val_steps)}"

    end = events[events.type == ev.TRAIN_END].data.iloc[-1]
    expected = extra.get("reason") or (
        ev.END_EARLY_STOPPING
        if extra.get("early")
        else ev.END_MAX_STEPS
        if "max_steps" in trainer_kw
        else ev.END_MAX_EPOCHS
    )
    assert end["reason"] == expected
    config = run.info()["config"][ev.CONFIG_CALLBACKS]
    names = [c["name"] for c in config]
    assert "TMonCallback" not in names
    if extra.get("early"):
        assert end["callback"] == "EarlyStopping" and end["monitor"] == "val_loss" and end["patience"] == 1
        assert {
            "name": "EarlyStopping",
            "monitor": "val_loss",
            "mode": "min",
            "patience": 1,
            "min_delta": 10.0,
        }.items() <= next(c for c in config if c["name"] == "EarlyStopping").items()
    if extra.get("ckpt"):
        ck = next(c for c in config if c["name"] == "ModelCheckpoint")
        assert (ck["monitor"], ck["mode"], ck["save_top_k"], ck["save_last"]) == ("val_loss", "min", 2, True)
        kept = run.checkpoints()
        assert sorted(kept.path) == sorted(
            {
                *trainer.checkpoint_callback.best_k_models,
                os.path.abspath(trainer.checkpoint_callback.last_model_path),
            }
        )
    if extra.get("lrmon"):
        assert "LearningRateMonitor" in names
    if extra.get("evaluate"):
        kinds = events[events.type.isin([ev.EVALUATION_START, ev.EVALUATION_END])]
        assert [(t, d["stage"]) for t, d in zip(kinds.type, kinds.data)] == [
            (ev.EVALUATION_START, "test"),
            (ev.EVALUATION_END, "test"),
            (ev.EVALUATION_START, "validate"),
            (ev.EVALUATION_END, "validate"),
        ]
        assert len(tmon["test_loss"]) == 1 and len(tmon["val_loss"]) == 2  # in the fit, then validate()
