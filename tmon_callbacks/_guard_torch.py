"""A guard (``tmon_core.guard``) over a torch model: the step's finiteness check, and the snapshots
a rollback restores (model, optimizers, LR schedulers). Shared by the Lightning, HF and plain-loop
adapters; each calls :class:`TorchGuard` from its own hooks (``check`` before the optimizer step,
``step_end`` after it, ``handlers`` with its other control decisions).

The check costs one device sync per optimizer step, and only while a guard is on: the total
gradient norm (``torch.nn.utils.get_total_norm``, one pass over the gradients, the one
``log_grad_norm`` records when both are on) plus the step's loss, reduced to one flag on the device
and read once. A non-finite step's gradients are dropped (``optimizer.zero_grad(set_to_none=True)``):
torch optimizers then leave every parameter, and its optimizer state, as it was.

Snapshots are CPU copies kept in memory when one is at most ``Guard.max_memory_bytes`` (model and
optimizer state together), else ``torch.save`` files in a temporary directory (``Guard.snapshot_dir``
or one of its own, removed at the end of the fit). A snapshot restores the optimizer's param groups
as they were (its learning rates too: the guard's lr change follows as its own decision) and the
schedulers' state. Not restored: the data loader's position and the random generators, so a run
that rolls back meets new batches rather than the one that made the NaN.
"""

from __future__ import annotations

import copy
import time

import torch

from tmon_core.guard import Guard, GuardRollback, GuardSnapshot

from ._snapshots import Snapshots
from ._torch import unwrap_model, unwrap_optimizer


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _to_cpu(obj):
    """A copy of ``obj`` with every tensor copied to CPU memory (never a view of the live one); a
    module state dict keeps its ``_metadata`` (``load_state_dict`` reads it)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, _to_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = copy.deepcopy(obj._metadata)
        return out
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


class TorchSnapshots(Snapshots):
    """The snapshots of one fit: ``save(step)``, ``restore(step)``, ``describe()``, ``close()``."""

    def __init__(self, guard: Guard, model, optimizers, schedulers=()):
        super().__init__(guard)
        self.model = unwrap_model(model)
        self.optimizers = [unwrap_optimizer(o) for o in optimizers]
        self.schedulers = list(schedulers)

    def _take(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
        }

    def save(self, step: int) -> None:
        t0 = time.perf_counter()
        live = self._take()
        schedulers = [copy.deepcopy(s.state_dict()) for s in self.schedulers]
        if self._place(_tensor_bytes(live)) == "memory":
            self._keep(step, _to_cpu(live), schedulers, t0)
        else:
            path = self._path(step, ".pt")
            torch.save(live, path)  # tensor by tensor to the file: no second copy in memory
            self._keep(step, path, schedulers, t0)

    def restore(self, step: int) -> None:
        if step not in self.kept:
            raise KeyError(f"no guard snapshot of step {step}; kept: {sorted(self.kept)}")
        what, schedulers = self.kept[step]
        if isinstance(what, str):
            state = torch.load(what, map_location="cpu", weights_only=True)
        else:
            state = _to_cpu(what)  # a copy: the optimizer may keep the tensors it is given, and mutate them
        self.model.load_state_dict(state["model"])
        for opt, sd in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(sd)
        for sched, sd in zip(self.schedulers, schedulers):
            sched.load_state_dict(copy.deepcopy(sd))
        self._forget_newer(step)


def step_is_finite(parameters, loss=None, *, grads: bool = True) -> tuple[bool, torch.Tensor | None]:
    """(whether the step's gradients and ``loss`` are all finite, the total gradient norm left on the
    device): one flag reduced on the device, read with one sync."""
    norm = None
    flag = None
    if grads:
        gs = [p.grad for p in parameters if p.grad is not None]
        if gs:
            norm = torch.nn.utils.get_total_norm(gs, 2.0)
            flag = torch.isfinite(norm)
    if loss is not None and isinstance(loss, torch.Tensor):
        lf = torch.isfinite(loss.detach()).all()
        flag = lf if flag is None else flag & lf.to(flag.device)
    if flag is None:
        return True, norm
    return bool(flag), norm


class TorchGuard:
    """A ``GuardRun`` and its ``TorchSnapshots`` for one fit, as the torch adapters use them."""

    def __init__(self, guard: Guard, recorder, controller, model, optimizers, schedulers, start_step: int):
        self.snapshots = TorchSnapshots(guard, model, optimizers, schedulers)
        opts = self.snapshots.optimizers
        self.run = guard.begin(
            recorder,
            controller,
            lrs=lambda: [g["lr"] for o in opts for g in o.param_groups],
            start_step=start_step,
        )
        self.grad_norm: torch.Tensor | None = None  # the last check's, for log_grad_norm

    def check(self, step: int, parameters, optimizers, loss=None, *, grads: bool = True) -> bool:
        """Before the optimizer step of ``step``: True when the update was dropped (non-finite)."""
        finite, self.grad_norm = step_is_finite(parameters, loss, grads=grads)
        if self.run.check(step, finite):
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            return True
        return False

    def step_end(self, step: int) -> None:
        self.run.step_end(step)

    def handlers(self, step: int) -> dict:
        """The handlers of the guard's decisions for ``apply_decisions`` at the boundary before ``step``."""
        return {
            GuardSnapshot: lambda d: self.run.snapshot(d, step, self.snapshots),
            GuardRollback: lambda d: self.run.rollback(d, step, self.snapshots),
        }

    def close(self) -> None:
        self.run.close()
        self.snapshots.close()
