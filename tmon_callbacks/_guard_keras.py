"""A guard (``tmon_core.guard``) over a Keras fit: the snapshots a rollback restores, and where each
backend lets tmon judge a step. Used by ``tmon_callbacks.keras`` from its hooks.

Keras hands callbacks no moment between a step's gradients and its update, and on TensorFlow and
JAX the step is one compiled function. So:

- ``rollback`` and ``stop`` judge the step's ``loss`` as Keras logs it, at the batch's end, after the
  update (no device sync of tmon's own: Keras has already made the logs Python floats). That value
  is the running mean over the epoch, which is non-finite from the first non-finite step on: the
  step it turns is the step that failed. After a rollback the model's metrics are reset
  (``model.reset_metrics()``), so the logged loss is again the mean of the steps since: the epoch's
  value in ``History``/``CSVLogger`` is then the mean since the last rollback, not over the whole
  epoch. A ``stop`` ends the fit after that step: on Keras the non-finite update has happened.
- ``skip`` needs the update itself withheld: on the torch backend run eagerly (Keras' default there)
  the optimizer's ``apply`` is wrapped for the fit (``_workarounds.keras.guard_apply``) and checks the
  gradients first (one device sync per step, only while the guard is on); a non-finite step's update
  is not applied and the optimizer's iteration count does not move. A compiled step (TensorFlow,
  JAX, ``jit_compile=True``) runs its update inside the traced function, where a Python wrapper sees
  only symbolic values: ``skip`` is refused there with the alternative (``guard="rollback"``).

Snapshots are numpy copies of the model's variables (weights, non-trainable state) and the
optimizer's (moments, momentum buffers), but not its iteration count or its learning-rate variable:
as with tmon's own Keras rollback (``_keras.load_weights``), the step counter and any schedule go
on, and the guard's lr change (the snapshot's lr × ``lr_factor``) follows as its own decision. In
memory up to ``Guard.max_memory_bytes`` a snapshot, else an ``.npz`` file in a temporary directory.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import ops

from tmon_core.guard import Guard

from ._snapshots import Snapshots
from ._workarounds.keras import compiled_step, learning_rate_object

SKIP_REFUSED = (
    "guard='skip' withholds a non-finite step's update, which tmon can do on Keras' torch backend when "
    "the step runs eagerly (not jit_compile=True); this fit's step is compiled ({why}), and its update "
    "happens inside the compiled function. Use guard='rollback' (restores the last good snapshot and "
    "lowers the lr) or guard='stop'"
)


def skip_refusal(model) -> str | None:
    """Why ``guard="skip"`` cannot act on this model's fit, or None when it can."""
    backend = keras.backend.backend()
    if backend != "torch":
        return SKIP_REFUSED.format(why=f"the {backend} backend")
    if compiled_step(model):
        return SKIP_REFUSED.format(why="jit_compile=True")
    return None


class KerasSnapshots(Snapshots):
    """The snapshots of one fit: ``save(step)``, ``restore(step)``, ``describe()``, ``close()``.

    ``get_model`` returns the model as a callback may use it (``Callback.model``: on JAX that copies
    the fit's state back into the variables first, so what is saved is current and what is restored
    is what the next step reads)."""

    def __init__(self, guard: Guard, get_model):
        super().__init__(guard)  # kept: step -> (arrays or the .npz path, the variables they belong to)
        self.get_model = get_model

    def _variables(self, model) -> list:
        opt = getattr(model, "optimizer", None)
        inner = getattr(opt, "inner_optimizer", opt)
        skip = set()
        if inner is not None:
            skip.add(id(inner.iterations))
            lr = learning_rate_object(inner)
            if hasattr(lr, "assign"):
                skip.add(id(lr))
        seen, out = set(), []
        for v in list(model.variables) + (list(opt.variables) if opt is not None else []):
            if id(v) not in seen and id(v) not in skip:
                seen.add(id(v))
                out.append(v)
        return out

    def save(self, step: int) -> None:
        t0 = time.perf_counter()
        variables = self._variables(self.get_model())
        arrays = [np.array(ops.convert_to_numpy(v.value), copy=True) for v in variables]
        if self._place(sum(a.nbytes for a in arrays)) == "memory":
            self._keep(step, arrays, variables, t0)
        else:
            path = self._path(step, ".npz")
            np.savez(path, *arrays)
            self._keep(step, path, variables, t0)

    def restore(self, step: int) -> None:
        if step not in self.kept:
            raise KeyError(f"no guard snapshot of step {step}; kept: {sorted(self.kept)}")
        self.get_model()  # (JAX: the fit's state into the variables first, so what is assigned stays)
        what, variables = self.kept[step]
        if isinstance(what, str):
            with np.load(what) as f:
                arrays = [f[f"arr_{i}"] for i in range(len(variables))]
        else:
            arrays = what
        for v, a in zip(variables, arrays):
            v.assign(a)
        self._forget_newer(step)
