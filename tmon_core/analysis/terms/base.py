"""What every framework's terms share: a ``Setting`` (the code to paste and the run's current value)
and ``Terms``, the generic names, read from the run config by ``RunConfig``'s field names."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...run_config import RunConfig

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


@dataclass
class CodeSetting(Setting):
    """A setting whose value is code (``torch.bfloat16``), pasted as it is rather than as a string."""

    def code(self, value: Any) -> str | None:
        if self.path is None:
            return None
        return self.path.replace("...", str(value), 1)


def first_given(value: Any, otherwise: Any) -> Any:
    """``value``, or ``otherwise`` where the config holds none."""
    return otherwise if value is None else value


def finite(v: Any) -> float | None:
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
        return Setting(
            "learning_rate=...", finite(self.optimizer_value("lr") or self.optimizer_value("learning_rate"))
        )

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


class DataLoaderTerms(Terms):
    """The input pipeline of a torch run (Lightning's or a plain loop's) is the user's own DataLoader."""

    def num_workers(self) -> Setting:
        return Setting("DataLoader(num_workers=...)", self.rc.num_workers)

    def pin_memory(self) -> Setting:
        return Setting("DataLoader(pin_memory=...)", self.rc.pin_memory)

    def persistent_workers(self) -> Setting:
        return Setting("DataLoader(persistent_workers=...)", self.rc.persistent_workers)

    def prefetch_factor(self) -> Setting:
        return Setting("DataLoader(prefetch_factor=...)", self.rc.prefetch_factor)
