"""Real CPU fits for the corpus: three model families built from config (an MLP, a small CNN, a
small transformer encoder), across seeds, batch sizes (4 to 64: per-batch losses from very noisy to
smooth), optimizers (SGD with momentum, Adam) and schedules (constant, step, cosine, one-cycle with
warm-up); healthy, or with NaN injected into the loss at a step. Each fit runs Lightning with
``TMonCallback`` into a real store and is reported from it, as a user's would be."""

from __future__ import annotations

from .corpus import Spec


def _modules():
    import torch
    from lightning.pytorch import LightningModule
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    def data(family: str, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        if family == "mlp":
            x = torch.randn(n, 16, generator=g)
            w = torch.randn(16, generator=g)
            return x, (x @ w + 0.3 * torch.randn(n, generator=g))
        if family == "cnn":
            x = torch.randn(n, 1, 8, 8, generator=g)
            teacher = torch.randn(64, 4, generator=g)
            return x, (x.flatten(1) @ teacher).argmax(1)
        tokens = torch.randint(0, 20, (n, 8), generator=g)
        return tokens, (tokens.sum(1) % 3)

    def model(family: str):
        if family == "mlp":
            return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1), nn.Flatten(0))
        if family == "cnn":
            return nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 4)
            )

        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(20, 16)
                self.enc = nn.TransformerEncoder(
                    nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 1
                )
                self.head = nn.Linear(16, 3)

            def forward(self, x):
                return self.head(self.enc(self.emb(x)).mean(1))

        return Encoder()

    class Fit(LightningModule):
        def __init__(self, family="mlp", opt="sgd", lr=0.01, schedule="constant", total=150, nan_at=None):
            super().__init__()
            self.save_hyperparameters()
            self.net = model(family)

        def _loss(self, batch):
            x, y = batch
            out = self.net(x)
            if self.hparams.family == "mlp":
                return nn.functional.mse_loss(out, y)
            return nn.functional.cross_entropy(out, y)

        def training_step(self, batch, batch_idx):
            loss = self._loss(batch)
            if self.hparams.nan_at is not None and self.global_step >= self.hparams.nan_at:
                loss = loss * float("nan")
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self):
            hp = self.hparams
            opt = (
                torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=0.9)
                if hp.opt == "sgd"
                else torch.optim.Adam(self.parameters(), lr=hp.lr)
            )
            sched = {
                "constant": None,
                "step": lambda: torch.optim.lr_scheduler.StepLR(
                    opt, step_size=max(hp.total // 3, 1), gamma=0.3
                ),
                "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.total),
                "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(
                    opt, max_lr=hp.lr, total_steps=hp.total + 5, pct_start=0.15
                ),
            }[hp.schedule]
            if sched is None:
                return opt
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched(), "interval": "step"}}

    def loaders(family, batch, seed, n=640):
        x, y = data(family, n, seed)
        split = int(0.8 * n)
        return (
            DataLoader(TensorDataset(x[:split], y[:split]), batch_size=batch, shuffle=True),
            DataLoader(TensorDataset(x[split:], y[split:]), batch_size=64),
        )

    return Fit, loaders


def plans(count: int) -> list[dict]:
    """``count`` fits: the three families in turn, then the optimizers, then the schedules; batch sizes
    4, 8, 32, 64 in turn; every fourth with NaN from a step."""
    families, opts, schedules = (
        ("mlp", "cnn", "transformer"),
        ("sgd", "adam"),
        ("constant", "step", "cosine", "onecycle"),
    )
    out = []
    for i in range(count):
        family, opt, schedule = families[i % 3], opts[(i // 3) % 2], schedules[(i // 6) % 4]
        lr = {"sgd": 0.01 if family == "mlp" else 0.05, "adam": 1e-3 if family != "transformer" else 3e-3}[
            opt
        ]
        out.append(
            {
                "family": family,
                "opt": opt,
                "schedule": schedule,
                "batch": (4, 8, 32, 64)[i % 4],
                "lr": lr,
                "seed": i,
                "nan_at": 30 + (7 * i) % 100 if i % 4 == 3 else None,
            }
        )  # inside the 150 steps
    return out


def real_runs(count: int, url: str, root: str, *, steps: int = 150) -> list:
    """Run ``count`` fits (``plans``); [(Spec, Report)] for the scoring of tests/diagnosis/score.py."""
    import torch
    from lightning.pytorch import Trainer

    from tmon_callbacks.lightning import TMonCallback

    Fit, loaders = _modules()
    rows = []
    for p in plans(count):
        torch.manual_seed(p["seed"])
        train, val = loaders(p["family"], p["batch"], p["seed"])
        cb = TMonCallback(url, flush_interval=0.2, sample_interval=None, widget=False)
        t = Trainer(
            max_steps=steps,
            callbacks=[cb],
            default_root_dir=root,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
            enable_checkpointing=False,
            val_check_interval=25,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
        )
        t.fit(Fit(p["family"], p["opt"], p["lr"], p["schedule"], steps, p["nan_at"]), train, val)
        name = f"{p['family']}-{p['opt']}-{p['schedule']}-b{p['batch']}-s{p['seed']}"
        fault = "nonfinite" if p["nan_at"] is not None else None
        spec = Spec(name, fault, p["nan_at"], steps, {}, noise=f"real {name}")
        rows.append((spec, cb.session.report))
    return rows
