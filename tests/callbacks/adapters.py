"""One harness per framework adapter, so what every adapter must do is tested once, parametrised.

Each harness builds its framework's ``TMonCallback`` and runs a tiny real fit on CPU with a probe
that reads what the optimizer holds at the start of every step (after tmon applied its decisions)
and runs ``asks[step]()`` at chosen steps. Steps are numbered as the adapter records them: from 0
for Lightning and Keras, from 1 for HF (its ``global_step`` after the step).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import pytest


@dataclass
class Fit:
    steps: list = field(default_factory=list)  # the steps that started, in order
    lrs: dict = field(default_factory=dict)  # step -> [lr of each param group] at its start
    wds: dict = field(default_factory=dict)  # step -> [weight decay of each param group]


class Harness:
    name = ""
    module = ""  # what must be importable
    first = 0  # the first step's number
    steps_per_epoch = 0
    groups = 1  # param groups of the optimizer the fit uses
    lr = 0.05

    def callback(self, url, **opts):
        return self.callback_class()(url, **opts)

    def callback_class(self):
        return importlib.import_module(f"tmon_callbacks.{self.name}").TMonCallback

    def untouched_lrs(self, step: int) -> list[float]:
        """The lr of each group at ``step`` when nobody changes it."""
        raise NotImplementedError

    def run(self, tmp_path, cb, asks=None, epochs: int = 1) -> Fit:
        raise NotImplementedError


class LightningHarness(Harness):
    name, module, first, steps_per_epoch, groups = "lightning", "lightning", 0, 12, 2

    def untouched_lrs(self, step):
        return [self.lr, self.lr / 10]  # TinyRegressor(two_groups=True): the head at a tenth

    def run(self, tmp_path, cb, asks=None, epochs=1):
        from lightning.pytorch import Callback, Trainer

        from examples.tiny_lightning import make

        TinyRegressor, SyntheticData = make("lightning.pytorch")
        out, asks = Fit(), asks or {}

        class Probe(Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                step = trainer.global_step
                out.steps.append(step)
                out.lrs[step] = [g["lr"] for g in trainer.optimizers[0].param_groups]
                out.wds[step] = [g["weight_decay"] for g in trainer.optimizers[0].param_groups]
                if step in asks:
                    asks[step]()

        t = Trainer(
            max_epochs=epochs,
            callbacks=[cb, Probe()],
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            log_every_n_steps=1,
        )
        t.fit(TinyRegressor(lr=self.lr, two_groups=True), SyntheticData(n=256, batch_size=16))
        return out


class HFHarness(Harness):
    name, module, first, steps_per_epoch, groups = "hf", "transformers", 1, 4, 2

    def __init__(self):
        self.total = None

    def untouched_lrs(self, step):
        # HF's default schedule, linear decay without warm-up, on both of its groups (decay, no decay)
        lr = self.lr * (self.total - (step - 1)) / self.total
        return [lr, lr]

    def run(self, tmp_path, cb, asks=None, epochs=1):
        from transformers import Trainer, TrainerCallback

        from tests.callbacks.test_hf import TokenData, args, tiny_bert

        out, asks = Fit(), asks or {}
        self.total = epochs * self.steps_per_epoch

        class Probe(TrainerCallback):
            def on_step_begin(self, args, state, control, optimizer=None, **kw):
                step = state.global_step + 1
                out.steps.append(step)
                out.lrs[step] = [g["lr"] for g in optimizer.param_groups]
                out.wds[step] = [g["weight_decay"] for g in optimizer.param_groups]
                if step in asks:
                    asks[step]()

        Trainer(
            model=tiny_bert(),
            train_dataset=TokenData(32),
            callbacks=[cb, Probe()],
            args=args(
                tmp_path, num_train_epochs=epochs, save_strategy="no", optim="sgd", learning_rate=self.lr
            ),
        ).train()
        return out


class KerasHarness(Harness):
    name, module, first, steps_per_epoch, groups = "keras", "keras", 0, 4, 1

    def untouched_lrs(self, step):
        return [self.lr]

    def run(self, tmp_path, cb, asks=None, epochs=1):
        import keras

        from tests.callbacks.test_keras import data, mlp

        if keras.backend.backend() != "torch":
            pytest.skip(
                f"Keras runs on the torch backend in these tests, this process has {keras.backend.backend()}"
            )
        out, asks = Fit(), asks or {}

        class Probe(keras.callbacks.Callback):
            step = 0

            def on_train_batch_begin(self, batch, logs=None):
                opt, step = self.model.optimizer, Probe.step
                out.steps.append(step)
                out.lrs[step] = [float(keras.ops.convert_to_numpy(opt.learning_rate))]
                out.wds[step] = [opt.weight_decay]
                if step in asks:
                    asks[step]()

            def on_train_batch_end(self, batch, logs=None):
                Probe.step += 1

        x, y = data(64)
        mlp(keras.optimizers.SGD(self.lr)).fit(
            x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False, callbacks=[cb, Probe()]
        )
        return out


HARNESSES = [LightningHarness, HFHarness, KerasHarness]


def harness_params():
    """``pytest.param`` per adapter, skipped with the reason when its framework is not installed."""
    out = []
    for cls in HARNESSES:
        missing = importlib.util.find_spec(cls.module) is None
        out.append(
            pytest.param(
                cls, id=cls.name, marks=pytest.mark.skipif(missing, reason=f"{cls.module} is not installed")
            )
        )
    return out
