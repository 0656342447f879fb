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

from ...run_config import RunConfig
from .base import GENERIC, HF, KERAS, LIGHTNING, PYTORCH, Setting, Terms, literal
from .frameworks import HFTerms, KerasTerms, LightningTerms, PyTorchTerms


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
    return {LIGHTNING: LightningTerms, HF: HFTerms, KERAS: KerasTerms, PYTORCH: PyTorchTerms}.get(
        framework, Terms
    )(config)


__all__ = [
    "GENERIC",
    "HF",
    "KERAS",
    "LIGHTNING",
    "PYTORCH",
    "HFTerms",
    "KerasTerms",
    "LightningTerms",
    "PyTorchTerms",
    "Setting",
    "Terms",
    "framework_of",
    "literal",
    "terms_for",
]
