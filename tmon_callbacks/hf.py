"""``TMonCallback`` for the Hugging Face ``transformers.Trainer``.

>>> from tmon_callbacks.hf import TMonCallback
>>> trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[TMonCallback()])  # doctest: +SKIP

HF hook → what tmon records:

==============================  ===========================================================
``on_init_end``                  finds the ``Trainer`` that holds this callback and gives it a
                                 ``train`` that reports an exception escaping it (OOM included):
                                 the run ends failed, though ``TrainerCallback`` has no exception
                                 hook (the trainer's class becomes a same-named subclass adding
                                 only that ``train`` and ``log_metrics``: ``_workarounds/hf.py``)
``on_train_begin``               opens the run (world process 0) and the hardware sampler (each
                                 node's local process 0); the run id is broadcast to all processes;
                                 ``train_start`` event; config: ``TrainingArguments``, the model
                                 config, batch size, gradient accumulation, gradient checkpointing,
                                 precision, dataloader workers, world size, optimizer, scheduler;
                                 ``callbacks``: HF's own evaluation, checkpoint and best-model
                                 settings (the ``Trainer`` item: save_total_limit,
                                 load_best_model_at_end, metric_for_best_model as ``monitor``/``mode``)
                                 then each callback of the trainer (``EarlyStoppingCallback``:
                                 monitor, mode, patience, threshold)
``on_optimizer_step``            lr, momentum (beta1) and weight decay of every param group, read
                                 from the optimizer right after its step, before the scheduler moves
                                 them: the values that step used
``on_step_begin``                control: applies the decisions due before this optimizer step
                                 (one comparison when none is: see Control below)
``on_step_begin/on_step_end``    every optimizer step: those values, ``step_time``, ``data_time``,
                                 ``epoch`` (fractional, as HF counts it); ``grad_norm`` from
                                 ``on_pre_optimizer_step`` with ``log_grad_norm=True``
``on_log``                       everything HF logs, under HF's names (``loss``, ``grad_norm``,
                                 ``eval_loss``, ``train_runtime``...), at its step, but the two keys
                                 tmon records every step itself (see "HF's logs" below)
``on_save``                      the checkpoint directory: step, epoch, size on disk, the metric HF
                                 tracks for ``load_best_model_at_end``; directories that
                                 ``save_total_limit`` rotates away are marked deleted. A checkpoint
                                 a control request asked for is recorded ``source="manual"`` with
                                 its description and tags, and the request resolved with its path
epoch/evaluation hooks           ``epoch_start/end`` (and ``At(epoch=...)`` schedule items);
                                 ``validation_start`` at the first prediction step of an
                                 evaluation, ``validation_end`` at ``on_evaluate``
``on_train_end``                 ``train_end`` with why the loop ended in its data (below); status
                                 completed; everything flushed
after ``train()``                ``trainer.evaluate()``: into the ended run, its status kept, at the
                                 fit's last step: ``evaluation_start`` (stage ``evaluate``) at its first
                                 prediction step, what HF logs (``eval_*``) from ``on_log``,
                                 ``evaluation_end`` at ``on_evaluate``; ``trainer.predict()`` likewise
                                 (stage ``test``, its ``test_*`` metrics from ``on_predict``: predict
                                 logs nothing). A ``trainer.log(...)`` of the user's after the fit is
                                 recorded the same way, and so is what a script adds before
                                 ``trainer.log_metrics("eval", metrics)`` (run_clm.py's ``perplexity``,
                                 ``eval_samples``): the values HF did not log already
==============================  ===========================================================

Steps are HF's ``global_step``: the number of optimizer steps done, so the first step is 1. That
is the step HF logs at, so ``lr`` and HF's ``loss`` line up. HF logs every ``logging_steps``
(500 by default) and its ``loss`` is the mean since the last log: ``TrainingArguments(
logging_steps=1)`` gives the loss of every step. ``lr`` and timings are recorded every step
regardless. HF computes ``grad_norm`` itself (before clipping) and logs it with the loss.

HF's logs: every key keeps HF's name (it is what ``trainer_state.json``'s ``log_history`` holds),
except a key that tmon records at every step itself under its cross-framework name, which is stored
once, under tmon's: ``learning_rate`` is ``lr`` (HF logs param group 0's lr of the step just done,
tmon reads every group from the optimizer at that moment: the same number, at every step instead of
every ``logging_steps``; under a ``pin`` control request tmon's is the one the optimizer used) and
``epoch`` is ``epoch``. ``grad_norm`` is HF's own unless ``log_grad_norm=True`` measures it.

Why the loop ended (``train_end``'s ``data["reason"]``, ``tmon_core.events``): ``max_steps`` or
``max_epochs`` when it reached ``state.max_steps`` (whichever of ``TrainingArguments.max_steps`` /
``num_train_epochs`` set it; a stop asked for at that last step changes nothing); else
``stop_request`` (tmon's stop), ``early_stopping`` (an ``EarlyStoppingCallback`` whose patience ran
out: ``callback``, ``monitor``, ``mode``, ``patience``, ``threshold``), ``data_exhausted`` (an epoch
found no batch: an iterable dataset ran dry), else ``should_stop`` (another callback or the user set
``control.should_training_stop``). With ``load_best_model_at_end`` the data also names the
checkpoint HF loaded (``best_model_checkpoint``, ``best_metric``).

Control (``schedule=``, ``presets=``, ``params=``, ``control=``; see ``tmon_core.control``): the
decisions due before the optimizer step HF records as step ``k`` apply in ``on_step_begin`` (so
``At(step=k, lr=...)`` is the ``lr`` recorded at step ``k``), on the optimizer and scheduler HF
hands its callbacks:

- parameters: through ``_torch.apply_changes``; in ``scale`` mode (default) ``lr`` rescales the
  ``LambdaLR`` bases HF's linear/cosine/constant (warm-up) schedules are built on, so the change
  sticks and the schedule continues its shape from the new level; ``pin`` holds the value.
- checkpoint: ``control.should_save = True``: HF saves ``checkpoint-k`` after this step with its
  own mechanism (weights, optimizer, scheduler, trainer state), recorded by ``on_save``. A
  ``save_total_limit`` rotates it away like any other (then it is marked deleted).
- rollback: model weights from the checkpoint directory's ``model.safetensors`` (or
  ``pytorch_model.bin``, read with ``torch.load(weights_only=True)``; sharded ``.index.json``
  too) and optimizer state from its ``optimizer.pt`` (``weights_only=True``), checked against the
  model and optimizer before anything is loaded; the hyperparameters in effect stay, the step
  counter and the scheduler go on. Nothing is unpickled.
- stop: ``control.should_training_stop = True``: this step runs, then training ends as at
  ``max_steps``; status ``completed`` with a ``stopped`` event.

Under ``torchrun``/``accelerate`` process 0 decides and every process applies the same decisions
at the same step (``_ddp.DecisionLink``: one broadcast of one int per step over gloo).

Guard (``guard=``, ``tmon_core.guard``): ``on_pre_optimizer_step`` checks the step's gradients (after
HF's clipping; HF hands callbacks no loss, and a NaN loss makes NaN gradients) with one device sync
and drops them when they are not finite, so the optimizer leaves the weights as they were; the
guard's snapshots, rollbacks and stop apply in ``on_step_end`` in one process (a stop ends the loop
before another update), at the next ``on_step_begin`` under ``torchrun``. A rollback restores the
model, the optimizer and HF's scheduler as they were at the snapshot (HF's step counter goes on, so
the schedule ends that many steps short of its end); under fp16 the gradient scaler owns inf
gradients and the guard acts on divergence only.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("tmon_callbacks.hf needs transformers: pip install 'tmon[hf]'") from exc

from typing_extensions import override

from tmon_core import events as ev
from tmon_core.control import Rollback, SaveCheckpoint, SetParams, Stop
from tmon_core.guard import NONFINITE, Guard
from tmon_core.keys import DATA_TIME, EPOCH, GRAD_NORM, STEP_TIME
from tmon_core.run_config import RunConfig
from tmon_core.session import RunSession

from . import _hf, _ray, _torch
from ._adapter import CheckpointWatcher, StepClock, TMonCallbackWarning, apply_decisions, guarded, warn_once
from ._guard_torch import TorchGuard
from ._options import make_options, options_doc, options_signature
from ._workarounds.hf import TrainListener, find_trainer, trainer_callbacks, watch_train
from ._workarounds.python import unwatch, watch_uncaught

_GRAD_NORM_DOC = (
    "also record ``grad_norm`` at every step, not only at HF's logging steps. HF reports the norm "
    "before clipping; tmon can only measure it after, so with clipping on (``max_grad_norm > 0``, "
    "HF's default) this warns and leaves ``grad_norm`` to HF's logs."
)


class TMonCallback(TrainerCallback, TrainListener):
    __doc__ = f"""Record a Hugging Face ``Trainer`` run into a tmon store.

    >>> trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[TMonCallback()])  # doctest: +SKIP

    {
        options_doc(
            indent=4,
            log_grad_norm=_GRAD_NORM_DOC,
            run_name="readable name of the run; default ``TrainingArguments.run_name``, else "
            "``hf-<date>-<time>``.",
            schedule="``tmon_core.At(...)`` items: parameter changes at a step or epoch. ``At(step=k)`` "
            "applies before the optimizer step HF records as step ``k``.",
        )
    }

    Pass it in ``Trainer(callbacks=[...])``: then an exception that ends ``train()`` is seen where
    it happens. Added later with ``trainer.add_callback``, it is seen from the next ``train()`` on,
    and for this one only when it reaches the top level of the script, thread or notebook cell.
    One instance can serve several ``train()`` calls: each is its own run.
    """

    def __init__(self, store: str | os.PathLike | None = None, **options: Any):
        super().__init__()
        self.options = make_options(store, options)
        self.session: RunSession | None = None
        self.run_id: str | None = None
        self._train_calls = 0  # train() calls seen by the wrapper
        self._train_depth = 0  # > 0 while inside a wrapped train()
        self._session_call = -1  # the train() call the open session belongs to
        self._reset()

    def _close_link(self) -> None:
        link, self._link = getattr(self, "_link", None), None
        if link is not None:
            link.close()

    def _reset(self) -> None:
        self._close_link()  # a train() that raised left its link
        self._rec = self._ctl = self._link = self._ray = None
        self._pending_saves: list = []
        self._step = 0
        self._clock = StepClock()
        self._opt_values: dict | None = None
        self._grad_norm = None
        self._per_step_grad_norm = False
        self._guard = None  # this fit's TorchGuard (guard=...), from train begin
        self._optimizer = self._model = None
        self._epoch = 0
        self._in_eval = False
        self._eval_step = None
        self._eval_metrics: dict = {}
        self._after_fit = _hf.AfterFit()
        self._checkpoints = (
            CheckpointWatcher()
        )  # the directories on_save recorded: which save_total_limit removed
        self._callbacks: list = []  # the trainer's callback list (live): what ended the fit is read at its end
        self._stop_requested = False
        self._epoch_first_step = None
        self._empty_epoch = False  # an epoch without a single optimizer step: the data ran out

    # ------------------------------------------------------------ seeing exceptions
    @override
    @guarded
    def on_init_end(self, args, state, control, **kwargs):
        watch_train(find_trainer(self))

    @override
    def train_entered(self) -> None:
        self._train_calls += 1
        self._train_depth += 1

    @override
    def train_left(self) -> None:
        self._train_depth -= 1

    @override
    def train_failed(self, exc: BaseException) -> None:
        session = self.session
        with contextlib.suppress(Exception):  # never mask the user's exception with one of ours
            if session is not None and not session.ended:
                session.fail(exc, self._step)
                unwatch(session)

    # ------------------------------------------------------------ lifecycle
    @override
    @guarded
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        session = self.session
        if session is not None and not session.ended:
            if self._train_depth and self._session_call == self._train_calls:
                # the same train() started over: auto_find_batch_size caught an OOM and retries smaller
                self._attach(args, state, model, optimizer)
                self._start_guard(args, state, model, optimizer, kwargs)
                if self._rec is not None:
                    session.event(
                        ev.OOM,
                        step=self._step,
                        message="out of memory: the Trainer retries with "
                        f"train_batch_size={state.train_batch_size} (auto_find_batch_size)",
                    )
                    self._rec.update_config(**RunConfig(train_batch_size=state.train_batch_size).as_dict())
                return
            session.abandon(self._step)  # an earlier train() that raised where nothing saw it
        elif session is not None:
            session.end_evaluation()  # the previous run's evaluation after its fit, if one never finished
        self._reset()
        self.session = self.run_id = None
        wrapped = self._train_depth > 0
        # a Ray Train worker: the trial's run (process 0 owns it, resumed after a restart), ranks by
        # Ray node; a SQLite store across nodes raises here, before training (_ray.SharedStoreRequired)
        self._ray = _ray.join(self.options)
        session = _hf.open_session(self, self.options, args, ray=self._ray)
        if session is None:
            return
        self.session, self.run_id = session, session.run_id
        self._session_call = self._train_calls
        if not wrapped:
            watch_train(find_trainer(self))  # added after construction: seen from the next train()
            watch_uncaught(session, self._current_step)  # ... and this one where it reaches the top level
        self._attach(args, state, model, optimizer)
        if args.world_size > 1:  # every process takes part in sharing decisions, from the first step
            from ._ddp import DecisionLink

            self._link = DecisionLink(self.options)
        self._start_guard(args, state, model, optimizer, kwargs)
        if self._rec is None:
            return
        self._callbacks = trainer_callbacks(self)
        others = [cb for cb in self._callbacks if not isinstance(cb, TMonCallback)]
        config = _hf.run_config(args, state, model, optimizer, kwargs, self._ctl, others)
        self._rec.update_config(**config)
        if self._ray is not None:  # the trial's config as hyperparameters, Ray's settings; a restart
            self._rec.update_config(**self._ray.config(config.get("hparams")))
            self._ray.resume(self._rec, state.global_step, shifts=False)  # (HF's own steps are kept)
        if state.max_steps:
            self._rec.update_run(total_steps=int(state.max_steps))
        session.event(ev.TRAIN_START, step=self._step)

    def _attach(self, args, state, model, optimizer) -> None:
        self._rec = self.session.recorder if self.session.writes_metrics else None
        self._ctl = self.session.controller
        self._model, self._optimizer = model, optimizer
        if self._ctl is not None:
            inner = _torch.unwrap_optimizer(optimizer)
            self._ctl.get_value = lambda name, group: _torch.read_param([inner], name, group)
        self._step = state.global_step
        self._clock.reset()
        self._per_step_grad_norm = _hf.grad_norm_per_step(self.options, args, recording=self._rec is not None)

    @override
    @guarded
    def on_train_end(self, args, state, control, **kwargs):
        self._close_link()  # (every process: the last exchange was at the last step's begin)
        session = self.session
        if session is None or session.ended:
            return
        if self._rec is not None:
            self._scan_removed()
            if self._ray is not None:  # Ray's report callback persisted the last save after tmon's on_save
                self._ray.record_checkpoint(self._rec, state.global_step, state.epoch)
            session.event(
                ev.TRAIN_END,
                step=state.global_step,
                data=_hf.end_reason(
                    args,
                    state,
                    self._callbacks,
                    stop_requested=self._stop_requested,
                    empty_epoch=self._empty_epoch,
                ),
            )
        unwatch(session)
        self._close_guard()
        session.end(ev.COMPLETED)
        self._model = self._optimizer = None

    def _current_step(self) -> int:
        return self._step

    # ------------------------------------------------------------ per step (the hot path)
    @override
    def on_step_begin(self, args, state, control, **kwargs):
        self._clock.begin()
        step = state.global_step + 1  # the step HF records this optimizer step at
        if self._link is not None:  # several processes: process 0 decides, every process applies at this step
            decisions = self._link.exchange(self._ctl, step)
            if decisions:
                self._apply(decisions, step, control, kwargs)
        elif self._ctl is not None and step >= self._ctl.next_step:  # the hot path's one check
            self._apply(self._ctl.due(step), step, control, kwargs)

    @override
    @guarded
    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self._guard is not None:
            # after backward, DDP's all-reduce and HF's clipping, before the update: one device sync.
            # The gradients only (HF hands callbacks no loss; a NaN loss makes NaN gradients)
            model = _hf.given(kwargs, "model", self._model)
            optimizer = _hf.given(kwargs, "optimizer", self._optimizer)
            self._guard.check(state.global_step + 1, model.parameters(), [optimizer])
            if self._per_step_grad_norm and self._rec is not None:
                self._grad_norm = self._guard.grad_norm  # the check's norm (None after a skip)
                return
        if self._per_step_grad_norm and self._rec is not None:
            self._grad_norm = _torch.grad_norm(self._model.parameters())

    @override
    @guarded
    def on_optimizer_step(self, args, state, control, **kwargs):
        if self._rec is not None:
            self._opt_values = _torch.optimizer_values((self._optimizer,))

    @override
    @guarded
    def on_step_end(self, args, state, control, **kwargs):
        if self._guard is not None:
            self._guard_step_end(state.global_step, control, kwargs)
        rec = self._rec
        if rec is None:
            return
        step_time, data_time = self._clock.end()
        values, self._opt_values = self._opt_values, None
        if values is None:  # no on_optimizer_step (older transformers): read it now
            values = _torch.optimizer_values((self._optimizer,))
        if step_time is not None:
            values[STEP_TIME] = step_time
        if data_time is not None:
            values[DATA_TIME] = data_time
        values[EPOCH] = state.epoch
        if self._grad_norm is not None:
            values[GRAD_NORM], self._grad_norm = self._grad_norm, None
        step = self._step = state.global_step
        rec.log(values, step)
        self._clock.pause()  # recording is not data loading

    @override
    @guarded
    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._rec is None or not logs:
            return
        # what tmon records every step already, under its names, is left out ("HF's logs" above)
        values = _hf.logged_values(logs, skip_grad_norm=self._per_step_grad_norm)
        if self.session.ended:  # after the fit: trainer.evaluate(), or the user's own trainer.log
            self._after_fit.log(self.session, values, state.global_step)
            return
        if values:
            try:
                self._rec.log(values, state.global_step)
            except (TypeError, ValueError) as exc:  # a key or value tmon refuses: say so, go on
                warn_once(self, "on_log", exc)
        self._clock.pause()  # logging time is not data-loading time

    # ------------------------------------------------------------ epochs, evaluation, checkpoints
    @override
    @guarded
    def on_epoch_begin(self, args, state, control, **kwargs):
        self._clock.new_epoch(first_wait=False)
        self._epoch_first_step = state.global_step
        self._epoch = int(state.epoch or 0)
        if self._ctl is not None:
            self._ctl.on_epoch_start(self._epoch, state.global_step + 1)
        self.session and self.session.event(ev.EPOCH_START, step=state.global_step, epoch=self._epoch)

    @override
    @guarded
    def on_epoch_end(self, args, state, control, **kwargs):
        if self._epoch_first_step == state.global_step:  # HF found no batch in this epoch's data
            self._empty_epoch = True
        self.session and self.session.event(ev.EPOCH_END, step=state.global_step, epoch=self._epoch)

    @override
    def on_prediction_step(self, args, state, control, **kwargs):
        if not self._in_eval and self.session is not None:
            self._begin_eval(state)

    @guarded
    def _begin_eval(self, state) -> None:
        self._in_eval = True
        if not self.session.ended:
            self.session.event(ev.VALIDATION_START, step=state.global_step, epoch=self._epoch)
        else:  # evaluate() or predict() after the fit: into the run, status kept
            self._after_fit.begin(self.session, state.global_step)

    @override
    @guarded
    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._in_eval = False
        self._eval_step, self._eval_metrics = state.global_step, dict(metrics or {})
        if self.session is not None and not self.session.ended:
            self.session.event(ev.VALIDATION_END, step=state.global_step, epoch=self._epoch)
        else:
            self._after_fit.evaluated(self.session, state.global_step)
        self._clock.pause()

    @override
    @guarded
    def on_predict(self, args, state, control, metrics=None, **kwargs):
        self._in_eval = False
        self._after_fit.predicted(self.session, metrics, state.global_step)

    @override
    @guarded
    def metrics_logged(self, split: str, metrics: dict) -> None:
        """``Trainer.log_metrics(split, metrics)`` after the fit. A script adds to an evaluation's
        metrics before printing and saving them (run_clm.py: ``perplexity``, ``eval_samples``), and
        nothing hands those to a callback."""
        if self.session is not None and self.session.ended:
            self._after_fit.metrics_logged(self.session, split, metrics, self._eval_step)

    @override
    @guarded
    def on_save(self, args, state, control, **kwargs):
        manual, self._pending_saves = self._pending_saves, []
        if self._rec is None:
            return
        path = _hf.record_save(self._rec, self._ctl, args, state, manual, self._eval_step, self._eval_metrics)
        if path is not None:
            self._checkpoints.known(path)
        self._scan_removed()
        if self._ray is not None:  # the copy Ray persisted (RayTrainReportCallback's on_save ran first)
            self._ray.record_checkpoint(self._rec, state.global_step, state.epoch)
        self._clock.pause()

    def _scan_removed(self) -> None:
        """Mark the checkpoints ``save_total_limit`` rotated away as deleted."""
        for path in self._checkpoints.scan()[1]:
            self._rec.checkpoint_removed(path)

    # ------------------------------------------------------------ guard (guard=...)
    def _start_guard(self, args, state, model, optimizer, kw: dict) -> None:
        """This fit's guard, on every process (each skips, snapshots and restores its own; process 0
        decides). Under fp16 the gradient scaler owns inf gradients (it skips those steps itself):
        the guard then acts on divergence only, HF handing callbacks no loss to judge."""
        self._close_guard()
        guard = Guard.from_option(self.options.guard)
        if guard is None or model is None or optimizer is None:
            return
        scheduler = kw.get("lr_scheduler")
        scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler
        if args.fp16 and NONFINITE in guard.on:
            left = tuple(t for t in guard.on if t != NONFINITE)
            warnings.warn(
                "tmon: guard= under fp16: non-finite gradients are the gradient scaler's to skip; "
                + ("the guard acts on divergence only" if left else "the guard is off"),
                TMonCallbackWarning,
                stacklevel=3,
            )
            if not left:
                return
            guard = copy.copy(guard)  # (the user's Guard stays as given, for the next fit)
            guard.on = left
        self._guard = TorchGuard(
            guard,
            self._rec,
            self._ctl,
            model,
            [optimizer],
            [scheduler] if scheduler is not None else [],
            state.global_step + 1,
        )

    def _guard_step_end(self, step: int, control, kw: dict) -> None:
        run = self._guard.run
        run.step_end(step)
        # one process: what the guard decided in this step applies now, between this step and the
        # next (a stop ends the loop before another update); several: at the next step's exchange
        ctl = self._ctl
        if run.news and self._link is None and ctl is not None:
            run.news = False
            self._apply(ctl.due(step + 1), step + 1, control, kw)

    def _close_guard(self) -> None:
        if self._guard is not None:
            self._guard.close()
            self._guard = None

    # ------------------------------------------------------------ control decisions
    def _apply(self, decisions, step: int, control, kw: dict) -> None:
        def optimizer():
            return _torch.unwrap_optimizer(_hf.given(kw, "optimizer", self._optimizer))

        handlers = {
            SetParams: lambda d: _hf.set_params(optimizer(), kw.get("lr_scheduler"), d),
            SaveCheckpoint: lambda d: self._save(d, control),
            Rollback: lambda d: _hf.rollback(_hf.given(kw, "model", self._model), optimizer(), d, step),
            Stop: lambda d: self._stop(d, control),
        }
        if self._guard is not None:  # its snapshot and rollback (a Rollback's subclass: looked up first)
            handlers.update(self._guard.handlers(step))
        apply_decisions(self._ctl, decisions, step, handlers)

    def _save(self, d: SaveCheckpoint, control) -> None:
        control.should_save = True  # HF saves after this step; on_save records it and resolves d
        self._pending_saves.append(d)

    def _stop(self, d: Stop, control) -> dict:
        control.should_training_stop = True  # this step runs, then the Trainer ends as it does at max_steps
        self._stop_requested = True
        return {"event": ev.STOPPED, "reason": d.reason or "stop requested"}


__all__ = ["TMonCallback"]


options_signature(TMonCallback)
