"""A tiny Lightning model and synthetic data, built from a config: used by the demo, the tests
and the benchmarks. Works with ``lightning.pytorch`` and ``pytorch_lightning``."""

from __future__ import annotations

import importlib

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make(package: str = "lightning.pytorch"):
    """Return ``(TinyRegressor, SyntheticData)`` classes for the Lightning package ``package``."""
    pl = importlib.import_module(package)

    class TinyRegressor(pl.LightningModule):
        """An MLP regressor. ``fail_at_step`` raises ``fail_with`` inside ``training_step``."""

        def __init__(
            self,
            in_features: int = 8,
            hidden: int = 16,
            lr: float = 0.05,
            two_groups: bool = False,
            scheduler: str | None = None,
            fail_at_step: int | None = None,
            fail_with: str = "RuntimeError",
            log_metrics: bool = True,
            nan_at_step: int | None = None,
            sleep: float = 0.0,
        ):
            super().__init__()
            self.save_hyperparameters()
            self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
            self.head = nn.Linear(hidden, 1)

        def forward(self, x):
            return self.head(self.body(x)).squeeze(-1)

        def training_step(self, batch, batch_idx):
            hp = self.hparams
            if hp.fail_at_step is not None and self.global_step >= hp.fail_at_step:
                if hp.fail_with == "OutOfMemoryError":
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
                raise RuntimeError(f"boom at step {self.global_step}")
            if hp.sleep:
                import time

                time.sleep(hp.sleep)
            x, y = batch
            loss = nn.functional.mse_loss(self(x), y)
            if hp.nan_at_step is not None and self.global_step == hp.nan_at_step:
                loss = loss * float("nan")
            if hp.log_metrics:
                self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self(x), y)
            if self.hparams.log_metrics:
                self.log("val_loss", loss, on_epoch=True, prog_bar=True)

        def configure_optimizers(self):
            hp = self.hparams
            if hp.two_groups:
                groups = [
                    {"params": self.body.parameters(), "lr": hp.lr},
                    {"params": self.head.parameters(), "lr": hp.lr / 10},
                ]
            else:
                groups = self.parameters()
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=0.9)
            if hp.scheduler == "step":
                return {
                    "optimizer": opt,
                    "lr_scheduler": {
                        "scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5),
                        "interval": "step",
                    },
                }
            return opt

    class SyntheticData(pl.LightningDataModule):
        """y = x·w + noise, from a fixed seed."""

        def __init__(
            self,
            n: int = 256,
            in_features: int = 8,
            batch_size: int = 16,
            num_workers: int = 0,
            seed: int = 0,
        ):
            super().__init__()
            self.save_hyperparameters()

        def setup(self, stage=None):
            g = torch.Generator().manual_seed(self.hparams.seed)
            x = torch.randn(self.hparams.n, self.hparams.in_features, generator=g)
            w = torch.randn(self.hparams.in_features, generator=g)
            y = x @ w + 0.1 * torch.randn(self.hparams.n, generator=g)
            split = int(0.75 * self.hparams.n)
            self.train_set = TensorDataset(x[:split], y[:split])
            self.val_set = TensorDataset(x[split:], y[split:])

        def train_dataloader(self):
            return DataLoader(
                self.train_set,
                batch_size=self.hparams.batch_size,
                shuffle=True,
                num_workers=self.hparams.num_workers,
                persistent_workers=self.hparams.num_workers > 0,
            )

        def val_dataloader(self):
            return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

    return TinyRegressor, SyntheticData
