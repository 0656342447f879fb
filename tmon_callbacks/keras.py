"""``TMonCallback`` for Keras 3 ``Model.fit``, on the torch, TensorFlow and JAX backends (all tested).

>>> from tmon_callbacks.keras import TMonCallback
>>> model.fit(x, y, epochs=3, callbacks=[TMonCallback()])   # doctest: +SKIP

Keras hook → what tmon records:

==============================  ===========================================================
``on_train_begin``               opens the run and the hardware sampler; ``train_start`` event;
                                 config: optimizer class and config, batch size, epochs, steps per
                                 epoch, dtype policy (mixed precision), jit_compile, the model's
                                 size; ``callbacks``: the fit's callbacks but Keras' own History and
                                 ProgbarLogger (``EarlyStopping``: monitor, mode, patience,
                                 min_delta...; ``ModelCheckpoint``: monitor, mode, save_best_only...;
                                 ``ReduceLROnPlateau``: monitor, factor, patience...); finds the
                                 ``ModelCheckpoint`` callbacks of this fit; wraps
                                 ``model.train_function`` for the fit, so an exception raised by a
                                 step ends the run failed (Keras has no exception hook)
``on_train_batch_begin``         control: applies the decisions due before this step (one
                                 comparison when none is: see Control below); then the learning
                                 rate of the step about to run, read from the optimizer (a
                                 ``LearningRateSchedule`` is evaluated at the optimizer's iteration
                                 count, on the writer thread, off the hot path; on JAX, whose fit
                                 empties the variables mid-epoch, from the fit's own state)
``on_train_batch_end``           every batch: the ``logs`` under Keras' names (``loss``, your
                                 metrics: Keras reports them as running means over the epoch so far,
                                 as its progress bar shows them), ``lr``, ``momentum`` (SGD momentum
                                 or beta_1), ``weight_decay``, ``step_time``, ``data_time``, ``epoch``
``on_epoch_begin``               ``epoch_start``; ``At(epoch=...)`` schedule items become due
``on_epoch_end``                 the epoch's logs that the batches did not carry (``val_*``, and
                                 anything callbacks added) at the step of the epoch's last batch,
                                 but ``learning_rate``: ReduceLROnPlateau and LearningRateScheduler
                                 copy the optimizer's lr there, which tmon records at every step as
                                 ``lr`` (stored once)
``ModelCheckpoint`` saves        ``checkpoint`` rows and events: path, step, epoch, size, the
                                 monitored value (files found by the checkpoint's own file pattern)
``on_test_begin/end`` in a fit   ``validation_start`` / ``validation_end``
``on_train_end``                 ``train_end`` with why the fit ended in its data (below); status
                                 completed; everything flushed; ``model.evaluate`` watched (below)
``model.evaluate()`` after it    into the ended run, its status kept, at the fit's last step:
                                 ``evaluation_start``/``evaluation_end`` (stage ``evaluate``) and the
                                 evaluation's logs as ``test_<name>`` (``test_loss``...: Keras' word
                                 for evaluate, as the fit's validation is ``val_<name>``)
==============================  ===========================================================

``model.evaluate(x, y)`` is usually called without callbacks: at the end of the fit the model gets
an ``evaluate`` of its own (an instance attribute wrapping Keras') that adds this callback to the
evaluation's callbacks, so ``on_test_begin/end`` see it. Once another fit trained the model (its
optimizer's iteration count moved), its evaluations are no longer this run's and the wrapper removes
itself; a fit with a TMonCallback removes it at its start.

Why the fit ended (``train_end``'s ``data["reason"]``, ``tmon_core.events``): ``max_epochs`` when it
ran every epoch, the last one whole (a stop asked for in that last epoch changes nothing); else
``stop_request`` (tmon's stop), ``early_stopping`` (an ``EarlyStopping`` that fired: its settings,
``mode`` as it compared, ``stopped_epoch``, ``best_epoch``), ``should_stop`` (another callback, e.g.
``TerminateOnNaN``, or the user set ``model.stop_training``), else ``data_exhausted`` (the last epoch
ran short of ``steps_per_epoch``: Keras warned that the input ran out of data).

Steps count optimizer steps from the optimizer's iteration count at the start of the fit (0 for
a new model), as Lightning's do: batch ``k`` is recorded at step ``k``, and the ``lr`` recorded
at step ``k`` is the one that step used.

An exception raised outside a step (the data pipeline, another callback) is seen when it reaches
the top level of the script, thread or notebook cell; until then the run stays ``running``.

Control (``schedule=``, ``presets=``, ``params=``, ``control=``; see ``tmon_core.control``),
applied in ``on_train_batch_begin`` before step ``k`` (``At(step=k)`` is the ``lr`` recorded at ``k``):

- parameters: the optimizer's own attributes (``_keras``: ``lr`` → ``learning_rate``,
  ``momentum`` → ``momentum`` or Adam's ``beta_1``, ``betas``, ``eps`` → ``epsilon``,
  ``weight_decay``); one the optimizer lacks is rejected with the reason. A float learning rate is
  a variable, assigned. A ``LearningRateSchedule`` is wrapped: ``scale`` (default) multiplies the
  schedule from now on so it continues from the new level, ``set`` holds for this step only,
  ``pin`` for every step until the next change (``_keras.ScaledSchedule``, saved with the model).
  Where the step is compiled (TensorFlow's ``tf.function``, JAX's ``jit``, ``jit_compile=True`` on
  torch), a change to a value the traced step holds as a constant (a Python-number hyperparameter,
  the schedule object) makes the train function again, so the next step is traced with it
  (``retraced`` in the ``param_change`` event's data); a float lr is a variable and needs none.
- checkpoint: ``model.save`` to ``tmon-<run>-step=<k>.keras`` in the first ``ModelCheckpoint``'s
  directory (else ``./tmon-checkpoints``), recorded ``source="manual"`` with description and tags.
- rollback: ``model.load_weights`` (Keras' loader, ``.keras`` / ``.weights.h5``: arrays only,
  nothing unpickled) restores weights and optimizer state; the iteration count and the
  learning-rate variable keep their current values. All or nothing: a file that does not load
  completely leaves the model as it was, and the request is rejected with the reason.
- stop: ``model.stop_training = True``: this step runs, then the fit ends (as ``EarlyStopping``
  ends it); status ``completed`` with a ``stopped`` event.

Guard (``guard=``, ``tmon_core.guard``; ``_guard_keras``): snapshots are numpy copies of the model's
and the optimizer's variables (not the iteration count nor the lr variable: the schedule goes on),
taken at a batch's start; ``rollback`` and ``stop`` judge the ``loss`` Keras logs at each batch's end
(its running mean, non-finite from the failing step on) and act at once, before the next step: a
rollback restores the snapshot, lowers the lr through the steering code above (a schedule is
rescaled; a compiled step retraced) and resets the model's metrics, so the running means restart
(the epoch's logged mean is then the mean since the rollback); a stop ends the fit after the failing
step, whose update Keras has applied. ``skip`` wraps the optimizer's ``apply`` for the fit and
withholds a non-finite update: on the torch backend run eagerly only; TensorFlow, JAX and
``jit_compile=True`` are refused (at construction, or at the fit's start) with the alternative.
Tested on all three backends with NaN inputs at chosen steps.

This module is the hooks (*when*). What they read and record is in ``_keras_fit`` (optimizer
values, config, ModelCheckpoint's files, why the fit ended), control in ``_keras``, every Keras
internal tmon relies on in ``_workarounds.keras``, and what all adapters share in ``_adapter``.
"""

from __future__ import annotations

import math
import os
from typing import Any

try:
    import keras
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("tmon_callbacks.keras needs Keras 3: pip install 'tmon[keras]'") from exc
if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"tmon_callbacks.keras needs Keras 3, found keras {keras.__version__}: pip install 'tmon[keras]'"
    )

from keras import ops
from typing_extensions import override

from tmon_core import events as ev
from tmon_core.control import Rollback, SaveCheckpoint, SetParams, Stop
from tmon_core.guard import SKIP, Guard, GuardRollback, GuardSnapshot
from tmon_core.keys import DATA_TIME, EPOCH, STEP_TIME
from tmon_core.session import RunSession

from . import _guard_keras, _keras
from . import _keras_fit as _fit
from ._adapter import Rejected, SetupRefused, StepClock, apply_decisions, guarded
from ._options import make_options, options_doc, options_signature
from ._workarounds import keras as _wa
from ._workarounds.python import unwatch, watch_uncaught

_PLAIN = (float, int)
# keys ReduceLROnPlateau and LearningRateScheduler add to the epoch's logs: the lr tmon records at every
# step, read from the optimizer, kept once (as ``lr``)
_LR_LOG_KEY = "learning_rate"
# the one option that differs here: Lightning, HF and tmon_core.track take log_grad_norm=True
_NO_GRAD_NORM = (
    "must stay False with Keras: Model.fit hands callbacks no gradients, so this callback refuses "
    "True (``log_grad_norm=True`` is for the torch adapters: Lightning, HF, ``tmon_core.track``)."
)


class TMonCallback(keras.callbacks.Callback):
    __doc__ = f"""Record a Keras ``fit`` into a tmon store.

    >>> model.fit(x, y, epochs=3, callbacks=[TMonCallback()])   # doctest: +SKIP

    {
        options_doc(
            indent=4,
            run_name="readable name of the run; default ``keras-<date>-<time>``.",
            log_grad_norm=_NO_GRAD_NORM,
        )
    }

    One instance can serve several ``fit()`` calls: each is its own run.
    """

    def __init__(self, store: str | os.PathLike | None = None, **options: Any):
        super().__init__()
        self.options = make_options(store, options)
        if self.options.log_grad_norm:
            raise ValueError(
                "log_grad_norm=True is not available with Keras (it is for the torch adapters: "
                "Lightning's and HF's TMonCallback, tmon_core.track): Keras' Model.fit hands callbacks "
                "no gradients, so there is no gradient norm to record; leave log_grad_norm=False. "
                f"Received log_grad_norm={self.options.log_grad_norm!r}"
            )
        self._guard_opt = Guard.from_option(self.options.guard)
        if (
            self._guard_opt is not None
            and self._guard_opt.mode == SKIP
            and keras.backend.backend() != "torch"
        ):
            raise ValueError(
                _guard_keras.SKIP_REFUSED.format(why=f"the {keras.backend.backend()} backend")
                + f". Received guard={self.options.guard!r}"
            )
        self.session: RunSession | None = None
        self.run_id: str | None = None
        self._steps = None  # this fit's step functions, wrapped (_workarounds.keras.StepFunctions)
        self._reset()

    def _reset(self) -> None:
        self._rec = self._ctl = None
        self._step, self._last_step, self._epoch, self._batch_begin = 0, None, 0, 0
        self._clock = StepClock()
        self._opt = _fit.OptimizerValues()
        self._opt_values: dict = {}
        self._batch_logs: dict = {}
        self._ckpts = _fit.ModelCheckpointFiles()
        self._scan_next_batch = False
        self._callbacks: list = []  # this fit's callbacks (read again at its end: what stopped it)
        self._stop_requested = False
        self._epoch_first_step = 0
        self._epoch_steps = 0  # batches run in the last epoch that ended
        self._last_epoch = None  # the last epoch that ended
        self._end_iterations = None  # the optimizer's iteration count when the fit ended
        self._evaluating_after_fit = False
        self._guard = self._snapshots = None  # this fit's GuardRun and KerasSnapshots (guard=...)
        self._unguard_apply = None  # takes the skip guard's wrapper off the optimizer
        self._guard_skipped = False  # the skip guard withheld this batch's update

    # ------------------------------------------------------------ lifecycle
    @override
    @guarded
    def on_train_begin(self, logs=None):
        if self.session is not None and not self.session.ended:
            self._unwrap()
            self._close_guard()
            self.session.abandon(self._step)  # an earlier fit that raised where nothing saw it
        elif self.session is not None:
            self.session.end_evaluation()  # the previous run's evaluation, if one never finished
        self._reset()
        model = self.model
        if self._guard_opt is not None and self._guard_opt.mode == SKIP:
            refusal = _guard_keras.skip_refusal(model)
            if refusal is not None:  # before the run opens: nothing to end
                raise SetupRefused(f"{refusal}. Received guard={self.options.guard!r}")
        _wa.unwatch_evaluate(model)  # evaluations from now on belong to this fit's run
        session = self.session = RunSession(self.options, "keras")
        self.run_id = session.run_id
        self._rec, self._ctl = session.recorder, session.controller
        if self._ctl is not None:
            self._ctl.get_value = lambda name, group: _keras.read_param(self._optimizer(), name, group)
        batch_size, initial_epoch = _wa.fit_arguments(model)
        callbacks = self._callbacks = _wa.fit_callbacks(self)
        self._ckpts = _fit.ModelCheckpointFiles(self._rec, callbacks)
        self._step = _fit.iterations(model)
        self._opt = _fit.OptimizerValues(_fit.optimizers(model), model)
        self._steps = _wa.StepFunctions(model, self._on_exception)
        self._steps.wrap("train_function")
        watch_uncaught(session, self._current_step)
        others = [c for c in callbacks if not isinstance(c, TMonCallback)]
        control = self._ctl.describe() if self._ctl is not None else None
        self._rec.update_config(**_fit.fit_config(model, self.params, others, batch_size, control))
        steps, epochs = (self.params or {}).get("steps"), (self.params or {}).get("epochs")
        if isinstance(steps, int) and isinstance(epochs, int) and isinstance(initial_epoch, int):
            self._rec.update_run(total_steps=steps * max(0, epochs - initial_epoch))
        if self._guard_opt is not None:
            self._start_guard(model)
        session.event(ev.TRAIN_START, step=self._step)

    def _start_guard(self, model) -> None:
        """This fit's guard (``guard=``, ``_guard_keras``): snapshots of the variables; ``skip`` wraps the
        optimizer's apply (torch backend, eager), the other modes judge the logged loss at batch end."""
        self._snapshots = _guard_keras.KerasSnapshots(self._guard_opt, lambda: self.model)
        self._guard = self._guard_opt.begin(
            self._rec, self._ctl, lrs=lambda: self._opt.lrs(), start_step=self._step
        )
        if self._guard_opt.mode == SKIP:
            self._unguard_apply = _wa.guard_apply(model.optimizer, self._skip_update)

    def _skip_update(self, grads) -> bool:
        """In the optimizer's apply (``guard="skip"``, torch backend): whether to withhold this update."""
        if self._guard is None or self.session is None or self.session.ended:
            return False  # a fit that ended where no hook saw it left the wrapper: Keras' update as usual
        gs = [g for g in grads if g is not None]
        finite = not gs or bool(
            ops.convert_to_numpy(ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in gs])))
        )
        skipped = self._guard.check(self._step, finite)
        self._guard_skipped |= skipped
        return skipped

    def _close_guard(self) -> None:
        if self._unguard_apply is not None:
            self._unguard_apply()
            self._unguard_apply = None
        if self._guard is not None:
            self._guard.close()
        if self._snapshots is not None:
            self._snapshots.close()
        self._guard = self._snapshots = None

    @override
    @guarded
    def on_train_end(self, logs=None):
        session = self.session
        if session is None or session.ended:
            return
        self._unwrap()
        self._close_guard()
        self._ckpts.scan()
        reason = _fit.end_reason(
            self.model,
            self.params,
            self._callbacks,
            last_epoch=self._last_epoch,
            epoch_steps=self._epoch_steps,
            stop_requested=self._stop_requested,
        )
        session.event(ev.TRAIN_END, step=self._step, data=reason)
        unwatch(session)
        session.end(ev.COMPLETED)
        if session.writes_metrics and session.recorder is not None:
            self._end_iterations = _fit.iterations(self.model)
            _wa.watch_evaluate(self.model, self, self._after_fit)

    def _current_step(self) -> int:
        return self._step

    def _unwrap(self) -> None:
        if self._steps is not None:
            self._steps.unwrap()

    def _on_exception(self, exc: BaseException) -> None:
        """A step function of this fit raised ``exc`` (Keras has no exception hook): the run ends failed.
        Whatever fails here, the wrapper re-raises ``exc`` unchanged."""
        session = self.session
        if session is not None and not session.ended:
            self._unwrap()
            self._close_guard()
            session.fail(exc, self._step)
            unwatch(session)

    # ------------------------------------------------------------ per batch (the hot path)
    @override
    @guarded
    def on_train_batch_begin(self, batch, logs=None):
        self._clock.begin()
        self._batch_begin = batch
        if self._ctl is not None and self._step >= self._ctl.next_step:  # the hot path's one check
            self._apply(self._ctl.due(self._step), self._step)
        if self._rec is None:
            return
        if self._scan_next_batch:
            self._scan_next_batch = False
            self._ckpts.scan()
        self._opt_values = self._opt.read()  # what the step about to run uses

    @override
    @guarded
    def on_train_batch_end(self, batch, logs=None):
        rec = self._rec
        if rec is None:
            return
        step_time, data_time = self._clock.end()
        values = {k: v for k, v in logs.items() if type(v) in _PLAIN} if logs else {}
        self._batch_logs = values.copy()
        values.update(self._opt_values)
        if step_time is not None:
            values[STEP_TIME] = step_time
            if data_time is not None:
                values[DATA_TIME] = data_time
        values[EPOCH] = self._epoch
        step = self._step
        rec.log(values, step)
        self._last_step = step
        self._step = step + max(1, batch - self._batch_begin + 1)  # steps_per_execution runs several
        every = self._ckpts.every
        if every and self._step % every == 0:
            self._ckpts.context = (self._step, self._epoch, self._batch_logs)
            self._ckpts.scan()  # saved by a ModelCheckpoint listed before this callback
            self._scan_next_batch = True  # ... or after it
        if self._guard is not None:
            self._guard_batch_end(step, values.get("loss"))
        self._clock.pause()  # the next batch's data wait starts after this hook's own work

    def _guard_batch_end(self, step: int, loss) -> None:
        """The guard after step ``step``: judge its logged loss (rollback, stop), restart the running
        means after a skipped step, and apply at once what the guard decided (a stop ends the fit
        before another step; a rollback restores before it)."""
        guard = self._guard
        acted = len(guard.actions)
        if self._guard_opt.mode == SKIP:
            if self._guard_skipped:  # the step's NaN is in the running means: they restart
                self._guard_skipped = False
                self.model.reset_metrics()
        else:
            guard.check(step, not (type(loss) in _PLAIN and not math.isfinite(loss)))
        guard.step_end(step)
        if len(guard.actions) > acted and self._ctl is not None and self._step >= self._ctl.next_step:
            self._apply(self._ctl.due(self._step), self._step)

    # ------------------------------------------------------------ epochs, validation, evaluation
    @override
    @guarded
    def on_epoch_begin(self, epoch, logs=None):
        if self.session is None or self.session.ended:
            return
        self._ckpts.scan()  # saved at the last epoch's end by a callback listed after this one
        self._epoch = epoch
        self._epoch_first_step = self._step
        self._clock.new_epoch(first_wait=False)  # an epoch's first batch has no data_time
        if self._ctl is not None:
            self._ctl.on_epoch_start(epoch, self._step)
        model = self.model
        self._opt = _fit.OptimizerValues(
            _fit.optimizers(model), model
        )  # a callback may have swapped in a schedule
        self.session.event(ev.EPOCH_START, step=self._step, epoch=epoch)

    @override
    @guarded
    def on_epoch_end(self, epoch, logs=None):
        if self.session is None or self.session.ended:
            return
        logs = dict(logs or {})
        if self._rec is not None:
            last = self._batch_logs
            # only what the batches did not carry (val_*...): a batch key's epoch value is its last
            # running mean again, a second point at the same step
            values = {
                k: v
                for k, v in logs.items()
                if type(v) in _PLAIN and k not in last and not k.startswith(_LR_LOG_KEY)
            }
            if values:
                self._rec.log(values, self._last_step if self._last_step is not None else self._step)
        self._ckpts.context = (self._step, epoch, logs)
        self._ckpts.scan()
        self._last_epoch, self._epoch_steps = epoch, self._step - self._epoch_first_step
        self.session.event(ev.EPOCH_END, step=self._step, epoch=epoch)

    @override
    @guarded
    def on_test_begin(self, logs=None):
        session = self.session
        if session is None:
            return
        if not session.ended:  # the validation of a fit
            if self._steps is not None:
                self._steps.wrap("test_function")
            session.event(ev.VALIDATION_START, step=self._step, epoch=self._epoch)
        elif self._after_fit():  # model.evaluate() after the fit: into its run, status kept
            session.begin_evaluation("evaluate", self._evaluation_step())
            self._evaluating_after_fit = True

    @override
    @guarded
    def on_test_end(self, logs=None):
        session = self.session
        if session is None:
            return
        if not session.ended:
            session.event(ev.VALIDATION_END, step=self._step, epoch=self._epoch)
        elif self._evaluating_after_fit:
            self._evaluating_after_fit = False
            step = self._evaluation_step()
            # test_<name>, as the fit's own validation is val_<name>: evaluate's "loss" is not the fit's
            session.log_evaluation(
                {f"test_{k}": v for k, v in (logs or {}).items() if type(v) in _PLAIN}, step
            )
            session.end_evaluation(step)

    def _after_fit(self) -> bool:
        """Whether the model is still as this callback's fit left it: no fit has trained it since."""
        return self._end_iterations is not None and _fit.iterations(self.model) == self._end_iterations

    def _evaluation_step(self) -> int:
        return self._last_step if self._last_step is not None else self._step

    # ------------------------------------------------------------ control decisions
    def _optimizer(self):
        opts = _fit.optimizers(self.model)
        if len(opts) != 1:
            raise Rejected(f"tmon steers a model with one optimizer; this one has {len(opts)}")
        return opts[0]

    def _apply(self, decisions, step: int) -> None:
        handlers = {
            SetParams: self._set_params,
            SaveCheckpoint: lambda d: self._save_checkpoint(d, step),
            Rollback: lambda d: self._rollback(d, step),
            Stop: self._stop,
        }
        if self._guard is not None:  # (GuardRollback is a Rollback: looked up first)
            handlers[GuardSnapshot] = lambda d: self._guard.snapshot(d, step, self._snapshots)
            handlers[GuardRollback] = lambda d: self._guard_rollback(d, step)
        apply_decisions(self._ctl, decisions, step, handlers)

    def _guard_rollback(self, d: GuardRollback, step: int) -> dict:
        outcome = self._guard.rollback(d, step, self._snapshots)
        # the running means hold the failed steps: they restart from here (the epoch's logged value
        # becomes the mean since the rollback)
        self.model.reset_metrics()
        return outcome

    def _set_params(self, d: SetParams) -> dict:
        pinned = self._ctl.pins.keys() if self._ctl is not None else ()
        old, new, traced = _keras.apply_changes(self._optimizer(), d.changes, d.mode, pinned)
        outcome = {"old": old, "new": new}
        if traced:
            model = self.model
            self._opt = _fit.OptimizerValues(_fit.optimizers(model), model)  # the lr may be a new schedule
            if self._steps is not None and _wa.compiled_step(model):
                # the traced step read the old values when it was traced: trace it again
                self._steps.rebuild("train_function")
                outcome["data"] = {"retraced": "train_function"}
        return outcome

    def _save_checkpoint(self, d: SaveCheckpoint, step: int) -> dict:
        folder = self._ckpts.manual_dir()
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"tmon-{self.run_id}-step={step}.keras")
        self.model.save(path)  # Keras' own format: weights, optimizer state, config
        self._ckpts.known(path)
        self._rec.checkpoint(
            path, step=step, epoch=self._epoch, source="manual", description=d.description, tags=d.tags
        )
        return {"new": {"path": path}, "reason": d.description}

    def _rollback(self, d: Rollback, step: int) -> dict:
        _keras.load_weights(self.model, d.path)
        return {
            "old": {"step": step},
            "new": {"checkpoint_id": d.checkpoint_id, "path": d.path},
            "event": ev.ROLLBACK,
            "reason": f"rolled back to checkpoint {d.checkpoint_id}",
        }

    def _stop(self, d: Stop) -> dict:
        self.model.stop_training = True  # this batch runs, then fit ends as EarlyStopping ends it
        self._stop_requested = True
        return {"event": ev.STOPPED, "reason": d.reason or "stop requested"}


__all__ = ["TMonCallback"]


options_signature(TMonCallback)
