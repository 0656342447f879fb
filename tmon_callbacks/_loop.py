"""What ``tmon_core.track()`` (``torch_loop.Tracker``) needs besides its hooks: its arguments
checked, the run config it stores, this process's side of the run (distributed too), and the
values of a record tmon can take when one of them is refused."""

from __future__ import annotations

import atexit
import os
import weakref
from typing import TYPE_CHECKING, Any

import torch

from tmon_core import events as ev
from tmon_core.jsonable import json_safe
from tmon_core.keys import check_key
from tmon_core.recorder import prepare_value
from tmon_core.run_config import RunConfig
from tmon_core.session import RunSession

from . import _torch
from ._adapter import warn_once

if TYPE_CHECKING:
    from ._ddp import DecisionLink

#: keys of ``config`` that are settings the report's advice starts from, lifted to the top of the
#: run's config under the names every adapter stores (the whole dict is kept as ``hparams``)
LIFTED = {
    "batch_size": "batch_size",
    "num_workers": "num_workers",
    "pin_memory": "pin_memory",
    "persistent_workers": "persistent_workers",
    "prefetch_factor": "prefetch_factor",
    "precision": "precision",
    "gradient_accumulation_steps": "accumulate_grad_batches",
    "accumulate_grad_batches": "accumulate_grad_batches",
    "max_grad_norm": "gradient_clip_val",
    "clip_grad_norm": "gradient_clip_val",
    "gradient_clip_val": "gradient_clip_val",
    "gradient_checkpointing": "gradient_checkpointing",
    "epochs": "max_epochs",
    "max_epochs": "max_epochs",
    "max_steps": "max_steps",
}


def _as_list(value) -> list:
    """One object or a list/tuple of them, as a list (None: empty)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_scheduler(obj) -> bool:
    inner = getattr(obj, "scheduler", obj)  # accelerate's AcceleratedScheduler
    return callable(getattr(inner, "step", None)) and hasattr(inner, "optimizer")


def check_arguments(
    optimizer, model, scheduler, config, total_steps, checkpoint_dir
) -> tuple[list, list, list]:
    """``track()``'s arguments checked, each refusal naming the argument and the value received.
    Returns (the optimizers as given, the torch optimizers inside them, the torch schedulers)."""
    wrapped = _as_list(optimizer)
    optimizers = [_torch.unwrap_optimizer(o) for o in wrapped]
    for o in optimizers:
        if not isinstance(o, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer must be a torch.optim.Optimizer (or a list of them, or accelerate's "
                f"wrapper of one), received {type(o).__name__}: {o!r:.80}"
            )
    if model is not None and not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, received {type(model).__name__}: {model!r:.80}")
    schedulers = [getattr(s, "scheduler", s) for s in _as_list(scheduler)]
    for s in schedulers:
        if not _is_scheduler(s):
            raise ValueError(
                f"scheduler must be a torch LR scheduler (with .step() and .optimizer), received "
                f"{type(s).__name__}: {s!r:.80}"
            )
    if config is not None and not isinstance(config, dict):
        raise ValueError(
            f"config must be a dict of your settings, received {type(config).__name__}: {config!r:.80}"
        )
    if total_steps is not None and (
        isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1
    ):
        raise ValueError(f"total_steps must be a positive int or None, received total_steps={total_steps!r}")
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise ValueError(f"checkpoint_dir must be a path, received checkpoint_dir={checkpoint_dir!r}")
    return wrapped, optimizers, schedulers


def run_config(
    *,
    world: int,
    wrapped: list,
    optimizers: list,
    schedulers: list,
    model,
    checkpoint_dir: str,
    control: dict | None,
    user_config: dict,
) -> dict:
    """The run's config: the model, optimizers, schedulers, precision, device, Accelerate's settings
    and the user's ``config`` (kept whole as ``hparams``, its known settings lifted by ``LIFTED``)."""
    cfg: dict[str, Any] = {
        "framework": "pytorch",
        "framework_version": torch.__version__,
        "optimizers": _torch.optimizer_summary(optimizers),
        "lr_schedulers": [{"class": type(s).__name__} for s in schedulers],
        "world_size": world,
        "checkpoint_dir": os.path.abspath(checkpoint_dir),
        "control": control,
        "hparams": json_safe(user_config),
    }
    precision = None
    if model is not None:
        cfg.update(_torch.model_summary(model))
        first = next(model.parameters(), None)
        if first is not None:
            cfg["device"] = str(first.device)
            cfg["accelerator"] = first.device.type
            if first.dtype in (torch.bfloat16, torch.float16):
                precision = "bf16-true" if first.dtype == torch.bfloat16 else "16-true"
    accelerated = next((o for o in wrapped if type(o).__module__.startswith("accelerate")), None)
    if accelerated is not None:
        state = getattr(accelerated, "accelerator_state", None)
        mixed = str(getattr(state, "mixed_precision", "no") or "no")
        cfg.update(
            launcher="accelerate", mixed_precision=mixed, num_processes=getattr(state, "num_processes", world)
        )
        steps = getattr(getattr(accelerated, "gradient_state", None), "num_steps", None)
        if isinstance(steps, int):
            cfg["accumulate_grad_batches"] = steps
        if mixed in ("bf16", "fp16"):
            precision = "bf16-mixed" if mixed == "bf16" else "16-mixed"
    for key, name in LIFTED.items():
        value = user_config.get(key)
        if isinstance(value, (bool, int, float, str)) and name not in cfg:
            cfg[name] = value
    cfg.setdefault("precision", precision or "32-true")
    return RunConfig(**cfg).as_dict()


def ranks() -> tuple[int, int, int, int]:
    """(global rank, local rank, node rank, world size) of this process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0) or 0), int(os.environ.get("WORLD_SIZE", 1) or 1)
    local = int(os.environ.get("LOCAL_RANK", rank) or 0)
    node = next(
        (int(os.environ[v]) for v in ("GROUP_RANK", "NODE_RANK") if os.environ.get(v, "").isdigit()), 0
    )
    return rank, local, node, world


def open_session(owner, options) -> tuple[RunSession | None, str | None, DecisionLink | None, int]:
    """This process's side of the run: ``(session, run_id, decision link, world size)``.

    Process 0 creates the run (a failure leaves the loop training unrecorded, said once through
    ``owner``); under ``torch.distributed`` the run id reaches every process over tmon's own gloo
    group (a GPU run never syncs its device for this, and every process reaches this collective
    whatever happened before), each attaches to the run, and a ``DecisionLink`` makes every process
    apply the same decisions at the same step."""
    rank, local_rank, node_rank, world = ranks()
    dist = torch.distributed
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    session = run_id = link = None
    if rank == 0:
        try:
            session = RunSession(
                options, "pytorch", global_rank=0, local_rank=local_rank, node_rank=node_rank
            )
            run_id = session.run_id
        except Exception as exc:  # the loop trains unrecorded rather than not at all; said once
            warn_once(owner, "track", exc)
    if distributed:
        from ._ddp import DecisionLink

        # the run id travels over the link's gloo group, released with it when the loop ends
        link = DecisionLink(options)
        box = [run_id]
        dist.broadcast_object_list(box, src=0, group=link.group)
        run_id = box[0]
        if session is None and run_id is not None:
            session = RunSession(
                options,
                "pytorch",
                global_rank=rank,
                local_rank=local_rank,
                node_rank=node_rank,
                run_id=run_id,
            )
    # (several processes but no process group to share the run id: only process 0 records)
    return session, run_id, link, world


def log_valid(owner, rec, record: dict, step: int, wall_time: float | None = None) -> None:
    """Record the values of ``record`` tmon can take and warn, once per key, about each one it cannot."""
    good = {}
    for k, v in record.items():
        try:
            check_key(k)
            prepare_value(k, v)
            good[k] = v
        except (TypeError, ValueError) as bad:
            warn_once(owner, f"log {k!r:.60}", bad)
    if good:
        try:
            rec.log(good, step, wall_time=wall_time)
        except (TypeError, ValueError) as again:
            warn_once(owner, "log", again)


def describe_loader(rec, loader, user_config: dict, total_steps: int | None) -> None:
    """The loader's settings into the run's config (``batch_size`` left out when the user's
    ``config`` gives one: their word wins, a loader may batch by sampler), and the run's total
    steps from ``config["epochs"]`` times its length when ``track`` was not told them."""
    cfg = {k: v for k, v in _torch.dataloader_config(loader).items() if v is not None}
    if "batch_size" in cfg and user_config.get("batch_size") is not None:
        del cfg["batch_size"]
    if cfg:
        rec.update_config(**RunConfig(**cfg).as_dict())
    epochs = user_config.get("epochs", user_config.get("max_epochs"))
    per_epoch = cfg.get("batches_per_epoch")
    if not total_steps and isinstance(epochs, int) and isinstance(per_epoch, int) and epochs > 0:
        rec.update_run(total_steps=epochs * per_epoch)


def end_reason(
    stop_requested: bool, should_stop: bool, total_steps: int | None, step: int, epoch_complete: bool | None
) -> str:
    """Why the loop ended (``train_end``'s reason), from what the tracker saw of it."""
    if stop_requested:
        return ev.END_STOP_REQUEST
    if should_stop:
        return ev.END_SHOULD_STOP
    if total_steps and step >= total_steps:
        return ev.END_MAX_STEPS
    if epoch_complete is False:  # the loop left an epoch before its loader ran out
        return ev.END_SHOULD_STOP
    return ev.END_MAX_EPOCHS if epoch_complete else ev.END_MAX_STEPS


# trackers used without ``with`` and not finished: finished when the interpreter exits (registered
# after the recorder's own exit hook, imported above, so it runs first and the run ends completed,
# not interrupted)
open_trackers: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _finish_open() -> None:
    for t in list(open_trackers):
        try:
            t.finish()
        except Exception:
            pass
