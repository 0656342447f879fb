"""What the Ray tests run inside Ray Train workers and Tune trials, as a user writes it.

Ray imports these functions by reference in its worker processes: the tests' Ray processes have the
checkout on ``PYTHONPATH`` (``tests/callbacks/ray_env.py``). Each worker reads its store from
``$TMON_STORE``, which the test hands the workers with ``RunConfig(worker_runtime_env=...)`` (how a
cluster's workers get it too). The knobs (epochs, a step's sleep, when to fail) come in the trial's
``train_loop_config`` with its ``lr``.
"""

from __future__ import annotations

import os
import signal
import time

import lightning.pytorch as pl
import torch


class Tiny(pl.LightningModule):
    def __init__(self, lr: float, sleep: float = 0.0, fail_at_step: int | None = None, kill: bool = False):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.lr, self.sleep, self.fail_at_step, self.kill = lr, sleep, fail_at_step, kill

    def training_step(self, batch, batch_idx):
        if self.fail_at_step is not None and self.trainer.global_step == self.fail_at_step:
            if self.kill:  # the worker process dies on the spot: nothing of it runs after this
                # first, time for Ray's controller to register the checkpoint the last epoch's end reported
                # (asynchronous: in one loaded CI run the kill came first and the restart began at step 0)
                time.sleep(3.0)
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"worker failure at step {self.fail_at_step} (the test's first attempt)")
        if self.sleep:
            time.sleep(self.sleep)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _loader(n: int = 64, batch_size: int = 8):
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size)


def lightning_train(config: dict) -> None:
    """A Lightning fit under ``TorchTrainer`` with Ray's strategy, environment and report callback.

    ``fail_marker``: a file; the first attempt (no file yet) creates it and fails at
    ``fail_at_step`` (raises, or with ``kill`` its process is killed); a restarted attempt resumes
    from the checkpoint Ray persisted."""
    import ray.train
    from ray.train.lightning import (
        RayDDPStrategy,
        RayLightningEnvironment,
        RayTrainReportCallback,
        prepare_trainer,
    )

    from tmon_callbacks.lightning import TMonCallback

    torch.set_num_threads(1)
    fail_at = None
    marker = config.get("fail_marker")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        fail_at = config["fail_at_step"]
    model = Tiny(config["lr"], config.get("sleep", 0.0), fail_at, config.get("kill", False))
    trainer = pl.Trainer(
        max_epochs=config.get("epochs", 2),
        accelerator="cpu",
        devices="auto",
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        callbacks=[
            RayTrainReportCallback(),
            TMonCallback(
                sample_interval=0.2, control=config.get("control", "manage"), widget=False, report="off"
            ),
        ],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer = prepare_trainer(trainer)
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # Ray restarted this run: go on from the checkpoint it persisted
        with ckpt.as_directory() as folder:
            trainer.fit(
                model, _loader(), ckpt_path=os.path.join(folder, RayTrainReportCallback.CHECKPOINT_NAME)
            )
    else:
        trainer.fit(model, _loader())


def tune_driver(config: dict) -> None:
    """A Tune trial's function (Ray Train V2): one ``TorchTrainer`` per trial, told its trial."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from tmon_callbacks.ray import trial_runtime_env

    TorchTrainer(
        lightning_train,
        train_loop_config=config["train_loop_config"],
        scaling_config=ray.train.ScalingConfig(num_workers=1),
        run_config=ray.train.RunConfig(
            name=f"train-{tune.get_context().get_trial_id()}",
            storage_path=config["storage_path"],
            callbacks=[TuneReportCallback()],
            worker_runtime_env=trial_runtime_env({"env_vars": {"TMON_STORE": config["store"]}}),
        ),
    ).fit()


class TokenData(torch.utils.data.Dataset):
    def __init__(self, n: int = 32, seq: int = 8):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 100, (n, seq), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def hf_train(config: dict) -> None:
    """A Hugging Face ``Trainer`` under ``TorchTrainer``: Ray's ``prepare_trainer`` and report callback."""
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from tmon_callbacks.hf import TMonCallback

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    args = TrainingArguments(
        output_dir=os.path.join(ray.train.get_context().get_storage().experiment_fs_path, "hf-out"),
        max_steps=config["max_steps"],
        per_device_train_batch_size=4,
        learning_rate=config["lr"],
        logging_steps=1,
        save_steps=config["save_steps"],
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=TokenData(),
        callbacks=[RayTrainReportCallback(), TMonCallback(sample_interval=0.2, widget=False, report="off")],
    )
    trainer = prepare_trainer(trainer)
    trainer.train()
