"""torch helpers shared by the torch-based adapters (Lightning, HF): what to read from optimizers,
models and dataloaders. Imported only by adapters, so torch is already loaded."""

from __future__ import annotations

from typing import Any

import torch

from tmon_core.keys import LR, MOMENTUM, WEIGHT_DECAY, group_key


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


def grad_norm(parameters) -> torch.Tensor | None:
    """Total L2 norm of the gradients, left on the device (no sync here)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach(), 2.0) for g in grads]), 2.0)


def model_summary(model: torch.nn.Module) -> dict:
    params = list(model.parameters())
    return {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "num_parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "param_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in params}),
    }


def optimizer_summary(optimizers) -> list[dict]:
    return [{"class": type(o).__name__, "defaults": dict(o.defaults), "param_groups": len(o.param_groups)}
            for o in optimizers]


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
