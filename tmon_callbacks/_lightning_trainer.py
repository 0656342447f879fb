"""What the Lightning adapter reads from its package (``LightningPackage``) and from a ``Trainer``
once per fit: the run config, the callbacks in use, why the fit ended, the folders
``ModelCheckpoint`` writes. Works for ``lightning.pytorch`` and ``pytorch_lightning``: the
package's classes are handed in (``pl``, a ``LightningPackage``)."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from tmon_core import events as ev
from tmon_core.jsonable import json_safe
from tmon_core.run_config import RunConfig

from . import _torch
from ._workarounds import lightning as wa


@dataclass(frozen=True)
class LightningPackage:
    """The classes of one Lightning package the adapter uses, and what its version allows."""

    name: str  # "lightning.pytorch" | "pytorch_lightning"
    version: str | None
    Callback: type
    ModelCheckpoint: type
    EarlyStopping: type
    Timer: type
    skips_non_callable_hooks: bool  # see _workarounds.lightning.skip_unused_hooks

    @classmethod
    def load(cls, name: str) -> LightningPackage:
        pl = importlib.import_module(name)
        callbacks = importlib.import_module(f"{name}.callbacks")
        version = getattr(pl, "__version__", None)
        return cls(
            name,
            version,
            pl.Callback,
            callbacks.ModelCheckpoint,
            callbacks.EarlyStopping,
            callbacks.Timer,
            wa.skips_non_callable_hooks(version),
        )

    @property
    def framework(self) -> str:
        return self.name.split(".")[0]


def run_config(pl, trainer, pl_module, own, controller) -> dict:
    """The run config of the fit that the callback ``own`` records (``pl``: the package's
    ``LightningPackage``; ``controller``: the run's, or None)."""
    dm = trainer.datamodule
    return RunConfig(
        framework=pl.name,
        framework_version=pl.version,
        precision=str(trainer.precision),
        accumulate_grad_batches=trainer.accumulate_grad_batches,
        max_epochs=trainer.max_epochs,
        max_steps=trainer.max_steps,
        log_every_n_steps=trainer.log_every_n_steps,
        gradient_clip_val=trainer.gradient_clip_val,
        num_devices=trainer.num_devices,
        num_nodes=trainer.num_nodes,
        world_size=trainer.world_size,
        strategy=type(trainer.strategy).__name__,
        accelerator=type(trainer.accelerator).__name__,
        optimizers=_torch.optimizer_summary(trainer.optimizers),
        lr_schedulers=[
            {"class": type(c.scheduler).__name__, "interval": c.interval, "frequency": c.frequency}
            for c in trainer.lr_scheduler_configs
        ],
        **_torch.model_summary(pl_module),
        hparams=json_safe(dict(getattr(pl_module, "hparams", {}) or {})),
        control=controller.describe() if controller is not None else None,
        callbacks=callbacks_config(pl, trainer.callbacks, own),
        **(
            {"datamodule_hparams": json_safe(dict(dm.hparams))}
            if dm is not None and getattr(dm, "hparams", None)
            else {}
        ),
        **_torch.dataloader_config(trainer.train_dataloader),
    ).as_dict()


#: settings recorded per framework callback (others by class name); read with getattr, so a
#: Lightning without one of them records the rest. What a callback keeps privately:
#: ``_workarounds.lightning.private_settings``
_CALLBACK_SETTINGS = {
    "EarlyStopping": (
        "monitor",
        "mode",
        "patience",
        "min_delta",
        "stopping_threshold",
        "divergence_threshold",
        "check_on_train_epoch_end",
    ),
    "ModelCheckpoint": (
        "monitor",
        "mode",
        "save_top_k",
        "save_last",
        "save_weights_only",
        "dirpath",
        "filename",
    ),
    "LearningRateMonitor": ("logging_interval", "log_momentum", "log_weight_decay"),
}


def callbacks_config(pl, callbacks, own) -> list[dict]:
    """The run config's ``events.CONFIG_CALLBACKS``: each callback of the fit but tmon's, with the
    settings later advice and comparisons need."""
    out = []
    for cb in callbacks:
        if cb is own:
            continue
        name = type(cb).__name__
        kind = (
            "ModelCheckpoint"
            if isinstance(cb, pl.ModelCheckpoint)
            else "EarlyStopping"
            if isinstance(cb, pl.EarlyStopping)
            else name
        )
        item = {"name": name}
        for attr in _CALLBACK_SETTINGS.get(kind, ()):
            if hasattr(cb, attr):
                v = getattr(cb, attr)
                if attr == "min_delta":  # stored signed by mode
                    v = abs(float(v))
                item[attr] = v
        item.update(wa.private_settings(cb))
        out.append(json_safe(item))
    return out


def end_reason(pl, trainer, stop_requested: bool) -> dict:
    """Why the fit ended: ``train_end``'s data (``reason``, one of ``events.END_REASONS``, and
    what the stopping callback says of itself)."""
    if stop_requested:
        return {"reason": ev.END_STOP_REQUEST}
    for cb in trainer.callbacks:
        if isinstance(cb, pl.EarlyStopping):
            why = getattr(cb, "stopping_reason", None)  # (Lightning >= 2.6)
            stopped = cb.stopped_epoch > 0 if why is None else getattr(why, "name", "") != "NOT_STOPPED"
            if stopped:
                return {
                    "reason": ev.END_EARLY_STOPPING,
                    "callback": type(cb).__name__,
                    "monitor": cb.monitor,
                    "mode": cb.mode,
                    "patience": cb.patience,
                    "min_delta": abs(float(cb.min_delta)),
                    "stopped_epoch": cb.stopped_epoch,
                    "wait_count": cb.wait_count,
                    "message": getattr(cb, "stopping_reason_message", None),
                }
        if isinstance(cb, pl.Timer):
            left = cb.time_remaining()
            if left is not None and left <= 0:
                return {
                    "reason": ev.END_TIME_LIMIT,
                    "callback": type(cb).__name__,
                    "elapsed_s": cb.time_elapsed(),
                }
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return {"reason": ev.END_MAX_STEPS, "max_steps": trainer.max_steps}
    if trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        return {"reason": ev.END_MAX_EPOCHS, "max_epochs": trainer.max_epochs}
    if trainer.should_stop:
        return {"reason": ev.END_SHOULD_STOP}
    return {"reason": ev.END_DATA_EXHAUSTED}


def total_steps(trainer) -> int | None:
    """The optimizer steps the fit will take, when Lightning can tell."""
    total = trainer.estimated_stepping_batches
    if isinstance(total, int) or (isinstance(total, float) and total != float("inf")):
        return int(total)
    return None


def checkpoint_dirs(pl, trainer) -> list[str]:
    """The folders the fit's ``ModelCheckpoint`` callbacks write."""
    return [
        cb.dirpath for cb in trainer.checkpoint_callbacks if isinstance(cb, pl.ModelCheckpoint) and cb.dirpath
    ]


def checkpoint_monitor(pl, trainer, path: str) -> tuple[str | None, float | None]:
    """The monitor and its current value of the ModelCheckpoint that writes into ``path``'s folder."""
    for cb in trainer.checkpoint_callbacks:
        if (
            isinstance(cb, pl.ModelCheckpoint)
            and cb.dirpath
            and os.path.abspath(cb.dirpath) == os.path.dirname(path)
        ):
            value = trainer.callback_metrics.get(cb.monitor) if cb.monitor is not None else None
            return cb.monitor, None if value is None else float(value)
    return None, None
