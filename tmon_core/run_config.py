"""The run's config: the names the adapters store it under and the analysis reads it by.

Every adapter describes the fit it records (framework, precision, batch size, optimizers, the
callbacks in use...) in the run's ``config`` JSON. ``RunConfig``'s field names *are* those keys:
an adapter passes ``RunConfig(...).as_dict()`` as the config, and ``analysis.terms`` reads
``RunConfig.read(config).<field>``, so a key written by one side and read by the other is one
name, checked where it is spelled.

Each framework fills the fields it has; a field left out is not stored at all (not stored as
null: a stored ``None`` says "the framework has this setting and it is unset").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: the default of every field: not stored by ``as_dict()``
UNSET: Any = _Unset()


@dataclass
class RunConfig:
    # ------------------------------------------------------------ every framework
    framework: str = UNSET  # "lightning.pytorch", "pytorch_lightning", "transformers", "keras", "pytorch"
    framework_version: str | None = UNSET
    precision: str | None = UNSET  # Lightning's vocabulary: "32-true", "16-mixed", "bf16-mixed", ...
    accumulate_grad_batches: int | None = UNSET  # micro-batches per optimizer step
    world_size: int | None = UNSET
    optimizers: list | None = UNSET  # [{"class", "defaults" | "config", ...}] per optimizer
    lr_schedulers: list | None = UNSET
    control: dict | None = UNSET  # the controller's describe()
    callbacks: list | None = UNSET  # events.CONFIG_CALLBACKS: [{"name", settings...}] of the fit's callbacks
    hparams: dict | None = UNSET  # the user's own settings (Lightning hparams, track(config=...))
    # ------------------------------------------------------------ the model (_torch.model_summary, Keras)
    model_class: str | None = UNSET
    num_parameters: int | None = UNSET
    trainable_parameters: int | None = UNSET
    param_dtypes: list | None = UNSET
    # ------------------------------------------------------------ the data (_torch.dataloader_config, Keras)
    batch_size: int | None = UNSET
    num_workers: int | None = UNSET
    pin_memory: bool | None = UNSET
    persistent_workers: bool | None = UNSET
    prefetch_factor: int | None = UNSET
    drop_last: bool | None = UNSET
    batches_per_epoch: int | None = UNSET
    # ------------------------------------------------------------ the loop
    max_epochs: int | None = UNSET
    max_steps: int | None = UNSET
    gradient_clip_val: float | None = UNSET
    gradient_checkpointing: bool | None = UNSET
    accelerator: str | None = UNSET
    # ------------------------------------------------------------ Lightning
    log_every_n_steps: int | None = UNSET
    num_devices: int | None = UNSET
    num_nodes: int | None = UNSET
    strategy: str | None = UNSET
    datamodule_hparams: dict | None = UNSET
    # ------------------------------------------------------------ Hugging Face (under HF's names)
    per_device_train_batch_size: int | None = UNSET
    train_batch_size: int | None = UNSET
    gradient_accumulation_steps: int | None = UNSET
    bf16: bool | None = UNSET
    fp16: bool | None = UNSET
    dataloader_num_workers: int | None = UNSET
    num_train_epochs: float | None = UNSET
    logging_steps: float | None = UNSET
    max_grad_norm: float | None = UNSET
    training_args: dict | None = UNSET
    model_config: dict | None = UNSET
    # ------------------------------------------------------------ Keras
    backend: str | None = UNSET
    epochs: int | None = UNSET
    dtype_policy: str | None = UNSET
    loss_scaling: bool | None = UNSET
    jit_compile: Any = UNSET
    steps_per_execution: int | None = UNSET
    run_eagerly: bool | None = UNSET
    loss: Any = UNSET
    # ------------------------------------------------------------ a plain torch loop (tmon_core.track)
    checkpoint_dir: str | None = UNSET
    device: str | None = UNSET
    launcher: str | None = UNSET  # "accelerate" under 🤗 Accelerate
    mixed_precision: str | None = UNSET  # Accelerate's: "no", "fp16", "bf16"
    num_processes: int | None = UNSET

    def as_dict(self) -> dict[str, Any]:
        """The config to store: the fields that were given, in field order."""
        return {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not UNSET}

    @classmethod
    def read(cls, config: dict | None) -> RunConfig:
        """A stored config for reading: a key it lacks (or one this tmon does not know) reads None."""
        config = config or {}
        return cls(**{f.name: config.get(f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def keys(cls) -> frozenset[str]:
        """Every key a run config may hold."""
        return frozenset(f.name for f in dataclasses.fields(cls))


__all__ = ["UNSET", "RunConfig"]
