"""What the Keras adapter's hooks read from a fit and record: the optimizers' lr, momentum and weight
decay at each batch, the run's config, the files ``ModelCheckpoint`` writes, why the fit ended.

``keras.py`` decides *when* (its hooks); this module says *what*. Keras internals only through
``_workarounds.keras``.
"""

from __future__ import annotations

import glob
import math
import os
import re
from typing import Any

import keras
from keras import ops

from tmon_core import events as ev
from tmon_core.jsonable import json_safe
from tmon_core.keys import LR, MOMENTUM, WEIGHT_DECAY, group_key
from tmon_core.run_config import RunConfig

from ._adapter import CheckpointWatcher
from ._workarounds.keras import learning_rate_object, live_value, resolved_mode

_PLAIN = (float, int)
# callbacks Keras adds to every fit by itself (not listed in config["callbacks"])
_KERAS_DEFAULTS = ("History", "ProgbarLogger")
_PRECISION = {
    "float32": "32-true",
    "mixed_float16": "16-mixed",
    "mixed_bfloat16": "bf16-mixed",
    "float16": "16-true",
    "bfloat16": "bf16-true",
    "float64": "64-true",
}


# ---------------------------------------------------------------------------- the optimizers
def optimizers(model) -> list:
    """The optimizers that step ``model`` (the real one inside a ``LossScaleOptimizer``); [] before compile."""
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return []
    opt = getattr(opt, "inner_optimizer", opt)  # LossScaleOptimizer (mixed precision) wraps the real one
    return list(getattr(opt, "optimizers", None) or [opt])


def iterations(model) -> int:
    """The optimizer's iteration count (0 for a new model): tmon's step counter starts there."""
    opts = optimizers(model)
    try:
        return int(ops.convert_to_numpy(opts[0].iterations)) if opts else 0
    except Exception:
        return 0


class ScheduledLR:
    """The value of a ``LearningRateSchedule`` at a step, computed only when the writer thread asks.

    Evaluating a schedule costs ~40 µs of backend ops; a schedule is a pure function of the step,
    so the hot path keeps the schedule and a copy of the iteration count, nothing else.
    """

    __slots__ = ("schedule", "step")

    def __init__(self, schedule, step):
        self.schedule = schedule
        self.step = step

    def __float__(self) -> float:
        try:
            return float(ops.convert_to_numpy(self.schedule(self.step)))
        except Exception:  # never let a user schedule break the writer: the point reads NaN
            return math.nan


def lr_reader(opt, model=None):
    """A function returning the learning rate ``opt`` applies at its next step, without a device sync.

    With ``model`` (the model ``opt`` trains), variables are read as the next step will see them
    (``_workarounds.keras.live_value``: on JAX, from the fit's state while Keras holds the variables
    empty)."""
    lr = learning_rate_object(opt)
    copy = ops.copy
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        iterations = live_value(model, opt.iterations) if model is not None else lambda: opt.iterations
        return lambda: ScheduledLR(lr, copy(iterations()))
    if hasattr(lr, "assign"):
        # a variable (a float lr, changed by ReduceLROnPlateau, LearningRateScheduler...): a copy, so
        # a later assignment does not rewrite what this step recorded
        value = live_value(model, lr) if model is not None else lambda: lr.value
        return lambda: copy(value())
    return lambda: copy(opt.learning_rate)  # a plain callable


class OptimizerValues:
    """``lr``, ``momentum`` (SGD momentum or beta_1) and ``weight_decay`` of each optimizer, read at a
    batch's start (the values that batch's step uses). Made again when the lr object may have
    changed (a callback or tmon swapped a schedule in)."""

    __slots__ = ("_readers",)

    def __init__(self, opts=(), model=None):
        self._readers = []
        for oi, opt in enumerate(opts):
            mom_attr = next(
                (a for a in ("momentum", "beta_1") if type(getattr(opt, a, None)) in _PLAIN), None
            )
            self._readers.append(
                (
                    opt,
                    group_key(LR, oi, 0),
                    lr_reader(opt, model),
                    mom_attr,
                    group_key(MOMENTUM, oi, 0),
                    group_key(WEIGHT_DECAY, oi, 0),
                )
            )

    def lrs(self) -> list[float]:
        """Each optimizer's learning rate now, as floats (a device sync: for the guard, not per step)."""
        out = []
        for _opt, _key, read_lr, *_ in self._readers:
            v = read_lr()
            out.append(float(v) if isinstance(v, ScheduledLR) else float(ops.convert_to_numpy(v)))
        return out

    def read(self) -> dict:
        values = {}
        for opt, lr_key, read_lr, mom_attr, mom_key, wd_key in self._readers:
            values[lr_key] = read_lr()
            if mom_attr is not None:
                values[mom_key] = getattr(opt, mom_attr)
            wd = getattr(opt, "weight_decay", None)
            if type(wd) in _PLAIN:
                values[wd_key] = wd
        return values


# ---------------------------------------------------------------------------- ModelCheckpoint's files
def checkpoint_glob(filepath: str) -> str:
    """``ckpt/m-{epoch:02d}-{val_loss:.2f}.keras`` → ``ckpt/m-*-*.keras``, literal parts escaped."""
    parts = re.split(r"\{[^{}]*\}", filepath)
    return os.path.abspath("*".join(glob.escape(p) for p in parts))


class ModelCheckpointFiles:
    """The files the fit's ``ModelCheckpoint`` callbacks write (or rewrite), found by each one's own
    file pattern and recorded as ``checkpoint`` rows with the value it monitored.

    ``context`` is the (step, epoch, logs) the next files found are recorded with; the hooks set it.
    Files already there when the fit starts belong to earlier runs and are not recorded.
    """

    def __init__(self, recorder=None, callbacks=()):
        self.recorder = recorder
        self.callbacks = [c for c in callbacks if isinstance(c, keras.callbacks.ModelCheckpoint)]
        self._watched = [c for c in self.callbacks if isinstance(c.filepath, str) and "://" not in c.filepath]
        self._watcher = CheckpointWatcher([checkpoint_glob(c.filepath) for c in self._watched])
        freqs = [c.save_freq for c in self.callbacks if isinstance(c.save_freq, int)]
        self.every = min(freqs) if freqs else 0  # the smallest save_freq in batches; 0: saved per epoch
        self.context: tuple = (0, 0, {})
        self.scan(record=False)  # files from earlier runs are not this run's

    def scan(self, record: bool = True) -> None:
        """Record the files written or rewritten since the last scan (removals are not recorded)."""
        if self.recorder is None or not self._watched:
            return
        new, _removed = self._watcher.scan()
        if not record:
            return
        step, epoch, logs = self.context
        for path in new:
            cb = self._watched[self._watcher.origin(path)]
            value = logs.get(cb.monitor)
            self.recorder.checkpoint(
                path,
                step=step,
                epoch=epoch,
                monitor=cb.monitor,
                monitor_value=value if type(value) in _PLAIN else None,
                source="ModelCheckpoint",
            )

    def known(self, path: str) -> None:
        """A file tmon saved itself: never recorded as a ModelCheckpoint file, whatever its pattern."""
        self._watcher.known(path)

    def manual_dir(self) -> str:
        """Where a checkpoint tmon saves on request goes: the directory of the fit's first
        ``ModelCheckpoint`` (when it has no placeholders), else ./tmon-checkpoints."""
        for cb in self.callbacks:
            path = cb.filepath
            if isinstance(path, str) and "://" not in path and "{" not in os.path.dirname(path):
                return os.path.dirname(os.path.abspath(path))
        return os.path.abspath("tmon-checkpoints")


# ---------------------------------------------------------------------------- the run's config, the end
def callback_entry(cb) -> dict:
    """One ``config["callbacks"]`` item: the callback's class and the settings advice reads."""
    entry: dict[str, Any] = {"name": type(cb).__name__}
    names: tuple = ()
    if isinstance(cb, keras.callbacks.EarlyStopping):
        names = (
            "monitor",
            "mode",
            "patience",
            "min_delta",
            "baseline",
            "restore_best_weights",
            "start_from_epoch",
        )
    elif isinstance(cb, keras.callbacks.ModelCheckpoint):
        names = ("monitor", "mode", "save_best_only", "save_weights_only", "save_freq", "filepath")
    elif isinstance(cb, keras.callbacks.ReduceLROnPlateau):
        names = ("monitor", "mode", "factor", "patience", "min_delta", "cooldown", "min_lr")
    for name in names:
        value = getattr(cb, name, None)
        if name == "min_delta" and isinstance(value, _PLAIN):
            value = abs(value)  # Keras negates it once it knows the monitored value must fall
        entry[name] = value if value is None or type(value) in (bool, int, float, str) else json_safe(value)
    return entry


def fit_config(
    model, params: dict | None, callbacks: list, batch_size: int | None, control: dict | None
) -> dict:
    """The run's config at the start of a fit. ``callbacks``: the fit's callbacks but tmon's own."""
    params = params or {}
    policy = getattr(getattr(model, "dtype_policy", None), "name", None)
    opt = getattr(model, "optimizer", None)
    opts = optimizers(model)
    cfg = RunConfig(
        framework="keras",
        framework_version=keras.__version__,
        backend=keras.backend.backend(),
        batch_size=batch_size,
        epochs=params.get("epochs"),
        batches_per_epoch=params.get("steps"),
        dtype_policy=policy,
        precision=_PRECISION.get(policy, policy),
        loss_scaling=opt is not None and hasattr(opt, "inner_optimizer"),
        accumulate_grad_batches=(getattr(opts[0], "gradient_accumulation_steps", None) or 1) if opts else 1,
        jit_compile=getattr(model, "jit_compile", None),
        steps_per_execution=getattr(model, "steps_per_execution", None),
        run_eagerly=getattr(model, "run_eagerly", None),
        world_size=1,
        optimizers=[{"class": type(o).__name__, "config": json_safe(o.get_config())} for o in opts],
        loss=json_safe(getattr(model, "loss", None)),
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        control=control,
        callbacks=[
            callback_entry(c) for c in callbacks if type(c).__name__ not in _KERAS_DEFAULTS
        ],  # CONFIG_CALLBACKS
    )
    try:
        cfg.num_parameters = model.count_params()
        cfg.trainable_parameters = sum(math.prod(w.shape) for w in model.trainable_weights)
    except ValueError:  # not built yet
        pass
    return cfg.as_dict()


def end_reason(
    model,
    params: dict | None,
    callbacks: list,
    *,
    last_epoch: int | None,
    epoch_steps: int,
    stop_requested: bool,
) -> dict:
    """``train_end``'s data: why the fit ended. A fit that ran all its epochs (the last one whole)
    ended by its length, whatever else asked to stop at that last epoch."""
    params = params or {}
    epochs, steps = params.get("epochs"), params.get("steps")
    if (
        last_epoch is not None
        and last_epoch + 1 == epochs
        and (not isinstance(steps, int) or epoch_steps >= steps)
    ):
        return {"reason": ev.END_MAX_EPOCHS, "epochs": epochs}
    if stop_requested:
        return {"reason": ev.END_STOP_REQUEST}
    stopper = next(
        (c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping) and c.stopped_epoch > 0), None
    )
    if stopper is not None:
        settings = {k: v for k, v in callback_entry(stopper).items() if k != "name"}
        return {
            "reason": ev.END_EARLY_STOPPING,
            "callback": type(stopper).__name__,
            **settings,
            "mode": resolved_mode(stopper),
            "stopped_epoch": stopper.stopped_epoch,
            "best_epoch": getattr(stopper, "best_epoch", None),
        }
    if getattr(model, "stop_training", False):  # another callback (TerminateOnNaN...) or the user
        return {"reason": ev.END_SHOULD_STOP}
    # every epoch ran, the last short of steps_per_epoch: Keras warned that the input ran out of data
    return {"reason": ev.END_DATA_EXHAUSTED, "steps_per_epoch": steps, "last_epoch_steps": epoch_steps}
