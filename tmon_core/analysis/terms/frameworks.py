"""Each framework's terms: where a setting goes in Lightning, the HF ``Trainer``, Keras and a plain
PyTorch loop (``tmon_core.track``), and the run's current value as that framework's adapter stored it."""

from __future__ import annotations

from typing import Any

from .base import (
    HF,
    KERAS,
    LIGHTNING,
    PYTORCH,
    CodeSetting,
    DataLoaderTerms,
    Setting,
    Terms,
    finite,
    first_given,
    literal,
)


class LightningTerms(DataLoaderTerms):
    name = LIGHTNING

    def batch_size(self) -> Setting:
        return Setting("DataLoader(batch_size=...)", self.rc.batch_size)

    def accumulation(self) -> Setting:
        return Setting("Trainer(accumulate_grad_batches=...)", self.rc.accumulate_grad_batches or 1)

    def checkpointing(self) -> Setting:
        return Setting(
            "torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) around the large blocks "
            "in forward() (a transformers model: model.gradient_checkpointing_enable())",
            None,
        )

    def precision(self, target: str) -> Setting:
        return Setting("Trainer(precision=...)", self.rc.precision)

    def grad_clip(self) -> Setting:
        return Setting("Trainer(gradient_clip_val=...)", self.rc.gradient_clip_val)

    def lr(self) -> Setting:
        return Setting(
            f"torch.optim.{self.optimizer_class() or 'AdamW'}(params, lr=...) in configure_optimizers()",
            finite(self.optimizer_value("lr")),
        )

    def weight_decay(self) -> Setting:
        return Setting(
            f"torch.optim.{self.optimizer_class() or 'AdamW'}(params, weight_decay=...) in "
            "configure_optimizers()",
            self.optimizer_value("weight_decay"),
        )

    def early_stopping(self, monitor: str) -> Setting:
        return Setting(f'Trainer(callbacks=[EarlyStopping(monitor="{monitor}", patience=...)])')

    def plateau_schedule(self, monitor: str) -> Setting:
        return Setting(
            'configure_optimizers() returning {"optimizer": optimizer, "lr_scheduler": {"scheduler": '
            f'ReduceLROnPlateau(optimizer, factor=...), "monitor": "{monitor}"}}}}'
        )

    def milestone_schedule(self, step: int, old: float) -> Setting:
        return Setting(
            'configure_optimizers() returning {"optimizer": optimizer, "lr_scheduler": {"scheduler": '
            f'MultiStepLR(optimizer, milestones=[{step}], gamma=...), "interval": "step"}}}}'
        )

    def ddp_timeout(self) -> Setting:
        return Setting("Trainer(strategy=DDPStrategy(timeout=datetime.timedelta(seconds=...)))", None)

    def load_checkpoint(self) -> Setting:
        return Setting(f"{self.model_class()}.load_from_checkpoint(...)")

    def save_best(self, monitor: str) -> Setting:
        return Setting(
            f'Trainer(callbacks=[ModelCheckpoint(monitor="{monitor}", mode="min", save_top_k=...)])'
        )


class HFTerms(Terms):
    name = HF

    def _args(self) -> dict:
        return self.rc.training_args or {}

    def batch_size(self) -> Setting:
        return Setting(
            "TrainingArguments(per_device_train_batch_size=...)",
            first_given(self.rc.per_device_train_batch_size, self.rc.batch_size),
        )

    def accumulation(self) -> Setting:
        return Setting(
            "TrainingArguments(gradient_accumulation_steps=...)",
            self.rc.gradient_accumulation_steps or self.rc.accumulate_grad_batches or 1,
        )

    def checkpointing(self) -> Setting:
        # transformers 5 renamed gradient checkpointing to activation checkpointing
        name = (
            "activation_checkpointing"
            if "activation_checkpointing" in self._args()
            else "gradient_checkpointing"
        )
        return Setting(f"TrainingArguments({name}=...)", bool(self.rc.gradient_checkpointing))

    def precision(self, target: str) -> Setting:
        bf16 = target.startswith("bf16")
        return Setting(
            f"TrainingArguments({'bf16' if bf16 else 'fp16'}=...)",
            bool(self.rc.bf16 if bf16 else self.rc.fp16),
        )

    def precision_value(self, target: str) -> Any:
        return True

    def num_workers(self) -> Setting:
        return Setting(
            "TrainingArguments(dataloader_num_workers=...)",
            first_given(self.rc.dataloader_num_workers, self.rc.num_workers),
        )

    def pin_memory(self) -> Setting:
        return Setting(
            "TrainingArguments(dataloader_pin_memory=...)",
            self._args().get("dataloader_pin_memory", self.rc.pin_memory),
        )

    def persistent_workers(self) -> Setting:
        return Setting(
            "TrainingArguments(dataloader_persistent_workers=...)",
            self._args().get("dataloader_persistent_workers", self.rc.persistent_workers),
        )

    def prefetch_factor(self) -> Setting:
        return Setting(
            "TrainingArguments(dataloader_prefetch_factor=...)",
            self._args().get("dataloader_prefetch_factor", self.rc.prefetch_factor),
        )

    def grad_clip(self) -> Setting:
        return Setting("TrainingArguments(max_grad_norm=...)", self.rc.max_grad_norm)

    def lr(self) -> Setting:
        return Setting(
            "TrainingArguments(learning_rate=...)",
            finite(self._args().get("learning_rate", self.optimizer_value("lr"))),
        )

    def weight_decay(self) -> Setting:
        return Setting(
            "TrainingArguments(weight_decay=...)",
            self._args().get("weight_decay", self.optimizer_value("weight_decay")),
        )

    def early_stopping(self, monitor: str) -> Setting:
        return Setting(
            "Trainer(callbacks=[EarlyStoppingCallback(early_stopping_patience=...)]) with "
            f'TrainingArguments(load_best_model_at_end=True, metric_for_best_model="{monitor}")'
        )

    def plateau_schedule(self, monitor: str) -> Setting:
        return Setting(
            'TrainingArguments(lr_scheduler_type="reduce_lr_on_plateau", lr_scheduler_kwargs={"factor": ...})'
        )

    def milestone_schedule(self, step: int, old: float) -> Setting:
        return Setting(
            "Trainer(optimizers=(optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, "
            f"milestones=[{step}], gamma=...)))"
        )

    def ddp_timeout(self) -> Setting:
        return Setting("TrainingArguments(ddp_timeout=...)", self._args().get("ddp_timeout"))

    def load_checkpoint(self) -> Setting:
        return Setting(f"{self.model_class()}.from_pretrained(...)")

    def save_best(self, monitor: str) -> Setting:
        return Setting(
            f'TrainingArguments(load_best_model_at_end=..., metric_for_best_model="{monitor}")',
            self._args().get("load_best_model_at_end"),
        )


class KerasTerms(Terms):
    name = KERAS

    def _opt(self) -> str:
        return self.optimizer_class() or "Adam"

    def batch_size(self) -> Setting:
        return Setting("model.fit(batch_size=...)", self.rc.batch_size)

    def accumulation(self) -> Setting:
        return Setting(
            f"keras.optimizers.{self._opt()}(gradient_accumulation_steps=...)",
            self.rc.accumulate_grad_batches or 1,
        )

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
        return Setting(
            f"keras.optimizers.{self._opt()}(learning_rate=...)",
            finite(self.optimizer_value("learning_rate")),
        )

    def weight_decay(self) -> Setting:
        return Setting(
            f"keras.optimizers.{self._opt()}(weight_decay=...)", self.optimizer_value("weight_decay")
        )

    def early_stopping(self, monitor: str) -> Setting:
        return Setting(
            f'model.fit(callbacks=[keras.callbacks.EarlyStopping(monitor="{monitor}", patience=..., '
            "restore_best_weights=True)])"
        )

    def plateau_schedule(self, monitor: str) -> Setting:
        return Setting(
            f'model.fit(callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="{monitor}", factor=...)])'
        )

    def milestone_schedule(self, step: int, old: float) -> Setting:
        return Setting(
            f"keras.optimizers.schedules.PiecewiseConstantDecay(boundaries=[{step}], "
            f"values=[{literal(old)}, ...])"
        )

    def load_checkpoint(self) -> Setting:
        return Setting("model.load_weights(...)")

    def save_best(self, monitor: str) -> Setting:
        return Setting(
            f'model.fit(callbacks=[keras.callbacks.ModelCheckpoint(filepath, monitor="{monitor}", '
            "save_best_only=...)])"
        )


class PyTorchTerms(DataLoaderTerms):
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
            return Setting(
                "Accelerator(gradient_accumulation_steps=...) with the step under "
                "`with accelerator.accumulate(model):`",
                current,
            )
        return Setting(
            "optimizer.step() and optimizer.zero_grad() once every ... batches, each batch's loss "
            "divided by that number before backward()",
            current,
        )

    def checkpointing(self) -> Setting:
        return Setting(
            "torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) around the large blocks "
            "in forward() (a transformers model: model.gradient_checkpointing_enable())",
            None,
        )

    def precision(self, target: str) -> Setting:
        if self._accelerate():
            return Setting("Accelerator(mixed_precision=...)", self.rc.mixed_precision)
        path = 'with torch.autocast(device_type="cuda", dtype=...): around the forward pass and the loss'
        if not target.startswith("bf16"):
            path += ', with scaler = torch.amp.GradScaler("cuda"): scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()'
        return CodeSetting(path, self.rc.precision)

    def precision_value(self, target: str) -> Any:
        if self._accelerate():
            return "bf16" if target.startswith("bf16") else "fp16"
        return "torch.bfloat16" if target.startswith("bf16") else "torch.float16"

    def grad_clip(self) -> Setting:
        clip = "accelerator.clip_grad_norm_" if self._accelerate() else "torch.nn.utils.clip_grad_norm_"
        return Setting(
            f"{clip}(model.parameters(), max_norm=...) between backward() and optimizer.step()",
            self.rc.gradient_clip_val,
        )

    def lr(self) -> Setting:
        return Setting(
            f"torch.optim.{self._opt()}(model.parameters(), lr=...)", finite(self.optimizer_value("lr"))
        )

    def weight_decay(self) -> Setting:
        return Setting(
            f"torch.optim.{self._opt()}(model.parameters(), weight_decay=...)",
            self.optimizer_value("weight_decay"),
        )

    def early_stopping(self, monitor: str) -> Setting:
        return Setting(
            f"after each evaluation: stop the epoch loop (break) once {monitor} has not improved for "
            "... evaluations"
        )

    def plateau_schedule(self, monitor: str) -> Setting:
        return Setting(
            "scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=...), with "
            f"scheduler.step({monitor}) after each evaluation"
        )

    def milestone_schedule(self, step: int, old: float) -> Setting:
        return Setting(
            f"scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[{step}], gamma=...), "
            "with scheduler.step() after every optimizer.step()"
        )

    def ddp_timeout(self) -> Setting:
        if self._accelerate():
            return Setting(
                "Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta("
                "seconds=...))])",
                None,
            )
        return Setting("torch.distributed.init_process_group(timeout=datetime.timedelta(seconds=...))", None)

    def load_checkpoint(self) -> Setting:
        return Setting(
            "state = torch.load(..., weights_only=True); model.load_state_dict(state.get("
            '"model_state_dict", state))'
        )

    def save_best(self, monitor: str) -> Setting:
        return Setting(
            f"after each evaluation, when {monitor} improved: torch.save(model.state_dict(), path); "
            f't.checkpoint(path, monitor="{monitor}", monitor_value={monitor})'
        )
