"""What the Keras adapter (``keras.py``, the hooks) reads from and does to Keras: for control, reading
and changing an optimizer's hyperparameters and rolling a model back to a saved checkpoint; for
recording, the optimizer's lr/momentum readers, the run's config and why a fit ended (at the end).
Backend-neutral Keras only (``keras.ops``), no torch code; Keras internals only through
``_workarounds.keras``.

Parameters and the optimizer attributes they change:

=================  ==========================================================================
``lr``             ``learning_rate``: a variable is assigned. A ``LearningRateSchedule`` is
                   replaced by a ``ScaledSchedule`` around it (see below).
``weight_decay``   ``weight_decay`` (every Keras optimizer has it; None means 0: off)
``momentum``       ``momentum`` (SGD, RMSprop) or ``beta_1`` (Adam family); an optimizer built
                   with ``momentum=0`` has no momentum buffers: turning it on is rejected
``betas``          ``(beta_1, beta_2)``
``eps``            ``epsilon``
=================  ==========================================================================

Keras optimizers have one param group: ``lr@0`` is ``lr``; ``lr@1`` is rejected.

Modes with a ``LearningRateSchedule`` (the same semantics as a torch scheduler's bases):

- ``scale`` (default): the schedule is multiplied from now on by ``new / current``, so its shape
  continues from the new level (``ScaledSchedule(schedule, factor)``). Rejected when the schedule
  is at 0 (nothing to scale).
- ``set``: the value for the step about to run only; the schedule takes over again at the next
  step, as a torch scheduler overwrites a one-off write.
- ``pin``: ``set`` again before every step (the controller re-sends it): the value holds.

A plain ``float`` learning rate lives in a variable no schedule moves, so there all three modes
assign it (``pin`` also holds it against callbacks such as ``ReduceLROnPlateau``). Hyperparameters
that are Python numbers (``momentum``, ``beta_1``, ``epsilon``, ``weight_decay``) are read at every
step by eager backends (torch, tested); a compiled train function (TensorFlow, JAX) reads them when
it is traced, and so does a replaced schedule: steering those backends is not tested.
"""

from __future__ import annotations

import glob
import math
import os
import re
import warnings
from typing import Any

import keras
from keras import ops

from tmon_core import events as ev
from tmon_core.jsonable import json_safe
from tmon_core.run_config import RunConfig

from ._adapter import Rejected
from ._workarounds.keras import has_momentum_buffers, learning_rate_object, resolved_mode, skipped_on_load

Schedule = keras.optimizers.schedules.LearningRateSchedule
_PLAIN = (float, int)
_ATTRS = {"eps": "epsilon", "weight_decay": "weight_decay"}


@keras.saving.register_keras_serializable(package="tmon")
class ScaledSchedule(Schedule):
    """``schedule(step) * factor``, except ``value`` at ``at_step`` (a one-step ``set``).

    Immutable: every change makes a new one around the original schedule, so a value recorded
    lazily for an earlier step is never computed with a later factor. A model saved mid-fit holds
    it (``tmon>ScaledSchedule``); loading that model needs ``import tmon_callbacks.keras``.
    """

    def __init__(self, schedule, factor: float = 1.0, at_step: int | None = None, value: float | None = None):
        super().__init__()
        self.schedule, self.factor, self.at_step, self.value = schedule, float(factor), at_step, value

    def __call__(self, step):
        lr = ops.convert_to_tensor(self.schedule(step))
        if self.factor != 1.0:
            lr = ops.multiply(lr, ops.cast(self.factor, lr.dtype))
        if self.at_step is not None:
            lr = ops.where(ops.equal(ops.cast(step, "int64"), self.at_step), ops.cast(self.value, lr.dtype), lr)
        return lr

    def get_config(self) -> dict:
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "factor": self.factor,
                "at_step": self.at_step, "value": self.value}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def _number(v) -> float:
    return float(ops.convert_to_numpy(v))


def _iterations(opt) -> int:
    return int(ops.convert_to_numpy(opt.iterations))


def _slot(opt, name: str):
    """The attribute (or pair of attributes) holding ``name``; raises Rejected when there is none."""
    cls = type(opt).__name__
    if name == "momentum":
        for attr in ("momentum", "beta_1"):
            if type(getattr(opt, attr, None)) in _PLAIN:
                return attr
        raise Rejected(f"{cls} has no 'momentum' (neither momentum nor beta_1)")
    if name == "betas":
        if all(type(getattr(opt, a, None)) in _PLAIN for a in ("beta_1", "beta_2")):
            return ("beta_1", "beta_2")
        raise Rejected(f"{cls} has no 'betas' (beta_1, beta_2)")
    attr = _ATTRS.get(name)
    if attr is None or not hasattr(opt, attr):
        raise Rejected(f"{cls} has no {name!r}")
    current = getattr(opt, attr)
    if current is not None and type(current) not in _PLAIN:
        raise Rejected(f"{cls}.{attr} is a {type(current).__name__}, not a number tmon can set")
    return attr


def _check_group(group) -> None:
    if group not in (None, 0):
        raise Rejected(f"param group {group} does not exist: a Keras optimizer has one (group 0)")


def read_param(opt, name: str, group=None):
    """Current value of ``name``; raises Rejected when ``opt`` has no such parameter."""
    _check_group(group)
    if name == "lr":
        return _number(opt.learning_rate)
    slot = _slot(opt, name)
    if isinstance(slot, tuple):
        return [float(getattr(opt, a)) for a in slot]
    v = getattr(opt, slot)
    return 0.0 if v is None else float(v)


def _lr_plan(opt, value: float, mode: str):
    """What setting lr to ``value`` will assign: a float for a variable, a new schedule otherwise."""
    current = learning_rate_object(opt)
    if isinstance(current, Schedule):
        base, factor = (current.schedule, current.factor) if isinstance(current, ScaledSchedule) else (current, 1.0)
        if mode == "scale":  # the schedule's own level now (a one-step set does not count)
            now = _number(base(opt.iterations)) * factor
            if not (now > 0 and math.isfinite(now)):
                raise Rejected(f"the learning-rate schedule is at {now:g} at this step: scale mode has nothing to "
                               f"multiply; use mode='set' or 'pin'")
            return ScaledSchedule(base, factor * value / now)
        return ScaledSchedule(base, factor, at_step=_iterations(opt), value=value)
    if callable(current) and not hasattr(current, "assign"):
        raise Rejected(f"{type(opt).__name__}.learning_rate is a plain callable ({type(current).__name__}): tmon can "
                       f"steer a float learning rate or a LearningRateSchedule")
    return value


def _no_momentum_buffers(opt) -> bool:
    """SGD and RMSprop create momentum variables at build time only when momentum != 0."""
    if not getattr(opt, "built", False):
        return False  # built later, from the momentum in effect then
    return not has_momentum_buffers(opt)


def apply_changes(opt, changes, mode: str) -> tuple[dict, dict]:
    """Apply ``changes`` (tmon_core.control.Change) to ``opt`` all or nothing; (old, new) by name.
    Raises Rejected (nothing touched) when one cannot apply."""
    plan = []
    for c in changes:
        key = c.name if c.group is None else f"{c.name}@{c.group}"
        if c.custom is not None:
            plan.append((key, c, None, None))
            continue
        _check_group(c.group)
        if c.name == "lr":
            plan.append((key, c, "lr", _lr_plan(opt, c.value, mode)))
            continue
        slot = _slot(opt, c.name)
        if slot == "momentum" and c.value != 0 and _no_momentum_buffers(opt):
            raise Rejected(f"{type(opt).__name__} was built with momentum=0 and has no momentum buffers: momentum "
                           f"cannot be turned on during a fit")
        plan.append((key, c, slot, c.value))
    old, new = {}, {}
    for key, c, slot, target in plan:
        if slot is None:
            old[key] = c.custom.get()
            c.custom.set(c.value)
            new[key] = c.custom.get()
            continue
        old[key] = read_param(opt, c.name)
        if slot == "lr":
            opt.learning_rate = target  # assigns the variable, or replaces the schedule
        elif isinstance(slot, tuple):
            for attr, v in zip(slot, target, strict=True):
                setattr(opt, attr, float(v))
        else:
            setattr(opt, slot, float(target))
        new[key] = read_param(opt, c.name)
    return old, new


def load_weights(model, path: str) -> None:
    """Roll ``model`` back to the weights (and optimizer state) of a Keras checkpoint, all or nothing.

    Keras' own loader (``model.load_weights``: ``.keras``, ``.weights.h5``) reads arrays only,
    never code. The optimizer's iteration count and learning-rate variable keep their current
    values: the step counter and any schedule go on, and a rollback returns to the checkpoint's
    weights, not to its hyperparameters. When loading fails or Keras skips part of the file
    (it warns instead of raising for a mismatched optimizer), everything is put back as it was.
    """
    if not os.path.exists(path):
        raise Rejected(f"checkpoint file {path} does not exist")
    opt = getattr(model, "optimizer", None)
    opt = getattr(opt, "inner_optimizer", opt)
    keep = []  # the optimizer's counters and lr variable, restored after the load
    if opt is not None:
        keep.append(opt.iterations)
        lr = learning_rate_object(opt)
        if hasattr(lr, "assign"):
            keep.append(lr)
    seen, snapshot = set(), []
    for v in list(model.variables) + (list(opt.variables) if opt is not None else []):
        if id(v) not in seen:
            seen.add(id(v))
            snapshot.append((v, ops.copy(v.value)))
    kept = [(v, ops.copy(v.value)) for v in keep]
    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as exc:
            problem = f"cannot load checkpoint {path}: {type(exc).__name__}: {str(exc)[:300]}"
    skipped = [str(w.message) for w in caught if skipped_on_load(str(w.message))]
    if problem is None and skipped:
        problem = f"checkpoint {path} does not fit this model: {skipped[0][:300]}"
    for w in caught:  # the user's other warnings still reach them
        if not skipped_on_load(str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if problem is not None:
        for v, value in snapshot:
            v.assign(value)
        raise Rejected(problem)
    for v, value in kept:
        v.assign(value)


# ---------------------------------------------------------------------------- what the hooks read
# (moved from keras.py: the adapter keeps the hooks, these say what a hook reads from Keras)

# callbacks Keras adds to every fit by itself (not listed in config["callbacks"])
_KERAS_DEFAULTS = ("History", "ProgbarLogger")
_PRECISION = {"float32": "32-true", "mixed_float16": "16-mixed", "mixed_bfloat16": "bf16-mixed",
              "float16": "16-true", "bfloat16": "bf16-true", "float64": "64-true"}


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
        return _iterations(opts[0]) if opts else 0
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


def lr_reader(opt):
    """A function returning the learning rate ``opt`` applies at its next step, without a device sync."""
    schedule = learning_rate_object(opt)
    copy = ops.copy
    if isinstance(schedule, Schedule):
        return lambda: ScheduledLR(schedule, copy(opt.iterations))
    # a variable (a float lr, changed by ReduceLROnPlateau, LearningRateScheduler...) or a callable:
    # a copy, so a later assignment does not rewrite what this step recorded
    return lambda: copy(opt.learning_rate)


def momentum_attr(opt) -> str | None:
    """The attribute holding ``opt``'s momentum (``momentum``, or Adam's ``beta_1``), None without one."""
    return next((a for a in ("momentum", "beta_1") if type(getattr(opt, a, None)) in _PLAIN), None)


def checkpoint_glob(filepath: str) -> str:
    """``ckpt/m-{epoch:02d}-{val_loss:.2f}.keras`` → ``ckpt/m-*-*.keras``, literal parts escaped."""
    parts = re.split(r"\{[^{}]*\}", filepath)
    return os.path.abspath("*".join(glob.escape(p) for p in parts))


def manual_dir(checkpoints) -> str:
    """Where a checkpoint tmon saves on request goes: the directory of the fit's first
    ``ModelCheckpoint`` (when it has no placeholders), else ./tmon-checkpoints."""
    for cb in checkpoints:
        path = cb.filepath
        if isinstance(path, str) and "://" not in path and "{" not in os.path.dirname(path):
            return os.path.dirname(os.path.abspath(path))
    return os.path.abspath("tmon-checkpoints")


def callback_entry(cb) -> dict:
    """One ``config["callbacks"]`` item: the callback's class and the settings advice reads."""
    entry: dict[str, Any] = {"name": type(cb).__name__}
    names: tuple = ()
    if isinstance(cb, keras.callbacks.EarlyStopping):
        names = ("monitor", "mode", "patience", "min_delta", "baseline", "restore_best_weights", "start_from_epoch")
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


def fit_config(model, params: dict | None, callbacks: list, batch_size: int | None, control: dict | None) -> dict:
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
        callbacks=[callback_entry(c) for c in callbacks if type(c).__name__ not in _KERAS_DEFAULTS],  # CONFIG_CALLBACKS
    )
    try:
        cfg.num_parameters = model.count_params()
        cfg.trainable_parameters = sum(math.prod(w.shape) for w in model.trainable_weights)
    except ValueError:  # not built yet
        pass
    return cfg.as_dict()


def end_reason(model, params: dict | None, callbacks: list, *, last_epoch: int | None, epoch_steps: int,
               stop_requested: bool) -> dict:
    """``train_end``'s data: why the fit ended. A fit that ran all its epochs (the last one whole)
    ended by its length, whatever else asked to stop at that last epoch."""
    params = params or {}
    epochs, steps = params.get("epochs"), params.get("steps")
    if last_epoch is not None and last_epoch + 1 == epochs and (not isinstance(steps, int) or epoch_steps >= steps):
        return {"reason": ev.END_MAX_EPOCHS, "epochs": epochs}
    if stop_requested:
        return {"reason": ev.END_STOP_REQUEST}
    stopper = next((c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping) and c.stopped_epoch > 0),
                   None)
    if stopper is not None:
        settings = {k: v for k, v in callback_entry(stopper).items() if k != "name"}
        return {"reason": ev.END_EARLY_STOPPING, "callback": type(stopper).__name__, **settings,
                "mode": resolved_mode(stopper), "stopped_epoch": stopper.stopped_epoch,
                "best_epoch": getattr(stopper, "best_epoch", None)}
    if getattr(model, "stop_training", False):  # another callback (TerminateOnNaN...) or the user
        return {"reason": ev.END_SHOULD_STOP}
    # every epoch ran, the last short of steps_per_epoch: Keras warned that the input ran out of data
    return {"reason": ev.END_DATA_EXHAUSTED, "steps_per_epoch": steps, "last_epoch_steps": epoch_steps}
