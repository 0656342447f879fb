"""Keras helpers for control: reading and changing an optimizer's hyperparameters, rolling a model
back to a saved checkpoint. Backend-neutral Keras only (``keras.ops``), no torch code; Keras
internals only through ``_workarounds.keras``.

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
assign it (``pin`` also holds it against callbacks such as ``ReduceLROnPlateau``). A pin of a
schedule's lr is one ``ScaledSchedule(hold=True)``: the controller sends the pin again at every
step and finds it already in place.

Backends: hyperparameters that are Python numbers (``momentum``, ``beta_1``, ``epsilon``,
``weight_decay``) and the schedule object are read at every step by the eager torch backend; a
compiled train function (TensorFlow's ``tf.function``, JAX's ``jit``, ``jit_compile=True`` on torch)
reads them only when it is traced. ``apply_changes`` says when one of them changed, and the
callback then makes the train function again (``_workarounds.keras.StepFunctions.rebuild``): the
next step is traced with the new values. A variable (a float lr, the weights) needs no retrace.
Tested on torch, TensorFlow and JAX by the change's effect on the weights
(``tests/callbacks/test_keras_backends.py``).
"""

from __future__ import annotations

import math
import os
import warnings

import keras
from keras import ops

from ._adapter import Rejected
from ._workarounds.keras import has_momentum_buffers, learning_rate_object, skipped_on_load

Schedule = keras.optimizers.schedules.LearningRateSchedule
_PLAIN = (float, int)
_ATTRS = {"eps": "epsilon", "weight_decay": "weight_decay"}


@keras.saving.register_keras_serializable(package="tmon")
class ScaledSchedule(Schedule):
    """``schedule(step) * factor``, except ``value`` at ``at_step`` (a one-step ``set``), or from
    ``at_step`` on with ``hold=True`` (a ``pin``).

    Immutable: every change makes a new one around the original schedule, so a value recorded
    lazily for an earlier step is never computed with a later factor. A model saved mid-fit holds
    it (``tmon>ScaledSchedule``); loading that model needs ``import tmon_callbacks.keras``.
    """

    def __init__(
        self,
        schedule,
        factor: float = 1.0,
        at_step: int | None = None,
        value: float | None = None,
        hold: bool = False,
    ):
        super().__init__()
        self.schedule, self.factor, self.at_step, self.value = schedule, float(factor), at_step, value
        self.hold = bool(hold)

    def __call__(self, step):
        lr = ops.convert_to_tensor(self.schedule(step))
        if self.factor != 1.0:
            lr = ops.multiply(lr, ops.cast(self.factor, lr.dtype))
        if self.at_step is not None:
            step = ops.convert_to_tensor(step)  # int64 on TensorFlow and torch, int32 on JAX without x64
            at = ops.cast(self.at_step, step.dtype)
            when = ops.greater_equal(step, at) if self.hold else ops.equal(step, at)
            lr = ops.where(when, ops.cast(self.value, lr.dtype), lr)
        return lr

    def holds(self, value: float) -> bool:
        """Whether this schedule already pins the lr at ``value``: a pin sent again changes nothing."""
        return self.hold and self.value == value

    def get_config(self) -> dict:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "factor": self.factor,
            "at_step": self.at_step,
            "value": self.value,
            "hold": self.hold,
        }

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


def _lr_plan(opt, value: float, mode: str, pinned: bool = False):
    """What setting lr to ``value`` will assign: a float for a variable, a schedule otherwise (the
    current one when it already pins ``value``)."""
    current = learning_rate_object(opt)
    if isinstance(current, ScaledSchedule) and pinned and current.holds(value):
        return current
    if isinstance(current, Schedule):
        base, factor = (
            (current.schedule, current.factor) if isinstance(current, ScaledSchedule) else (current, 1.0)
        )
        if mode == "scale":  # the schedule's own level now (a one-step set does not count)
            now = _number(base(opt.iterations)) * factor
            if not (now > 0 and math.isfinite(now)):
                raise Rejected(
                    f"the learning-rate schedule is at {now:g} at this step: scale mode has nothing to "
                    f"multiply; use mode='set' or 'pin'"
                )
            return ScaledSchedule(base, factor * value / now)
        return ScaledSchedule(base, factor, at_step=_iterations(opt), value=value, hold=pinned)
    if callable(current) and not hasattr(current, "assign"):
        raise Rejected(
            f"{type(opt).__name__}.learning_rate is a plain callable ({type(current).__name__}): tmon can "
            f"steer a float learning rate or a LearningRateSchedule"
        )
    return value


def _no_momentum_buffers(opt) -> bool:
    """SGD and RMSprop create momentum variables at build time only when momentum != 0."""
    if not getattr(opt, "built", False):
        return False  # built later, from the momentum in effect then
    return not has_momentum_buffers(opt)


def apply_changes(opt, changes, mode: str, pinned=frozenset()) -> tuple[dict, dict, bool]:
    """Apply ``changes`` (tmon_core.control.Change) to ``opt`` all or nothing; (old, new) by name,
    and whether a value a traced step reads only when traced changed (a Python-number attribute, or
    the lr's schedule object: see ``_workarounds.keras.compiled_step``). ``pinned``: the
    ``(name, group)`` pairs the controller holds (``pin``), for which a ``set`` of a schedule's lr
    holds from now on instead of for one step. Raises Rejected (nothing touched) when one cannot apply."""
    plan = []
    for c in changes:
        key = c.name if c.group is None else f"{c.name}@{c.group}"
        if c.custom is not None:
            plan.append((key, c, None, None))
            continue
        _check_group(c.group)
        if c.name == "lr":
            pin = mode == "set" and (c.name, c.group) in pinned
            plan.append((key, c, "lr", _lr_plan(opt, c.value, mode, pin)))
            continue
        slot = _slot(opt, c.name)
        if slot == "momentum" and c.value != 0 and _no_momentum_buffers(opt):
            raise Rejected(
                f"{type(opt).__name__} was built with momentum=0 and has no momentum buffers: momentum "
                f"cannot be turned on during a fit"
            )
        plan.append((key, c, slot, c.value))
    old, new, traced = {}, {}, False
    for key, c, slot, target in plan:
        if slot is None:
            old[key] = c.custom.get()
            c.custom.set(c.value)
            new[key] = c.custom.get()
            continue
        old[key] = read_param(opt, c.name)
        if slot == "lr":
            before = learning_rate_object(opt)
            if target is not before:
                opt.learning_rate = target  # assigns the variable, or replaces the schedule
            traced |= learning_rate_object(opt) is not before
        else:
            attrs, values = (slot, target) if isinstance(slot, tuple) else ((slot,), (target,))
            for attr, v in zip(attrs, values, strict=True):
                traced |= getattr(opt, attr) != float(v)
                setattr(opt, attr, float(v))
        new[key] = read_param(opt, c.name)
    return old, new, traced


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
