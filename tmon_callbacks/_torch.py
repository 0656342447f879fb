"""torch helpers shared by the torch-based adapters (Lightning, HF, the plain loop): what to read
from optimizers, models and dataloaders, and how to steer and roll them back. Imported only by
adapters, so torch is already loaded."""

from __future__ import annotations

import functools
from typing import Any

import torch

from tmon_core import checkpoints
from tmon_core.keys import LR, MOMENTUM, WEIGHT_DECAY, group_key

from ._adapter import Rejected
from ._workarounds.torch import inner_schedulers, sync_last_lr


def optimizer_values(optimizers) -> dict[str, Any]:
    """lr, momentum (SGD momentum or Adam's beta1) and weight decay of every param group.

    Values are read from the optimizer itself, so they are what the next step will use,
    whatever a scheduler or a control request did. A tensor lr (capturable optimizers) is
    passed through as a tensor: the recorder converts it off the hot path.
    """
    out: dict[str, Any] = {}
    for oi, opt in enumerate(optimizers):
        for gi, group in enumerate(opt.param_groups):
            out[group_key(LR, oi, gi)] = group["lr"]
            mom = group.get("momentum")
            if mom is None:
                betas = group.get("betas")
                mom = betas[0] if betas else None
            if mom is not None:
                out[group_key(MOMENTUM, oi, gi)] = mom
            wd = group.get("weight_decay")
            if wd is not None:
                out[group_key(WEIGHT_DECAY, oi, gi)] = wd
    return out


class OptimizerValues:
    """``optimizer_values`` for a fixed list of optimizers, with each param group's keys (``lr``,
    ``lr/pg1``, ``momentum/opt1/pg0``...) worked out once rather than at every step: the same
    dict, a third of the time. A group added later (``add_param_group``) gets its keys then."""

    def __init__(self, optimizers: list):
        self.optimizers = optimizers
        self.layout: list = []
        self._build()

    def _build(self) -> None:
        self.layout = [
            (
                opt,
                [
                    tuple(group_key(base, oi, gi) for base in (LR, MOMENTUM, WEIGHT_DECAY))
                    for gi in range(len(opt.param_groups))
                ],
            )
            for oi, opt in enumerate(self.optimizers)
        ]

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for opt, keys in self.layout:
            groups = opt.param_groups
            if len(groups) != len(keys):
                self._build()
                return self()
            for group, (lr_key, mom_key, wd_key) in zip(groups, keys):
                out[lr_key] = group["lr"]
                mom = group.get("momentum")
                if mom is None:
                    betas = group.get("betas")
                    mom = betas[0] if betas else None
                if mom is not None:
                    out[mom_key] = mom
                wd = group.get("weight_decay")
                if wd is not None:
                    out[wd_key] = wd
        return out


def grad_norm(parameters) -> torch.Tensor | None:
    """Total L2 norm of the gradients, left on the device (no sync here)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.detach(), 2.0) for g in grads]), 2.0
    )


def model_summary(model: torch.nn.Module) -> dict:
    params = list(model.parameters())
    return {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "num_parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "param_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in params}),
    }


def optimizer_summary(optimizers) -> list[dict]:
    return [
        {"class": type(o).__name__, "defaults": dict(o.defaults), "param_groups": len(o.param_groups)}
        for o in optimizers
    ]


def dataloader_config(loader) -> dict:
    """batch size and worker settings of a DataLoader (or the first of a collection of them)."""
    if isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    elif isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if loader is None:
        return {}
    batch_size = getattr(loader, "batch_size", None)
    if batch_size is None and getattr(loader, "batch_sampler", None) is not None:
        batch_size = getattr(loader.batch_sampler, "batch_size", None)
    cfg = {"batch_size": batch_size}
    for attr in ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "drop_last"):
        if hasattr(loader, attr):
            cfg[attr] = getattr(loader, attr)
    try:
        cfg["batches_per_epoch"] = len(loader)
    except TypeError:
        pass
    return cfg


# ---------------------------------------------------------------------------------------------
# control: applying parameter changes and rollbacks to torch optimizers
#
# Param groups are numbered across optimizers in order (``lr@1`` is the second group overall).
# A change without a group sets every group to the value.
#
# Modes (tmon_core.control.params):
#   scale  the value is the new level of the schedule. For lr, each LR scheduler attached to
#          the optimizer has its bases multiplied by new/old (``base_lrs``, and the group's
#          ``initial_lr``/``max_lr``/``min_lr`` that OneCycleLR and warm-up schedules read), so
#          LambdaLR, OneCycleLR, CosineAnnealingLR, StepLR and HF's linear/cosine warm-up
#          schedules continue their shape from the new level instead of undoing the change at
#          their next step. OneCycleLR's momentum bounds are scaled the same way for momentum.
#   set    the value is written once; a scheduler may move it afterwards.
#   pin    the controller re-sends the value (as ``set``) before every step: the value holds
#          whatever a scheduler does, until another change to that parameter.
# ---------------------------------------------------------------------------------------------


class ParamRejected(Rejected):
    """A change this optimizer cannot take; the message is the reason recorded."""


def _groups(optimizers):
    return [(opt, g) for opt in optimizers for g in opt.param_groups]


def _slot(name: str, group: dict):
    """The (key, index) holding ``name`` in a param group, or None when the optimizer has no such value."""
    if name == "momentum":
        if "momentum" in group:
            return "momentum", None
        if "betas" in group:
            return "betas", 0
        return None
    return (name, None) if name in group else None


def _get(group: dict, slot):
    key, idx = slot
    v = group[key]
    v = v[idx] if idx is not None else v
    return v.item() if isinstance(v, torch.Tensor) else (list(v) if isinstance(v, tuple) else v)


def _put(group: dict, slot, value) -> None:
    key, idx = slot
    if idx is not None:
        betas = list(group[key])
        betas[idx] = value
        group[key] = tuple(betas)
    elif isinstance(group[key], torch.Tensor):
        group[key].fill_(value)  # capturable/tensor lr: keep the tensor the optimizer holds
    else:
        group[key] = tuple(value) if key == "betas" else value


def read_param(optimizers, name: str, group: int | None):
    """Current value of ``name`` in param group ``group`` (None: the first group)."""
    groups = _groups(optimizers)
    gi = group or 0
    if gi >= len(groups):
        raise ParamRejected(f"param group {gi} does not exist: the optimizer has {len(groups)} groups")
    slot = _slot(name, groups[gi][1])
    if slot is None:
        raise ParamRejected(f"{type(groups[gi][0]).__name__} has no {name!r}")
    return _get(groups[gi][1], slot)


def _leaf_schedulers(schedulers):
    """The schedulers that act on optimizers, looking inside SequentialLR and ChainedScheduler."""
    stack, out = list(schedulers), []
    while stack:
        cur = stack.pop()
        inner = inner_schedulers(cur)
        if inner:
            stack.extend(inner)
        else:
            out.append(cur)
    return out


def unwrap_optimizer(opt):
    """The torch optimizer behind a wrapper that holds it as ``.optimizer`` (accelerate's
    ``AcceleratedOptimizer``, which HF's schedulers are built on), else ``opt`` itself."""
    inner = getattr(opt, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else opt


def unwrap_model(model):
    """The module whose state dict has the plain keys: DDP and DataParallel hold it as ``.module``."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def _schedulers_of(schedulers, opt):
    opt = unwrap_optimizer(opt)
    return [s for s in _leaf_schedulers(schedulers) if unwrap_optimizer(getattr(s, "optimizer", None)) is opt]


def apply_changes(optimizers, schedulers, changes, mode: str) -> tuple[dict, dict]:
    """Apply ``changes`` (tmon_core.control.Change) all or nothing. Returns (old, new) by
    ``name`` / ``name@group``; raises ParamRejected (nothing touched) when one cannot apply."""
    groups = _groups(optimizers)
    plan = []
    for c in changes:
        key = c.name if c.group is None else f"{c.name}@{c.group}"
        if c.custom is not None:
            plan.append((key, c, None))
            continue
        if c.group is not None and c.group >= len(groups):
            raise ParamRejected(
                f"param group {c.group} does not exist: the optimizer has {len(groups)} groups"
            )
        targets = range(len(groups)) if c.group is None else [c.group]
        slots = []
        for gi in targets:
            opt, g = groups[gi]
            slot = _slot(c.name, g)
            if slot is None:
                raise ParamRejected(f"{type(opt).__name__} has no {c.name!r} (param group {gi})")
            slots.append((gi, slot))
        plan.append((key, c, slots))
    old, new = {}, {}
    for key, c, slots in plan:
        if slots is None:
            old[key] = c.custom.get()
            c.custom.set(c.value)
            new[key] = c.custom.get()
            continue
        before, after = [], []
        for gi, slot in slots:
            opt, g = groups[gi]
            prev = _get(g, slot)
            before.append(prev)
            if mode == "scale" and c.name in ("lr", "momentum") and isinstance(prev, float) and prev > 0:
                _rescale_bases(schedulers, opt, g, c.name, c.value / prev)
            _put(g, slot, c.value)
            after.append(_get(g, slot))
        old[key] = before[0] if len(before) == 1 else before
        new[key] = after[0] if len(after) == 1 else after
    for s in _leaf_schedulers(schedulers):  # get_last_lr() reports what the optimizer now holds
        sync_last_lr(s)
    return old, new


def _rescale_bases(schedulers, opt, group: dict, name: str, factor: float) -> None:
    # by identity: list.index compares the groups' dicts, and so their tensors, which fails (or
    # matches the wrong group) once an optimizer has two groups
    index = next(i for i, g in enumerate(opt.param_groups) if g is group)
    if name == "lr":
        for key in ("initial_lr", "max_lr", "min_lr"):
            if isinstance(group.get(key), (int, float)):
                group[key] = group[key] * factor
        for s in _schedulers_of(schedulers, opt):
            if hasattr(s, "base_lrs") and index < len(s.base_lrs):
                s.base_lrs[index] = s.base_lrs[index] * factor
    else:  # momentum cycled by OneCycleLR
        for key in ("base_momentum", "max_momentum"):
            if isinstance(group.get(key), (int, float)):
                group[key] = group[key] * factor


# the rollback readers of ``tmon_core.checkpoints``, a checkpoint they cannot take rejecting the
# decision with their words (a CheckpointError's message is the whole reason)
def _rejecting(read):
    @functools.wraps(read)
    def reader(path: str):
        try:
            return read(path)
        except checkpoints.CheckpointError as exc:
            raise ParamRejected(str(exc)) from None

    return reader


read_torch_checkpoint = _rejecting(checkpoints.read_torch_checkpoint)
read_hf_checkpoint = _rejecting(checkpoints.read_hf_checkpoint)
read_loop_checkpoint = _rejecting(checkpoints.read_loop_checkpoint)


def check_optimizer_states(optimizers, states) -> None:
    """Raise ParamRejected unless ``states`` fit ``optimizers`` group by group (checked before
    anything is loaded, so a rollback is all or nothing)."""
    if not isinstance(states, list) or len(states) != len(optimizers):
        n = len(states) if isinstance(states, list) else 0
        raise ParamRejected(
            f"the checkpoint has {n} optimizer states, the run has {len(optimizers)} optimizers"
        )
    for i, (opt, state) in enumerate(zip(optimizers, states)):
        groups = state.get("param_groups") if isinstance(state, dict) else None
        if not groups or [len(g["params"]) for g in groups] != [len(g["params"]) for g in opt.param_groups]:
            raise ParamRejected(
                f"optimizer {i} state in the checkpoint does not match this optimizer's param groups"
            )


def restore_optimizer_states(optimizers, states: list) -> None:
    """Load optimizer state (moments, step counts) but keep the hyperparameters in effect now:
    a rollback returns to the checkpoint's weights, not to its learning rate."""
    check_optimizer_states(optimizers, states)
    for opt, state in zip(optimizers, states):
        keep = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        try:
            opt.load_state_dict(state)
        except Exception as exc:
            raise ParamRejected(f"optimizer state does not fit this optimizer: {exc}") from None
        for g, hp in zip(opt.param_groups, keep):
            g.update(hp)


def load_model_state(module: torch.nn.Module, state: dict, path: str) -> None:
    """Load ``state`` into ``module`` all or nothing: checked first for the module's keys (a tied
    weight saved once, under the key of the tensor it shares, counts as present), unknown keys,
    non-tensors and shapes."""
    own = module.state_dict()
    saved = {own[k].data_ptr() for k in own if k in state}
    missing = sorted(k for k, v in own.items() if k not in state and v.data_ptr() not in saved)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ParamRejected(
            f"checkpoint {path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor) or v.shape != own[k].shape]
    if bad:
        k = bad[0]
        got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
        raise ParamRejected(
            f"checkpoint {path} does not fit this model: {len(bad)} tensors differ, e.g. {k} "
            f"is {got} in the checkpoint, {tuple(own[k].shape)} in the model"
        )
    module.load_state_dict(state, strict=False)
