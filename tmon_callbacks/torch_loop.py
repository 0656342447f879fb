"""A plain PyTorch loop (or 🤗 Accelerate, or any hand-written loop): ``tmon_core.track()``.

>>> import tmon_core
>>> with tmon_core.track(optimizer=opt, model=model, scheduler=sched, config={"batch_size": 64}) as t:  # doctest: +SKIP
...     for epoch in range(3):
...         for x, y in t.batches(loader):
...             loss = F.nll_loss(model(x), y); loss.backward(); opt.step(); sched.step(); opt.zero_grad()
...             t.step(loss=loss)
...         t.log({"val_loss": evaluate(model)})
...         if t.should_stop:
...             break

Where in the loop → what tmon records (the same names as the framework callbacks):

==============================  ===========================================================
``track(...)``                   opens the run (framework ``pytorch``) and the hardware sampler;
                                 ``train_start``; config: model size and dtypes, optimizers,
                                 schedulers, precision, device, your ``config`` (stored as
                                 ``hparams``; ``batch_size``, ``num_workers``, ``max_grad_norm``...
                                 in it are what the report's advice starts from), Accelerate's
                                 mixed precision, accumulation and processes
``optimizer.step()``             (a step pre-hook on each optimizer) lr, momentum (SGD momentum
                                 or Adam's beta1) and weight decay of every param group, read just
                                 before the step, so they are what the step used even when the
                                 scheduler moves them before ``t.step()``; ``grad_norm`` with
                                 ``log_grad_norm=True`` (after unscaling and any clipping)
``t.batches(loader)``            one epoch: ``epoch_start``/``epoch_end``; ``data_time`` (seconds
                                 waiting for each batch); the loader's batch size and workers
``t.step(loss=..., **values)``   one optimizer step: ``loss`` and your values (tensors ride
                                 along, never synced), those optimizer values, ``step_time``
                                 (batch handed out → ``t.step()``; without ``t.batches``, the time
                                 since the previous ``t.step()``), ``data_time``, ``epoch``; then
                                 the control decisions due (one comparison when none is)
``t.log({...})``                 your values at the step last done (validation, test...)
``t.checkpoint(path, ...)``      a file you saved: ``checkpoint`` row and event (size, step,
                                 epoch, monitored value); without ``path`` tmon saves one
leaving the ``with`` block       ``train_end`` with its reason; status ``completed``; ``failed`` on
                                 an exception (``exception``/``oom`` event, re-raised),
                                 ``interrupted`` on KeyboardInterrupt; the report (``report="auto"``)
``t.log({...})`` after it        evaluation after the fit (a final test): ``evaluation_start``, the
                                 values at the last step, ``evaluation_end``; status unchanged
==============================  ===========================================================

Steps count ``t.step()`` calls from 0, as Lightning's do: call it once per optimizer step (with
gradient accumulation, when the optimizer stepped, e.g. ``if accelerator.sync_gradients``).

Control (``schedule=``, ``presets=``, ``params=``, ``control=``; see ``tmon_core.control``) is
applied at the end of ``t.step()`` and when ``t.batches`` starts an epoch, between two optimizer
steps, on the optimizer and scheduler given to ``track`` (Accelerate's wrappers are looked
through), so ``At(step=k, lr=...)`` is the lr recorded at step ``k``:

- parameters: ``_torch.apply_changes`` (``scale`` rescales the schedulers' bases; ``pin`` holds).
- checkpoint: ``torch.save`` of ``{"model_state_dict", "optimizer_state_dict", "step", "epoch"}``
  (PyTorch's own checkpoint layout) to ``checkpoint_dir/tmon-<run>-step=<k>.pt``; needs ``model``.
- rollback: model weights and optimizer state from a recorded checkpoint, checked before anything
  is loaded: a state dict, a dict holding ``model_state_dict``/``model``/``state_dict`` (and
  ``optimizer_state_dict``/``optimizer``), a ``.safetensors`` file, or an ``accelerator.save_state``
  directory (``model.safetensors``/``pytorch_model.bin`` and ``optimizer.bin``); read with
  ``weights_only=True`` or safetensors, nothing unpickled. Hyperparameters in effect stay.
- stop: ``t.should_stop`` becomes True and ``t.batches`` ends the epoch; the loop breaks out of
  its epochs on it. Status ``completed`` with a ``stopped`` event, ``train_end`` reason
  ``stop_request``.

Under ``torchrun``/``accelerate launch`` (``torch.distributed`` initialized when ``track`` is
called) process 0 records, each node's local process 0 samples its hardware into the same run,
and every process applies the same control decisions at the same step (``_ddp.DecisionLink``).
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from typing import Any

import torch

from tmon_core import events as ev
from tmon_core.control import ROLLBACK as ROLLBACK_EVENT
from tmon_core.control import STOPPED as STOPPED_EVENT
from tmon_core.control import Rollback, SaveCheckpoint, SetParams, Stop
from tmon_core.keys import DATA_TIME, EPOCH, GRAD_NORM, LOSS, LR, MOMENTUM, STEP_TIME, WEIGHT_DECAY, group_key
from tmon_core.store.writer import json_safe

from . import _torch
from ._base import Rejected, RunSession, apply_decisions, make_options, unwatch, warn_once, watch_uncaught

_perf = time.perf_counter

#: keys of ``config`` that are settings the report's advice starts from, lifted to the top of the
#: run's config under the names every adapter stores (the whole dict is kept as ``hparams``)
_LIFTED = {"batch_size": "batch_size", "num_workers": "num_workers", "pin_memory": "pin_memory",
           "persistent_workers": "persistent_workers", "prefetch_factor": "prefetch_factor",
           "precision": "precision", "gradient_accumulation_steps": "accumulate_grad_batches",
           "accumulate_grad_batches": "accumulate_grad_batches", "max_grad_norm": "gradient_clip_val",
           "clip_grad_norm": "gradient_clip_val", "gradient_clip_val": "gradient_clip_val",
           "gradient_checkpointing": "gradient_checkpointing", "epochs": "max_epochs", "max_epochs": "max_epochs",
           "max_steps": "max_steps"}

def _as_list(value) -> list:
    """One object or a list/tuple of them, as a list (None: empty)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_scheduler(obj) -> bool:
    inner = getattr(obj, "scheduler", obj)  # accelerate's AcceleratedScheduler
    return callable(getattr(inner, "step", None)) and hasattr(inner, "optimizer")


class Tracker:
    """One training run of a hand-written loop. Made by ``tmon_core.track(...)``; see the module
    docstring for what each call records. A context manager; without ``with``, call ``finish()``
    (a tracker still open when the interpreter exits is finished then, like ``wandb``'s runs)."""

    def __init__(self, optimizer=None, model=None, scheduler=None, *, config: dict | None = None,
                 store: str | os.PathLike | None = None, total_steps: int | None = None,
                 checkpoint_dir: str | os.PathLike = "tmon-checkpoints", **options: Any):
        self.options = make_options(store, options, owner="tmon_core.track")
        self._wrapped = _as_list(optimizer)
        self._optimizers = [_torch.unwrap_optimizer(o) for o in self._wrapped]
        for o in self._optimizers:
            if not isinstance(o, torch.optim.Optimizer):
                raise ValueError(f"optimizer must be a torch.optim.Optimizer (or a list of them, or accelerate's "
                                 f"wrapper of one), received {type(o).__name__}: {o!r:.80}")
        if model is not None and not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, received {type(model).__name__}: {model!r:.80}")
        self._schedulers = [getattr(s, "scheduler", s) for s in _as_list(scheduler)]
        for s in self._schedulers:
            if not _is_scheduler(s):
                raise ValueError(f"scheduler must be a torch LR scheduler (with .step() and .optimizer), received "
                                 f"{type(s).__name__}: {s!r:.80}")
        if config is not None and not isinstance(config, dict):
            raise ValueError(f"config must be a dict of your settings, received {type(config).__name__}: {config!r:.80}")
        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                        or total_steps < 1):
            raise ValueError(f"total_steps must be a positive int or None, received total_steps={total_steps!r}")
        if not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise ValueError(f"checkpoint_dir must be a path, received checkpoint_dir={checkpoint_dir!r}")
        self.model = model
        self.checkpoint_dir = os.fspath(checkpoint_dir)
        self._user_config = dict(config or {})
        self._total_steps = total_steps
        self.should_stop = False  # set by a stop request (or by you): t.batches ends the epoch on it
        self._stop_requested = False
        self._step = 0
        self._epoch: int | None = None  # the epoch of t.batches in progress (None before the first)
        self._epochs = 0
        self._epoch_complete = None  # whether the last t.batches ran its loader to the end
        self._t_batch: float | None = None
        self._data_time = 0.0
        self._opt_values: dict | None = None
        self._read_optimizers = _OptimizerValues(self._optimizers)
        self._grad_norm_wanted = self.options.log_grad_norm
        self._grad_norm = None
        self._hooks: list = []
        self._loader_seen = False
        self.session: RunSession | None = None
        self.run_id: str | None = None
        self._rec = self._ctl = self._link = None
        self._ended = False
        self._open()
        self._t_last = _perf()

    # ------------------------------------------------------------ the run
    def _open(self) -> None:
        rank, local_rank, node_rank, world = _ranks()
        dist = torch.distributed
        distributed = world > 1 and dist.is_available() and dist.is_initialized()
        session = run_id = None
        if rank == 0:
            try:
                session = RunSession(self.options, "pytorch", global_rank=0, local_rank=local_rank,
                                     node_rank=node_rank)
                run_id = session.run_id
            except Exception as exc:  # the loop trains unrecorded rather than not at all; said once
                warn_once(self, "track", exc)
        if distributed:
            from ._ddp import DecisionLink

            # tmon's own gloo group: a GPU run never syncs its device for this, and every process
            # reaches this collective whatever happened above
            box = [run_id]
            dist.broadcast_object_list(box, src=0, group=_gloo_group())
            run_id = box[0]
            if session is None and run_id is not None:
                session = RunSession(self.options, "pytorch", global_rank=rank, local_rank=local_rank,
                                     node_rank=node_rank, run_id=run_id)
            self._link = DecisionLink(self.options)
        # (several processes but no process group to share the run id: only process 0 records)
        if session is not None and (distributed or rank == 0):
            self.session, self.run_id = session, run_id
            self._rec = session.recorder if session.writes_metrics else None
            self._ctl = session.controller
            if self._ctl is not None and self._optimizers:
                opts = self._optimizers
                self._ctl.get_value = lambda name, group: _torch.read_param(opts, name, group)
            for opt in self._optimizers:
                self._hooks.append(opt.register_step_pre_hook(self._before_optimizer_step))
            if self._rec is not None:
                try:
                    self._rec.update_config(**self._config(world))
                except Exception as exc:  # a config tmon cannot read costs the config, not the run
                    warn_once(self, "config", exc)
                if self._total_steps:
                    self._rec.update_run(total_steps=self._total_steps)
                session.event(ev.TRAIN_START, step=0)
                watch_uncaught(session, lambda: self._step)
            _open_trackers.add(self)
        self._apply_due(0)  # At(step=0, ...) applies to the first optimizer step (every process comes here)

    def _config(self, world: int) -> dict:
        cfg: dict[str, Any] = {
            "framework": "pytorch",
            "framework_version": torch.__version__,
            "optimizers": _torch.optimizer_summary(self._optimizers),
            "lr_schedulers": [{"class": type(s).__name__} for s in self._schedulers],
            "world_size": world,
            "checkpoint_dir": os.path.abspath(self.checkpoint_dir),
            "control": self._ctl.describe() if self._ctl is not None else None,
            "hparams": json_safe(self._user_config),
        }
        precision = None
        if self.model is not None:
            cfg.update(_torch.model_summary(self.model))
            first = next(self.model.parameters(), None)
            if first is not None:
                cfg["device"] = str(first.device)
                cfg["accelerator"] = first.device.type
                if first.dtype in (torch.bfloat16, torch.float16):
                    precision = "bf16-true" if first.dtype == torch.bfloat16 else "16-true"
        accelerated = next((o for o in self._wrapped if type(o).__module__.startswith("accelerate")), None)
        if accelerated is not None:
            state = getattr(accelerated, "accelerator_state", None)
            mixed = str(getattr(state, "mixed_precision", "no") or "no")
            cfg.update(launcher="accelerate", mixed_precision=mixed,
                       num_processes=getattr(state, "num_processes", world))
            steps = getattr(getattr(accelerated, "gradient_state", None), "num_steps", None)
            if isinstance(steps, int):
                cfg["accumulate_grad_batches"] = steps
            if mixed in ("bf16", "fp16"):
                precision = "bf16-mixed" if mixed == "bf16" else "16-mixed"
        for key, name in _LIFTED.items():
            value = self._user_config.get(key)
            if isinstance(value, (bool, int, float, str)) and name not in cfg:
                cfg[name] = value
        cfg.setdefault("precision", precision or "32-true")
        return cfg

    @property
    def step_count(self) -> int:
        """The number of ``t.step()`` calls so far: the step the next one records at."""
        return self._step

    @property
    def epoch(self) -> int | None:
        """The epoch of the ``t.batches`` in progress (0 for the first), None before the first."""
        return self._epoch

    @property
    def report(self):
        """The run's ``tmon_core.Report`` once it ended (``report="auto"``), else None."""
        return self.session.report if self.session is not None else None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            self.finish()
        else:
            self._fail(exc)
        return False  # the loop's exception goes on to the caller

    def finish(self) -> None:
        """End the run: ``train_end`` (with why the loop ended), status ``completed``, the report."""
        if self.session is None or self.session.ended:
            self._detach()
            return
        try:
            recording = self._rec is not None
            self._detach()
            if recording:
                self.session.event(ev.TRAIN_END, step=self._step, data=self._end_data(self._end_reason()))
        finally:
            unwatch(self.session)
            self.session.end(ev.COMPLETED)

    def _fail(self, exc: BaseException) -> None:
        """End the run because ``exc`` left the loop; never raises (the user's exception matters)."""
        session = self.session
        try:
            self._detach()
            if session is None or session.ended:
                return
            unwatch(session)
            session.fail(exc, self._step, record_train_end=True)
        except Exception:
            pass

    def _end_reason(self) -> str:
        if self._stop_requested:
            return ev.END_STOP_REQUEST
        if self.should_stop:
            return ev.END_SHOULD_STOP
        if self._total_steps and self._step >= self._total_steps:
            return ev.END_MAX_STEPS
        if self._epoch_complete is False:  # the loop left an epoch before its loader ran out
            return ev.END_SHOULD_STOP
        return ev.END_MAX_EPOCHS if self._epoch_complete else ev.END_MAX_STEPS

    def _end_data(self, reason: str) -> dict:
        return {"reason": reason, "steps": self._step, "epochs": self._epochs}

    def _detach(self) -> None:
        """Stop recording and steering: hooks off; a later ``t.step()`` warns (once) that the run has
        ended instead of putting values where nothing will write them (``t.log()`` records an
        evaluation after the fit)."""
        _open_trackers.discard(self)
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._ended = self._ended or self._rec is not None
        self._rec = self._ctl = self._link = None

    # ------------------------------------------------------------ per step (the hot path)
    def _before_optimizer_step(self, optimizer, args, kwargs) -> None:
        """Read what this optimizer step uses, before a scheduler moves it (torch's step pre-hook)."""
        if self._rec is None:
            return
        try:
            self._opt_values = self._read_optimizers()
            if self._grad_norm_wanted and self._grad_norm is None:
                params = (self.model.parameters() if self.model is not None
                          else [p for o in self._optimizers for g in o.param_groups for p in g["params"]])
                self._grad_norm = _torch.grad_norm(params)
        except Exception as exc:
            warn_once(self, "optimizer_step", exc)

    def step(self, loss=None, **values: Any) -> None:
        """Record one optimizer step: ``loss`` and ``values`` (numbers, numpy scalars or one-element
        tensors: never synced here), with the optimizer's values, timings and epoch; then apply the
        control decisions due before the next step. Call it after ``optimizer.step()``."""
        now = _perf()
        step = self._step
        rec = self._rec
        if rec is not None:
            record = self._opt_values
            if record is None:  # no optimizer step seen since the last t.step(): read them now
                record = self._read_optimizers()
            else:
                self._opt_values = None
            if loss is not None:
                record[LOSS] = loss
            if values:
                record.update(values)
            t0 = self._t_batch
            if t0 is not None:
                self._t_batch = None
                record[STEP_TIME] = now - t0
                record[DATA_TIME] = self._data_time
            else:
                record[STEP_TIME] = now - self._t_last
            if self._grad_norm is not None:
                record[GRAD_NORM] = self._grad_norm
                self._grad_norm = None
            if self._epoch is not None:
                record[EPOCH] = self._epoch
            try:
                rec.log(record, step)
            except (TypeError, ValueError) as exc:  # one of your values: the others are kept, and it is named
                self._log_valid(record, step, exc)
        elif self._ended:
            self._warn_ended("step")
            return
        self._step = step = step + 1
        if self._link is not None:  # several processes: process 0 decides, every process applies at this step
            self._exchange(step)
        elif self._ctl is not None and step >= self._ctl.next_step:  # the hot path's one check
            self._apply(self._ctl.due(step), step)
        self._t_last = now  # without t.batches, step_time is the time from one t.step() to the next

    def _evaluate(self, values: dict, step: int | None) -> None:
        """``t.log`` after the run ended (a final test of the trained model): recorded into the ended
        run as one evaluation, between ``evaluation_start`` and ``evaluation_end`` (stage ``test``),
        at the last training step by default; the run's status stays as the loop left it."""
        session = self.session
        session.begin_evaluation("test", step)
        session.log_evaluation(values, step)
        session.end_evaluation()

    def _warn_ended(self, call: str) -> None:
        warn_once(self, call, RuntimeError(f"run {self.run_id} has ended (the track() block was left or finish() "
                                           f"called): t.{call}() records nothing more; start another track() "
                                           f"(t.log() still records an evaluation of the trained model)"))

    def _log_valid(self, record: dict, step: int, exc: Exception, wall_time: float | None = None) -> None:
        """Record the values tmon can take and warn, once per key, about each one it cannot."""
        from tmon_core.keys import check_key
        from tmon_core.recorder import _prepare_value

        good = {}
        for k, v in record.items():
            try:
                check_key(k)
                _prepare_value(k, v)
                good[k] = v
            except (TypeError, ValueError) as bad:
                warn_once(self, f"log {k!r:.60}", bad)
        if good:
            try:
                self._rec.log(good, step, wall_time=wall_time)
            except (TypeError, ValueError) as again:
                warn_once(self, "log", again)

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        """Record ``values`` (your names) at ``step``: by default the step last done (0 before any),
        where a validation after an epoch belongs."""
        if not isinstance(values, dict):
            raise ValueError(f"t.log takes a dict of name -> value, received {type(values).__name__}: {values!r:.80}")
        if self._rec is None:
            if self._ended and values:
                self._evaluate(values, step)
            return
        if not values:
            return
        if step is None:
            at = max(self._step - 1, 0)
        elif isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int (or None: the step last done), received step={step!r}")
        else:
            at = step
        try:
            self._rec.log(values, at)
        except (TypeError, ValueError) as exc:  # one of your values: the others are kept, and it is named
            self._log_valid(dict(values), at, exc)

    def batches(self, loader):
        """Iterate ``loader`` as one epoch: ``epoch_start``/``epoch_end`` events, ``data_time`` per batch,
        the loader's settings in the run's config; stops handing out batches once ``should_stop``."""
        if self.should_stop:
            return
        epoch = self._epoch = self._epochs
        self._epochs += 1
        self._epoch_complete = False
        session = self.session
        try:
            if not self._loader_seen:
                self._loader_seen = True
                self._describe_loader(loader)
            if self._ctl is not None:
                self._ctl.on_epoch_start(epoch, self._step)  # At(epoch=...) items become due at this step
            if self._rec is not None:
                session.event(ev.EPOCH_START, step=self._step, epoch=epoch)
        except Exception as exc:
            warn_once(self, "batches", exc)
        self._apply_due(self._step)  # (every process of a distributed run comes here: outside the try)
        perf = _perf
        it = iter(loader)
        try:
            while not self.should_stop:
                t0 = perf()
                try:
                    batch = next(it)
                except StopIteration:
                    self._epoch_complete = True
                    break
                t1 = perf()
                self._data_time = t1 - t0
                self._t_batch = t1
                yield batch
        finally:
            self._t_batch = None
            if self._rec is not None and not session.ended:
                session.event(ev.EPOCH_END, step=self._step, epoch=epoch, completed=self._epoch_complete)

    def _describe_loader(self, loader) -> None:
        if self._rec is None:
            return
        cfg = {k: v for k, v in _torch.dataloader_config(loader).items() if v is not None}
        if "batch_size" in cfg and self._user_config.get("batch_size") is not None:
            del cfg["batch_size"]  # the user's own word wins (a loader may batch by sampler)
        if cfg:
            self._rec.update_config(**cfg)
        epochs = self._user_config.get("epochs", self._user_config.get("max_epochs"))
        per_epoch = cfg.get("batches_per_epoch")
        if not self._total_steps and isinstance(epochs, int) and isinstance(per_epoch, int) and epochs > 0:
            self._rec.update_run(total_steps=epochs * per_epoch)

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self, path: str | os.PathLike | None = None, *, monitor: str | None = None, monitor_value=None,
                   description: str | None = None, tags: list[str] | None = None) -> str | None:
        """Record a checkpoint file you saved at ``path`` (with the metric it was chosen by), or, without
        ``path``, save model and optimizer state into ``checkpoint_dir`` and record that. Returns the path."""
        if self.session is None:
            return None
        if path is None:
            try:
                path = self._save(max(self._step - 1, 0), source="t.checkpoint", description=description, tags=tags)
            except Rejected as exc:
                raise ValueError(str(exc)) from None
            return path
        path = os.path.abspath(os.fspath(path))
        if not os.path.exists(path):
            warn_once(self, f"checkpoint {path}", FileNotFoundError(f"checkpoint {path} does not exist: not recorded"))
            return None
        if self._rec is not None:
            self._rec.checkpoint(path, step=max(self._step - 1, 0), epoch=self._epoch, monitor=monitor,
                                 monitor_value=monitor_value, source="t.checkpoint", description=description, tags=tags)
        return path

    def _save(self, step: int, *, source: str, description: str | None = None, tags=None) -> str | None:
        if self.model is None:
            raise Rejected("track() was given no model: pass model= so tmon can save checkpoints")
        path = os.path.abspath(os.path.join(self.checkpoint_dir, f"tmon-{self.run_id}-step={step}.pt"))
        if self._rec is None:
            return path  # another process of the run writes the file
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        opt_states = [o.state_dict() for o in self._optimizers]
        state = {"model_state_dict": _unwrap_model(self.model).state_dict(),
                 "optimizer_state_dict": opt_states[0] if len(opt_states) == 1 else opt_states,
                 "step": step, "epoch": self._epoch}
        if self._schedulers:
            state["scheduler_state_dict"] = [s.state_dict() for s in self._schedulers]
        torch.save(state, path)
        self._rec.checkpoint(path, step=step, epoch=self._epoch, source=source, description=description, tags=tags)
        return path

    # ------------------------------------------------------------ control decisions
    def _apply_due(self, step: int) -> None:
        """The decisions due before the optimizer step recorded as ``step`` (off the per-step path:
        at the start and at each epoch's start; every process calls it at the same point)."""
        if self._link is not None:
            self._exchange(step)
        elif self._ctl is not None and step >= self._ctl.next_step:
            try:
                self._apply(self._ctl.due(step), step)
            except Exception as exc:
                warn_once(self, "control", exc)

    def _exchange(self, step: int) -> None:
        try:
            decisions = self._link.exchange(self._ctl, step)
        except Exception as exc:
            warn_once(self, "control", exc)
            return
        if decisions:
            self._apply(decisions, step)

    def _apply(self, decisions, step: int) -> None:
        apply_decisions(self._ctl, decisions, step, lambda d: self._apply_one(d, step))

    def _apply_one(self, d, step: int) -> dict:
        if isinstance(d, SetParams):
            if not self._optimizers and any(c.custom is None for c in d.changes):
                raise Rejected("track() was given no optimizer: pass optimizer= to steer its parameters")
            old, new = _torch.apply_changes(self._optimizers, self._schedulers, d.changes, d.mode)
            return {"old": old, "new": new}
        if isinstance(d, SaveCheckpoint):
            path = self._save(step, source="manual", description=d.description, tags=d.tags)
            return {"new": {"path": path}, "reason": d.description}
        if isinstance(d, Rollback):
            if self.model is None:
                raise Rejected("track() was given no model: pass model= so tmon can roll it back")
            model_state, opt_states = _torch.read_loop_checkpoint(d.path)
            if opt_states is not None:
                _torch.check_optimizer_states(self._optimizers, opt_states)
            _torch.load_model_state(_unwrap_model(self.model), model_state, d.path)
            if opt_states is not None:
                _torch.restore_optimizer_states(self._optimizers, opt_states)
            return {"old": {"step": step}, "new": {"checkpoint_id": d.checkpoint_id, "path": d.path,
                                                     "optimizer_restored": opt_states is not None},
                    "event": ROLLBACK_EVENT, "reason": f"rolled back to checkpoint {d.checkpoint_id}"}
        if isinstance(d, Stop):
            self.should_stop = self._stop_requested = True
            return {"event": STOPPED_EVENT, "reason": d.reason or "stop requested"}
        raise Rejected(f"unknown decision {type(d).__name__}")


class _OptimizerValues:
    """``_torch.optimizer_values`` for a fixed list of optimizers, with each param group's keys
    (``lr``, ``lr/pg1``, ``momentum/opt1/pg0``...) worked out once rather than at every step: the
    same dict, a third of the time. A group added later (``add_param_group``) gets its keys then."""

    def __init__(self, optimizers: list):
        self.optimizers = optimizers
        self.layout: list = []
        self._build()

    def _build(self) -> None:
        self.layout = [(opt, [tuple(group_key(base, oi, gi) for base in (LR, MOMENTUM, WEIGHT_DECAY))
                              for gi in range(len(opt.param_groups))])
                       for oi, opt in enumerate(self.optimizers)]

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


def _unwrap_model(model):
    """The module whose state dict has the plain keys: DDP and DataParallel hold it as ``.module``."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def _ranks() -> tuple[int, int, int, int]:
    """(global rank, local rank, node rank, world size) of this process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0) or 0), int(os.environ.get("WORLD_SIZE", 1) or 1)
    local = int(os.environ.get("LOCAL_RANK", rank) or 0)
    node = next((int(os.environ[v]) for v in ("GROUP_RANK", "NODE_RANK") if os.environ.get(v, "").isdigit()), 0)
    return rank, local, node, world


_gloo = None


def _gloo_group():
    """One gloo process group of tmon's for sharing the run id (made once: every process makes it)."""
    global _gloo
    if _gloo is None:
        _gloo = torch.distributed.new_group(backend="gloo")
    return _gloo


# trackers used without ``with`` and not finished: finished when the interpreter exits (registered
# after the recorder's own exit hook, so it runs first and the run ends completed, not interrupted)
_open_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()


@atexit.register
def _finish_open() -> None:
    for t in list(_open_trackers):
        try:
            t.finish()
        except Exception:
            pass
