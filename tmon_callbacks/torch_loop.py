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
  directory (``model.safetensors``/``pytorch_model.bin`` and ``optimizer.bin``); read by
  ``tmon_core.checkpoints.read_loop_checkpoint`` with ``weights_only=True`` or safetensors, nothing
  unpickled. Hyperparameters in effect stay.
- stop: ``t.should_stop`` becomes True and ``t.batches`` ends the epoch; the loop breaks out of
  its epochs on it. Status ``completed`` with a ``stopped`` event, ``train_end`` reason
  ``stop_request``.

Guard (``guard=``, ``tmon_core.guard``; needs ``model`` and ``optimizer``): the optimizer's step
pre-hook checks the step's gradients (one device sync; the loss is not known before ``t.step()``,
and a NaN loss makes NaN gradients) and drops them when they are not finite, so the update leaves
the weights as they were; the guard's snapshots, rollbacks and stop apply at ``t.step()`` with the
other decisions (a stop: ``t.should_stop``). Step numbers are ``t.step()``'s.

Under ``torchrun``/``accelerate launch`` (``torch.distributed`` initialized when ``track`` is
called) process 0 records, each node's local process 0 samples its hardware into the same run,
and every process applies the same control decisions at the same step (``_ddp.DecisionLink``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from tmon_core import events as ev
from tmon_core.guard import Guard
from tmon_core.keys import DATA_TIME, EPOCH, GRAD_NORM, LOSS, STEP_TIME
from tmon_core.session import RunSession

from . import _loop, _torch
from ._adapter import Rejected, warn_once
from ._guard_torch import TorchGuard
from ._loop_control import LoopControl
from ._options import make_options
from ._workarounds.python import unwatch, watch_uncaught

_perf = time.perf_counter


class Tracker(LoopControl):
    """One training run of a hand-written loop. Made by ``tmon_core.track(...)``; see the module
    docstring for what each call records. A context manager; without ``with``, call ``finish()``
    (a tracker still open when the interpreter exits is finished then, like ``wandb``'s runs)."""

    def __init__(
        self,
        optimizer=None,
        model=None,
        scheduler=None,
        *,
        config: dict | None = None,
        store: str | os.PathLike | None = None,
        total_steps: int | None = None,
        checkpoint_dir: str | os.PathLike = "tmon-checkpoints",
        **options: Any,
    ):
        self.options = make_options(store, options, owner="tmon_core.track")
        self._wrapped, self._optimizers, self._schedulers = _loop.check_arguments(
            optimizer, model, scheduler, config, total_steps, checkpoint_dir
        )
        self.model = model
        guard = Guard.from_option(self.options.guard)
        if guard is not None and (model is None or not self._optimizers):
            raise ValueError(
                f"track(guard={self.options.guard!r}) needs model= and optimizer=: the guard drops a "
                "non-finite step's gradients before the optimizer's update and snapshots the model "
                "and optimizer for a rollback"
            )
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
        self._read_optimizers = _torch.OptimizerValues(self._optimizers)
        self._grad_norm_wanted = self.options.log_grad_norm
        self._grad_norm = None
        self._hooks: list = []
        self._loader_seen = False
        self.session: RunSession | None = None
        self.run_id: str | None = None
        self._rec = self._ctl = self._link = None
        self._ended = False
        self._guard_opt, self._guard, self._guard_checked = guard, None, False
        self._open()
        self._t_last = _perf()

    # ------------------------------------------------------------ the run
    def _open(self) -> None:
        session, run_id, self._link, world = _loop.open_session(self, self.options)
        if session is not None:
            self.session, self.run_id = session, run_id
            self._rec = session.recorder if session.writes_metrics else None
            self._ctl = session.controller
            if self._ctl is not None and self._optimizers:
                opts = self._optimizers
                self._ctl.get_value = lambda name, group: _torch.read_param(opts, name, group)
            for opt in self._optimizers:
                self._hooks.append(opt.register_step_pre_hook(self._before_optimizer_step))
            if self._guard_opt is not None:  # every process: each skips, snapshots and restores its own
                self._guard = TorchGuard(
                    self._guard_opt, self._rec, self._ctl, self.model, self._optimizers, self._schedulers, 0
                )
            if self._rec is not None:
                try:
                    self._rec.update_config(
                        **_loop.run_config(
                            world=world,
                            wrapped=self._wrapped,
                            optimizers=self._optimizers,
                            schedulers=self._schedulers,
                            model=self.model,
                            checkpoint_dir=self.checkpoint_dir,
                            user_config=self._user_config,
                            control=self._ctl.describe() if self._ctl is not None else None,
                        )
                    )
                except Exception as exc:  # a config tmon cannot read costs the config, not the run
                    warn_once(self, "config", exc)
                if self._total_steps:
                    self._rec.update_run(total_steps=self._total_steps)
                session.event(ev.TRAIN_START, step=0)
                watch_uncaught(session, lambda: self._step)
            _loop.open_trackers.add(self)
        self._apply_due(0)  # At(step=0, ...) applies to the first optimizer step (every process comes here)

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
                self.session.event(
                    ev.TRAIN_END,
                    step=self._step,
                    data={"reason": self._end_reason(), "steps": self._step, "epochs": self._epochs},
                )
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
        return _loop.end_reason(
            self._stop_requested, self.should_stop, self._total_steps, self._step, self._epoch_complete
        )

    def _detach(self) -> None:
        """Stop recording and steering: hooks off; a later ``t.step()`` warns (once) that the run has
        ended instead of putting values where nothing will write them (``t.log()`` records an
        evaluation after the fit)."""
        _loop.open_trackers.discard(self)
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._guard is not None:
            self._guard.close()
            self._guard = None
        self._ended = self._ended or self._rec is not None
        if self._link is not None:  # (every process detaches at the end, after its last exchange)
            self._link.close()
        self._rec = self._ctl = self._link = None

    # ------------------------------------------------------------ per step (the hot path)
    def _before_optimizer_step(self, optimizer, args, kwargs) -> None:
        """Read what this optimizer step uses, before a scheduler moves it (torch's step pre-hook);
        with a guard, check the step's gradients first (once a step, over every optimizer's)."""
        if self._guard is not None and not self._guard_checked:
            self._guard_checked = True
            try:
                params = [p for o in self._optimizers for g in o.param_groups for p in g["params"]]
                self._guard.check(self._step, params, self._optimizers)
            except Exception as exc:
                warn_once(self, "guard", exc)
        if self._rec is None:
            return
        try:
            self._opt_values = self._read_optimizers()
            if self._grad_norm_wanted and self._grad_norm is None and self._guard is not None:
                self._grad_norm = self._guard.grad_norm  # the check's (None after a skip)
            elif self._grad_norm_wanted and self._grad_norm is None:
                params = (
                    self.model.parameters()
                    if self.model is not None
                    else [p for o in self._optimizers for g in o.param_groups for p in g["params"]]
                )
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
            except (TypeError, ValueError):  # one of your values: the others are kept, and it is named
                _loop.log_valid(self, rec, record, step)
        elif self._ended:
            self._warn_ended("step")
            return
        if self._guard is not None:
            self._guard_checked = False
            try:
                self._guard.step_end(step)  # what it decides applies right below, before the next update
            except Exception as exc:
                warn_once(self, "guard", exc)
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
        warn_once(
            self,
            call,
            RuntimeError(
                f"run {self.run_id} has ended (the track() block was left or finish() "
                f"called): t.{call}() records nothing more; start another track() "
                f"(t.log() still records an evaluation of the trained model)"
            ),
        )

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        """Record ``values`` (your names) at ``step``: by default the step last done (0 before any),
        where a validation after an epoch belongs."""
        if not isinstance(values, dict):
            raise ValueError(
                f"t.log takes a dict of name -> value, received {type(values).__name__}: {values!r:.80}"
            )
        if self._rec is None:
            if self._ended and values:
                self._evaluate(values, step)
            return
        if not values:
            return
        if step is None:
            at = max(self._step - 1, 0)
        elif isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(
                f"step must be a non-negative int (or None: the step last done), received step={step!r}"
            )
        else:
            at = step
        try:
            self._rec.log(values, at)
        except (TypeError, ValueError):  # one of your values: the others are kept, and it is named
            _loop.log_valid(self, self._rec, dict(values), at)

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
                if self._rec is not None:
                    _loop.describe_loader(self._rec, loader, self._user_config, self._total_steps)
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

    # ------------------------------------------------------------ checkpoints
    def checkpoint(
        self,
        path: str | os.PathLike | None = None,
        *,
        monitor: str | None = None,
        monitor_value=None,
        description: str | None = None,
        tags: list[str] | None = None,
    ) -> str | None:
        """Record a checkpoint file you saved at ``path`` (with the metric it was chosen by), or, without
        ``path``, save model and optimizer state into ``checkpoint_dir`` and record that. Returns the path."""
        if self.session is None:
            return None
        if path is None:
            try:
                path = self._save(
                    max(self._step - 1, 0), source="t.checkpoint", description=description, tags=tags
                )
            except Rejected as exc:
                raise ValueError(str(exc)) from None
            return path
        path = os.path.abspath(os.fspath(path))
        if not os.path.exists(path):
            warn_once(
                self,
                f"checkpoint {path}",
                FileNotFoundError(f"checkpoint {path} does not exist: not recorded"),
            )
            return None
        if self._rec is not None:
            self._rec.checkpoint(
                path,
                step=max(self._step - 1, 0),
                epoch=self._epoch,
                monitor=monitor,
                monitor_value=monitor_value,
                source="t.checkpoint",
                description=description,
                tags=tags,
            )
        return path
