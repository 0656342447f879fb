"""What the Hugging Face adapter records and how it steers; ``hf.py`` decides when.

Read from ``TrainingArguments``, ``TrainerState`` and the trainer's callbacks: the run's config,
why the fit ended, where a checkpoint went. Done: opening each process's session, recording a
saved checkpoint, applying control decisions to HF's optimizer and model, recording evaluation
after the fit (``AfterFit``). Imported only by ``hf.py``, so transformers is already loaded.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import warnings
from typing import Any

import transformers

from tmon_core import events as ev
from tmon_core.jsonable import json_safe
from tmon_core.keys import EPOCH, GRAD_NORM
from tmon_core.run_config import RunConfig
from tmon_core.session import RunSession
from tmon_core.store.text import MAX_RUN_NAME, storable

from . import _torch
from ._adapter import TMonCallbackWarning, warn_once
from ._workarounds.hf import CHECKPOINT_PREFIX, after_fit_stage, early_stopping_exhausted

PLAIN = (int, float)
# keys HF logs that tmon records at every step itself, under its own names: kept once (hf.py's docstring)
RECORDED_PER_STEP = frozenset({EPOCH, "learning_rate"})


def logged_values(logs: dict, skip_grad_norm: bool) -> dict:
    """The numbers of an HF log worth recording, under HF's names, but those tmon records every step."""
    values = {}
    for k, v in logs.items():
        if k in RECORDED_PER_STEP or (skip_grad_norm and k == GRAD_NORM):
            continue
        if type(v) in PLAIN or (hasattr(v, "__float__") and not isinstance(v, (str, bytes))):
            values[k] = v
    return values


def best_metric(args) -> tuple[str | None, str | None]:
    """The metric HF picks the best checkpoint (and ``EarlyStoppingCallback`` stops) by, as HF logs it
    (``eval_`` added as HF adds it), and "min" or "max"."""
    name = args.metric_for_best_model or ("loss" if args.load_best_model_at_end else None)
    if name is None:
        return None, None
    if not name.startswith("eval_"):
        name = f"eval_{name}"
    return name, "max" if args.greater_is_better else "min"


def run_config(args, state, model, optimizer, kw: dict, controller, callbacks: list) -> dict:
    """The run's config: ``TrainingArguments``, the model config, batch size, accumulation,
    gradient checkpointing, precision, workers, world size, optimizer, scheduler, callbacks."""
    inner_opt = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    scheduler = kw.get("lr_scheduler")
    # transformers 5 renamed gradient checkpointing to activation checkpointing (old names deprecated)
    model_flag = next(
        (n for n in ("is_activation_checkpointing", "is_gradient_checkpointing") if hasattr(type(model), n)),
        None,
    )
    checkpointing = bool(
        getattr(args, "activation_checkpointing", None)
        or getattr(args, "gradient_checkpointing", None)
        or (model_flag is not None and getattr(model, model_flag))
    )
    cfg = RunConfig(
        framework="transformers",
        framework_version=transformers.__version__,
        # the settings later advice reads, under HF's names and under the names every adapter uses
        per_device_train_batch_size=args.per_device_train_batch_size,
        train_batch_size=state.train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        accumulate_grad_batches=args.gradient_accumulation_steps,
        gradient_checkpointing=checkpointing,
        bf16=bool(args.bf16),
        fp16=bool(args.fp16),
        precision="bf16-mixed" if args.bf16 else "16-mixed" if args.fp16 else "32-true",
        dataloader_num_workers=args.dataloader_num_workers,
        world_size=args.world_size,
        max_steps=state.max_steps,
        num_train_epochs=state.num_train_epochs,
        logging_steps=state.logging_steps,
        max_grad_norm=args.max_grad_norm,
        optimizers=_torch.optimizer_summary([inner_opt]) if inner_opt is not None else [],
        lr_schedulers=[{"class": type(scheduler).__name__}] if scheduler is not None else [],
        training_args=json_safe(args.to_dict()),
        control=controller.describe() if controller is not None else None,
        callbacks=callbacks_config(args, state, callbacks),  # events.CONFIG_CALLBACKS
        **_torch.dataloader_config(kw.get("train_dataloader")),
    )
    if model is not None:
        cfg = dataclasses.replace(cfg, **_torch.model_summary(model))
        model_config = getattr(model, "config", None)
        if model_config is not None and hasattr(model_config, "to_dict"):
            cfg.model_config = json_safe(model_config.to_dict())
    return cfg.as_dict()


def callbacks_config(args, state, callbacks: list) -> list[dict]:
    """``config["callbacks"]``: HF's own evaluation, checkpointing and best-model settings (the
    ``Trainer`` entry: they are no callback), then every callback in ``callbacks`` (the trainer's
    but tmon's), with the settings advice reads for those it knows."""
    monitor, mode = best_metric(args)
    entries: list[dict] = [
        {
            "name": "Trainer",
            "eval_strategy": _plain(args.eval_strategy),
            "eval_steps": state.eval_steps if _plain(args.eval_strategy) == "steps" else None,
            "save_strategy": _plain(args.save_strategy),
            "save_steps": state.save_steps if _plain(args.save_strategy) == "steps" else None,
            "save_total_limit": args.save_total_limit,
            "load_best_model_at_end": bool(args.load_best_model_at_end),
            "metric_for_best_model": args.metric_for_best_model,
            "monitor": monitor,
            "mode": mode,
        }
    ]
    for cb in callbacks:
        entry: dict[str, Any] = {"name": type(cb).__name__}
        if isinstance(cb, transformers.EarlyStoppingCallback):
            entry.update(
                monitor=monitor,
                mode=mode,
                patience=cb.early_stopping_patience,
                threshold=cb.early_stopping_threshold,
            )
        entries.append(entry)
    return entries


def end_reason(args, state, callbacks: list, *, stop_requested: bool, empty_epoch: bool) -> dict:
    """``train_end``'s data: why the loop ended. A fit that reached its length ended by it, whatever
    else asked to stop at that last step."""
    if state.max_steps and state.global_step >= state.max_steps:
        info: dict[str, Any] = {"reason": ev.END_MAX_STEPS if args.max_steps > 0 else ev.END_MAX_EPOCHS}
    elif stop_requested:
        info = {"reason": ev.END_STOP_REQUEST}
    else:
        stopper = next(
            (
                cb
                for cb in callbacks
                if isinstance(cb, transformers.EarlyStoppingCallback) and early_stopping_exhausted(cb)
            ),
            None,
        )
        if stopper is not None:
            monitor, mode = best_metric(args)
            info = {
                "reason": ev.END_EARLY_STOPPING,
                "callback": type(stopper).__name__,
                "monitor": monitor,
                "mode": mode,
                "patience": stopper.early_stopping_patience,
                "threshold": stopper.early_stopping_threshold,
            }
        elif empty_epoch:
            info = {"reason": ev.END_DATA_EXHAUSTED}
        else:  # another callback, or the user's code, set control.should_training_stop
            info = {"reason": ev.END_SHOULD_STOP}
    info.update(max_steps=state.max_steps)
    if args.load_best_model_at_end and state.best_model_checkpoint:
        # what the Trainer loaded before this hook: the model the user goes on with
        info.update(
            best_model_checkpoint=os.path.abspath(state.best_model_checkpoint), best_metric=state.best_metric
        )
    return info


def checkpoint_dir(args, step: int) -> str | None:
    """The directory the Trainer saved step ``step``'s checkpoint in, else None."""
    path = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}-{step}")
    if not os.path.isdir(path):  # hyperparameter search: a trial's own directory under output_dir
        found = glob.glob(os.path.join(glob.escape(args.output_dir), "*", os.path.basename(path)))
        path = max(found, key=os.path.getmtime) if found else None
    return path


def grad_norm_per_step(options, args, recording: bool) -> bool:
    """Whether tmon measures ``grad_norm`` at every step: ``log_grad_norm=True`` without clipping.
    With clipping, HF's own norm (before clipping) is the one kept, and a warning says why."""
    clipping = bool(args.max_grad_norm) and args.max_grad_norm > 0
    if options.log_grad_norm and clipping and recording:
        warnings.warn(
            f"tmon: log_grad_norm=True would record the gradient norm after clipping, but HF clips "
            f"(max_grad_norm={args.max_grad_norm}) and logs the norm before clipping as grad_norm: tmon "
            f"records HF's; set logging_steps=1 to have it at every step",
            TMonCallbackWarning,
            stacklevel=3,
        )
    return options.log_grad_norm and not clipping


def record_save(rec, controller, args, state, manual: list, eval_step, eval_metrics: dict) -> str | None:
    """Record the checkpoint the Trainer saved at this step (its directory, else None is returned)
    and resolve the control requests (``manual``) that asked for it."""
    step = state.global_step
    path = checkpoint_dir(args, step)
    if path is not None:
        name, _mode = best_metric(args)  # the metric HF compares checkpoints by, if evaluated at this step
        value = eval_metrics.get(name) if name is not None and eval_step == step else None
        # a checkpoint asked for by control requests (several in one step share the directory)
        description = "; ".join(d.description for d in manual if d.description) or None
        tags = list(dict.fromkeys(t for d in manual for t in d.tags))
        rec.checkpoint(
            path,
            step=step,
            epoch=state.epoch,
            monitor=name,
            monitor_value=value,
            source="manual" if manual else "Trainer",
            description=description,
            tags=tags,
        )
    for d in manual:
        if path is None:
            controller.resolve(
                d, step, applied=False, reason=f"the Trainer wrote no {CHECKPOINT_PREFIX}-{step} directory"
            )
        else:
            controller.resolve(
                d, step, applied=True, new={"path": os.path.abspath(path)}, reason=d.description
            )
    return path


def set_params(optimizer, scheduler, d) -> dict:
    """Apply a ``SetParams`` decision to the optimizer (and the scheduler's bases in ``scale`` mode)."""
    scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler
    old, new = _torch.apply_changes(
        [optimizer], [scheduler] if scheduler is not None else [], d.changes, d.mode
    )
    return {"old": old, "new": new}


def rollback(model, optimizer, d, step: int) -> dict:
    """Apply a ``Rollback`` decision: the checkpoint's weights and optimizer state, both checked
    before anything is loaded; the hyperparameters in effect stay."""
    state, optimizer_state, ckpt_step = _torch.read_hf_checkpoint(d.path)
    if optimizer_state is not None:
        _torch.check_optimizer_states([optimizer], [optimizer_state])
    _torch.load_model_state(model, state, d.path)
    if optimizer_state is not None:
        _torch.restore_optimizer_states([optimizer], [optimizer_state])
    return {
        "old": {"step": step},
        "new": {
            "checkpoint_id": d.checkpoint_id,
            "path": d.path,
            "checkpoint_step": ckpt_step,
            "optimizer_restored": optimizer_state is not None,
        },
        "event": ev.ROLLBACK,
        "reason": f"rolled back to checkpoint {d.checkpoint_id}",
    }


class AfterFit:
    """Evaluation after the fit, recorded into the ended run with its status kept: ``evaluate()`` or
    ``predict()`` (from their first prediction step to ``on_evaluate``/``on_predict``), a
    ``trainer.log`` of the user's, and what a script adds before ``Trainer.log_metrics``."""

    def __init__(self) -> None:
        self.open = False  # an evaluation after the fit is open in the session
        self.keys: set[str] = set()  # what it has recorded: log_metrics does not record them twice

    def begin(self, session, step: int) -> None:
        """A first prediction step after the fit."""
        if session.writes_metrics:
            session.begin_evaluation(after_fit_stage(), step)
            self.open = True

    def log(self, session, values: dict, step: int | None) -> None:
        if not values or not session.writes_metrics:
            return
        self.keys.update(values)
        if self.open:
            session.log_evaluation(values, step)
        else:  # no prediction step came first (a trainer.log of the user's): its own short evaluation
            session.begin_evaluation("evaluate", step)
            session.log_evaluation(values, step)
            session.end_evaluation(step)

    def evaluated(self, session, step: int) -> None:
        """``on_evaluate``: its metrics came through ``on_log``, as HF logged them."""
        if self.open:
            self.open = False
            session.end_evaluation(step)

    def predicted(self, session, metrics: dict | None, step: int) -> None:
        """``on_predict``: ``predict()`` logs nothing, its metrics (``test_loss``...) are recorded here."""
        if self.open:
            self.open = False
            values = {k: v for k, v in (metrics or {}).items() if type(v) in PLAIN}
            self.keys.update(values)
            session.log_evaluation(values, step)
            session.end_evaluation(step)

    def metrics_logged(self, session, split: str, metrics: dict, eval_step: int | None) -> None:
        """``Trainer.log_metrics(split, metrics)``: the values HF did not log already."""
        if split not in ("eval", "test") or not metrics:
            return
        values = {
            k: v
            for k, v in metrics.items()
            if type(v) in PLAIN and k not in self.keys and k not in RECORDED_PER_STEP
        }
        if values:
            self.log(session, values, eval_step if split == "eval" else None)


def open_session(owner, options, args, ray=None) -> RunSession | None:
    """This process's view of the run. Every process reaches the broadcast of the run id, whatever
    failed before it: a process missing from a collective would hang the others. ``ray``: this
    process as a Ray Train worker (``_ray.join``): the trial's run, ranks by Ray node."""
    local_rank, node = args.local_process_index, node_rank(args)
    owner_args = {}
    if ray is not None:
        options, local_rank, node = ray.options, ray.local_rank, ray.node_rank
        owner_args = {"run_id": ray.run_id, "resume": True}
    session = run_id = None
    if args.process_index == 0:
        try:
            opts = options
            if opts.run_name is None and isinstance(getattr(args, "run_name", None), str) and args.run_name:
                # the name HF gives W&B, MLflow... (its default is output_dir, which can be longer than
                # a run name or not UTF-8: stored cut and escaped rather than refused)
                opts = dataclasses.replace(opts, run_name=storable(args.run_name, MAX_RUN_NAME))
            session = RunSession(
                opts, "hf", global_rank=0, local_rank=local_rank, node_rank=node, **owner_args
            )
            run_id = session.run_id
        except Exception as exc:
            warn_once(owner, "on_train_begin", exc)
    if args.world_size > 1:
        from accelerate.utils import broadcast_object_list

        run_id = broadcast_object_list([run_id], from_process=0)[0]
    if session is None and run_id is not None:
        session = RunSession(
            options,
            "hf",
            global_rank=args.process_index,
            local_rank=local_rank,
            node_rank=node,
            run_id=run_id,
        )
    return session


def node_rank(args) -> int:
    for var in ("GROUP_RANK", "NODE_RANK"):  # torchrun, then accelerate/Lightning-style launchers
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    return args.process_index // int(local) if local.isdigit() and int(local) > 0 else 0


def given(kw: dict, name: str, default):
    """``kw[name]``, or ``default`` where the hook was handed none."""
    value = kw.get(name)
    return default if value is None else value


def _plain(value):
    return getattr(value, "value", value)  # HF's str enums (IntervalStrategy...) as their strings
