"""The settings a recommendation names, in each framework's own terms.

``terms_for(framework, config).batch_size()`` returns a ``Setting``: the ``path`` to paste (``...``
where the value goes) and the run's current value, read from the config the adapter stored.

=====================  ===================================  ======================================  ======================================
setting                Lightning                            HF ``Trainer``                          Keras
=====================  ===================================  ======================================  ======================================
batch size             ``DataLoader(batch_size=...)``       ``TrainingArguments(per_device_         ``model.fit(batch_size=...)``
                                                            train_batch_size=...)``
gradient accumulation  ``Trainer(accumulate_grad_           ``TrainingArguments(gradient_           ``keras.optimizers.Adam(gradient_
                       batches=...)``                       accumulation_steps=...)``               accumulation_steps=...)``
precision              ``Trainer(precision=...)``           ``TrainingArguments(bf16=...)``         ``keras.mixed_precision.set_global_
                                                                                                    policy(...)``
dataloader workers     ``DataLoader(num_workers=...)``      ``TrainingArguments(dataloader_num_     ``keras.utils.PyDataset(workers=...,
                                                            workers=...)``                          use_multiprocessing=True)``
=====================  ===================================  ======================================  ======================================

and activation checkpointing, pinned memory, persistent workers, gradient clipping, learning rate,
weight decay, early stopping, learning-rate schedules, the DDP timeout.

A plain PyTorch loop (``tmon_core.track``) gets the code to write in the loop: ``DataLoader(batch_size=...)``,
``torch.nn.utils.clip_grad_norm_(...)``, ``with torch.autocast(...)``, ``optimizer.step()`` once every ... batches
(under 🤗 Accelerate: ``Accelerator(mixed_precision=...)``, ``Accelerator(gradient_accumulation_steps=...)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..run_config import RunConfig

LIGHTNING, HF, KERAS, PYTORCH, GENERIC = "lightning", "hf", "keras", "pytorch", "generic"


def literal(value: Any) -> str:
    """``value`` as Python source: ``True``, ``"bf16-mixed"``, ``0.0003``."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return f"{value:.3g}" if value and (abs(value) < 1e-3 or abs(value) >= 1e5) else repr(round(value, 6))
    return repr(value)


@dataclass
class Setting:
    path: str | None  # None: the framework has no such setting
    current: Any = None

    def code(self, value: Any) -> str | None:
        if self.path is None:
            return None
        return self.path.replace("...", literal(value), 1)


def framework_of(info: dict) -> str:
    name = (info.get("framework") or RunConfig.read(info.get("config")).framework or "").lower()
    if name in ("lightning", "pytorch_lightning") or name.startswith("lightning."):
        return LIGHTNING
    if name in ("hf", "transformers"):
        return HF
    if name == "keras":
        return KERAS
    if name in ("pytorch", "torch"):
        return PYTORCH
    return GENERIC


def terms_for(framework: str, config: dict) -> Terms:
    return {LIGHTNING: LightningTerms, HF: HFTerms, KERAS: KerasTerms, PYTORCH: PyTorchTerms}.get(framework, Terms)(config)


def _first(value: Any, otherwise: Any) -> Any:
    """``value``, or ``otherwise`` where the config holds none."""
    return otherwise if value is None else value


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


class Terms:
    """Generic names, for runs recorded by a plain ``Recorder``."""

    name = GENERIC

    def __init__(self, config: dict):
        self.cfg = config or {}
        self.rc = RunConfig.read(self.cfg)  # read by field name: the names the adapters store it under

    # what the run was configured with, under the names every adapter stores
    def optimizer_class(self) -> str | None:
        opts = self.rc.optimizers or []
        return opts[0].get("class") if opts and isinstance(opts[0], dict) else None

    def optimizer_value(self, name: str) -> Any:
        opts = self.rc.optimizers or []
        if not opts or not isinstance(opts[0], dict):
            return None
        for k in ("defaults", "config"):
            d = opts[0].get(k)
            if isinstance(d, dict) and name in d:
                return d[name]
        return None

    def batch_size(self) -> Setting:
        return Setting("batch_size=...", self.rc.batch_size)

    def accumulation(self) -> Setting:
        return Setting("gradient_accumulation_steps=...", self.rc.accumulate_grad_batches or 1)

    def checkpointing(self) -> Setting:
        return Setting("activation_checkpointing=...", self.rc.gradient_checkpointing)

    def precision(self, target: str) -> Setting:
        """``target`` is ``bf16-mixed`` or ``16-mixed``."""
        return Setting("precision=...", self.rc.precision)

    def precision_value(self, target: str) -> Any:
        return target

    def num_workers(self) -> Setting:
        return Setting("num_workers=...", self.rc.num_workers)

    def pin_memory(self) -> Setting:
        return Setting("pin_memory=...", self.rc.pin_memory)

    def persistent_workers(self) -> Setting:
        return Setting("persistent_workers=...", self.rc.persistent_workers)

    def prefetch_factor(self) -> Setting:
        return Setting("prefetch_factor=...", self.rc.prefetch_factor)

    def grad_clip(self) -> Setting:
        return Setting("gradient_clip_norm=...", self.rc.gradient_clip_val)

    def lr(self) -> Setting:
        return Setting("learning_rate=...", _num(self.optimizer_value("lr") or self.optimizer_value("learning_rate")))

    def weight_decay(self) -> Setting:
        return Setting("weight_decay=...", self.optimizer_value("weight_decay"))

    def early_stopping(self, monitor: str) -> Setting:
        return Setting(f"early stopping on {monitor} with patience=...")

    def plateau_schedule(self, monitor: str) -> Setting:
        return Setting(f"reduce the learning rate on a plateau of {monitor}: factor=...")

    def milestone_schedule(self, step: int, old: float) -> Setting:
        return Setting(f"a step schedule: at step {step} multiply the learning rate by ...")

    def ddp_timeout(self) -> Setting:
        return Setting(None)

    def model_class(self) -> str:
        name = str(self.rc.model_class or "Model").rsplit(".", 1)[-1]
        return name if name.isidentifier() else "Model"

    def load_checkpoint(self) -> Setting:
        return Setting("load the checkpoint ...")

    def save_best(self, monitor: str) -> Setting:
        return Setting(f"keep the checkpoint with the best {monitor}: ...")


class _DataLoaderTerms(Terms):
    """The input pipeline of a torch run (Lightning's or a plain loop's) is the user's own DataLoader."""

    def num_workers(self) -> Setting:
        return Setting("DataLoader(num_workers=...)", self.rc.num_workers)

    def pin_memory(self) -> Setting:
        return Setting("DataLoader(pin_memory=...)", self.rc.pin_memory)

    def persistent_workers(self) -> Setting:
        return Setting("DataLoader(persistent_workers=...)", self.rc.persistent_workers)

    def prefetch_factor(self) -> Setting:
        return Setting("DataLoader(prefetch_factor=...)", self.rc.prefetch_factor)


class LightningTerms(_DataLoaderTerms):
    name = LIGHTNING

    def batch_size(self) -> Setting:
        return Setting("DataLoader(batch_size=...)", self.rc.batch_size)

    def accumulation(self) -> Setting:
        return Setting("Trainer(accumulate_grad_batches=...)", self.rc.accumulate_grad_batches or 1)

    def checkpointing(self) -> Setting:
        return Setting("torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) around the large blocks "
                       "in forward() (a transformers model: model.gradient_checkpointing_enable())", None)

    def precision(self, target: str) -> Setting:
        return Setting("Trainer(precision=...)", self.rc.precision)

    def grad_clip(self) -> Setting:
        return Setting("Trainer(gradient_clip_val=...)", self.rc.gradient_clip_val)

    def lr(self) -> Setting:
        return Setting(f"torch.optim.{self.optimizer_class() or 'AdamW'}(params, lr=...) in configure_optimizers()",
                       _num(self.optimizer_value("lr")))

    def weight_decay(self) -> Setting:
        return Setting(f"torch.optim.{self.optimizer_class() or 'AdamW'}(params, weight_decay=...) in "
                       "configure_optimizers()", self.optimizer_value("weight_decay"))

    def early_stopping(self, monitor: str) -> Setting:
        return Setting(f'Trainer(callbacks=[EarlyStopping(monitor="{monitor}", patience=...)])')

    def plateau_schedule(self, monitor: str) -> Setting:
        return Setting('configure_optimizers() returning {"optimizer": optimizer, "lr_scheduler": {"scheduler": '
                       f'ReduceLROnPlateau(optimizer, factor=...), "monitor": "{monitor}"}}}}')

    def milestone_schedule(self, step: int, old: float) -> Setting:
        return Setting('configure_optimizers() returning {"optimizer": optimizer, "lr_scheduler": {"scheduler": '
                       f'MultiStepLR(optimizer, milestones=[{step}], gamma=...), "interval": "step"}}}}')

    def ddp_timeout(self) -> Setting:
        return Setting("Trainer(strategy=DDPStrategy(timeout=datetime.timedelta(seconds=...)))", None)

    def load_checkpoint(self) -> Setting:
        return Setting(f"{self.model_class()}.load_from_checkpoint(...)")

    def save_best(self, monitor: str) -> Setting:
        return Setting(f'Trainer(callbacks=[ModelCheckpoint(monitor="{monitor}", mode="min", save_top_k=...)])')


class HFTerms(Terms):
    name = HF

    def _args(self) -> dict:
        return self.rc.training_args or {}

    def batch_size(self) -> Setting:
        return Setting("TrainingArguments(per_device_train_batch_size=...)",
                       _first(self.rc.per_device_train_batch_size, self.rc.batch_size))

    def accumulation(self) -> Setting:
        return Setting("TrainingArguments(gradient_accumulation_steps=...)",
                       self.rc.gradient_accumulation_steps or self.rc.accumulate_grad_batches or 1)

    def checkpointing(self) -> Setting:
        # transformers 5 renamed gradient checkpointing to activation checkpointing
        name = "activation_checkpointing" if "activation_checkpointing" in self._args() else "gradient_checkpointing"
        return Setting(f"TrainingArguments({name}=...)", bool(self.rc.gradient_checkpointing))

    def precision(self, target: str) -> Setting:
        bf16 = target.startswith("bf16")
        return Setting(f"TrainingArguments({'bf16' if bf16 else 'fp16'}=...)",
                       bool(self.rc.bf16 if bf16 else self.rc.fp16))

    def precision_value(self, target: str) -> Any:
        return True

    def num_workers(self) -> Setting:
        return Setting("TrainingArguments(dataloader_num_workers=...)",
                       _first(self.rc.dataloader_num_workers, self.rc.num_workers))

    def pin_memory(self) -> Setting:
        return Setting("TrainingArguments(dataloader_pin_memory=...)",
                       self._args().get("dataloader_pin_memory", self.rc.pin_memory))

    def persistent_workers(self) -> Setting:
        return Setting("TrainingArguments(dataloader_persistent_workers=...)",
                       self._args().get("dataloader_persistent_workers", self.rc.persistent_workers))

    def prefetch_factor(self) -> Setting:
        return Setting("TrainingArguments(dataloader_prefetch_factor=...)",
                       self._args().get("dataloader_prefetch_factor", self.rc.prefetch_factor))

    def grad_clip(self) -> Setting:
        return Setting("TrainingArguments(max_grad_norm=...)", self.rc.max_grad_norm)

    def lr(self) -> Setting:
        return Setting("TrainingArguments(learning_rate=...)",
                       _num(self._args().get("learning_rate", self.optimizer_value("lr"))))

    def weight_decay(self) -> Setting:
        return Setting("TrainingArguments(weight_decay=...)",
                       self._args().get("weight_decay", self.optimizer_value("weight_decay")))

    def early_stopping(self, monitor: str) -> Setting:
        return Setting("Trainer(callbacks=[EarlyStoppingCallback(early_stopping_patience=...)]) with "
                       f'TrainingArguments(load_best_model_at_end=True, metric_for_best_model="{monitor}")')

    def plateau_schedule(self, monitor: str) -> Setting:
        return Setting('TrainingArguments(lr_scheduler_type="reduce_lr_on_plateau", '
                       'lr_scheduler_kwargs={"factor": ...})')

    def milestone_schedule(self, step: int, old: float) -> Setting:
        return Setting("Trainer(optimizers=(optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, "
                       f"milestones=[{step}], gamma=...)))")

    def ddp_timeout(self) -> Setting:
        return Setting("TrainingArguments(ddp_timeout=...)", self._args().get("ddp_timeout"))

    def load_checkpoint(self) -> Setting:
        return Setting(f"{self.model_class()}.from_pretrained(...)")

    def save_best(self, monitor: str) -> Setting:
        return Setting(f'TrainingArguments(load_best_model_at_end=..., metric_for_best_model="{monitor}")',
                       self._args().get("load_best_model_at_end"))


class KerasTerms(Terms):
    name = KERAS

    def _opt(self) -> str:
        return self.optimizer_class() or "Adam"

    def batch_size(self) -> Setting:
        return Setting("model.fit(batch_size=...)", self.rc.batch_size)

    def accumulation(self) -> Setting:
        return Setting(f"keras.optimizers.{self._opt()}(gradient_accumulation_steps=...)",
                       self.rc.accumulate_grad_batches or 1)

    def checkpointing(self) -> Setting:
        return Setting("with keras.RematScope(mode=...): model = build_model()", None)

    def precision(self, target: str) -> Setting:
        return Setting("keras.mixed_precision.set_global_policy(...)", self.rc.dtype_policy)

    def precision_value(self, target: str) -> Any:
        return "mixed_bfloat16" if target.startswith("bf16") else "mixed_float16"

    def num_workers(self) -> Setting:
        return Setting("keras.utils.PyDataset(workers=..., use_multiprocessing=True)", self.rc.num_workers)

    def pin_memory(self) -> Setting:
        return Setting(None)

    def persistent_workers(self) -> Setting:
        return Setting(None)

    def prefetch_factor(self) -> Setting:
        return Setting(None)

    def grad_clip(self) -> Setting:
        clip = self.optimizer_value("clipnorm") or self.optimizer_value("global_clipnorm")
        return Setting(f"keras.optimizers.{self._opt()}(clipnorm=...)", clip)

    def lr(self) -> Setting:
        return Setting(f"keras.optimizers.{self._opt()}(learning_rate=...)", _num(self.optimizer_value("learning_rate")))

    def weight_decay(self) -> Setting:
        return Setting(f"keras.optimizers.{self._opt()}(weight_decay=...)", self.optimizer_value("weight_decay"))

    def early_stopping(self, monitor: str) -> Setting:
        return Setting(f'model.fit(callbacks=[keras.callbacks.EarlyStopping(monitor="{monitor}", patience=..., '
                       "restore_best_weights=True)])")

    def plateau_schedule(self, monitor: str) -> Setting:
        return Setting(f'model.fit(callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="{monitor}", factor=...)])')

    def milestone_schedule(self, step: int, old: float) -> Setting:
        return Setting(f"keras.optimizers.schedules.PiecewiseConstantDecay(boundaries=[{step}], "
                       f"values=[{literal(old)}, ...])")

    def load_checkpoint(self) -> Setting:
        return Setting("model.load_weights(...)")

    def save_best(self, monitor: str) -> Setting:
        return Setting(f'model.fit(callbacks=[keras.callbacks.ModelCheckpoint(filepath, monitor="{monitor}", '
                       "save_best_only=...)])")


@dataclass
class _CodeSetting(Setting):
    """A setting whose value is code (``torch.bfloat16``), pasted as it is rather than as a string."""

    def code(self, value: Any) -> str | None:
        if self.path is None:
            return None
        return self.path.replace("...", str(value), 1)


class PyTorchTerms(_DataLoaderTerms):
    """A hand-written PyTorch loop (``tmon_core.track``): the advice is code for the loop itself, or
    the ``Accelerator`` argument when the loop runs under 🤗 Accelerate (config ``launcher``)."""

    name = PYTORCH

    def _accelerate(self) -> bool:
        return self.rc.launcher == "accelerate"

    def _opt(self) -> str:
        return self.optimizer_class() or "AdamW"

    def batch_size(self) -> Setting:
        return Setting("DataLoader(dataset, batch_size=...)", self.rc.batch_size)

    def accumulation(self) -> Setting:
        current = self.rc.accumulate_grad_batches or 1
        if self._accelerate():
            return Setting("Accelerator(gradient_accumulation_steps=...) with the step under "
                           "`with accelerator.accumulate(model):`", current)
        return Setting("optimizer.step() and optimizer.zero_grad() once every ... batches, each batch's loss "
                       "divided by that number before backward()", current)

    def checkpointing(self) -> Setting:
        return Setting("torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) around the large blocks "
                       "in forward() (a transformers model: model.gradient_checkpointing_enable())", None)

    def precision(self, target: str) -> Setting:
        if self._accelerate():
            return Setting("Accelerator(mixed_precision=...)", self.rc.mixed_precision)
        path = 'with torch.autocast(device_type="cuda", dtype=...): around the forward pass and the loss'
        if not target.startswith("bf16"):
            path += ', with scaler = torch.amp.GradScaler("cuda"): scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()'
        return _CodeSetting(path, self.rc.precision)

    def precision_value(self, target: str) -> Any:
        if self._accelerate():
            return "bf16" if target.startswith("bf16") else "fp16"
        return "torch.bfloat16" if target.startswith("bf16") else "torch.float16"

    def grad_clip(self) -> Setting:
        clip = "accelerator.clip_grad_norm_" if self._accelerate() else "torch.nn.utils.clip_grad_norm_"
        return Setting(f"{clip}(model.parameters(), max_norm=...) between backward() and optimizer.step()",
                       self.rc.gradient_clip_val)

    def lr(self) -> Setting:
        return Setting(f"torch.optim.{self._opt()}(model.parameters(), lr=...)", _num(self.optimizer_value("lr")))

    def weight_decay(self) -> Setting:
        return Setting(f"torch.optim.{self._opt()}(model.parameters(), weight_decay=...)",
                       self.optimizer_value("weight_decay"))

    def early_stopping(self, monitor: str) -> Setting:
        return Setting(f"after each evaluation: stop the epoch loop (break) once {monitor} has not improved for "
                       "... evaluations")

    def plateau_schedule(self, monitor: str) -> Setting:
        return Setting("scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=...), with "
                       f"scheduler.step({monitor}) after each evaluation")

    def milestone_schedule(self, step: int, old: float) -> Setting:
        return Setting(f"scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[{step}], gamma=...), "
                       "with scheduler.step() after every optimizer.step()")

    def ddp_timeout(self) -> Setting:
        if self._accelerate():
            return Setting("Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta("
                           "seconds=...))])", None)
        return Setting("torch.distributed.init_process_group(timeout=datetime.timedelta(seconds=...))", None)

    def load_checkpoint(self) -> Setting:
        return Setting('state = torch.load(..., weights_only=True); model.load_state_dict(state.get('
                       '"model_state_dict", state))')

    def save_best(self, monitor: str) -> Setting:
        return Setting(f"after each evaluation, when {monitor} improved: torch.save(model.state_dict(), path); "
                       f't.checkpoint(path, monitor="{monitor}", monitor_value={monitor})')
