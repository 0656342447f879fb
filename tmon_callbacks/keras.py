"""``TMonCallback`` for Keras 3 ``Model.fit``, on any backend (tested on torch).

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
                                 count, on the writer thread, off the hot path)
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
- checkpoint: ``model.save`` to ``tmon-<run>-step=<k>.keras`` in the first ``ModelCheckpoint``'s
  directory (else ``./tmon-checkpoints``), recorded ``source="manual"`` with description and tags.
- rollback: ``model.load_weights`` (Keras' loader, ``.keras`` / ``.weights.h5``: arrays only,
  nothing unpickled) restores weights and optimizer state; the iteration count and the
  learning-rate variable keep their current values. All or nothing: a file that does not load
  completely leaves the model as it was, and the request is rejected with the reason.
- stop: ``model.stop_training = True``: this step runs, then the fit ends (as ``EarlyStopping``
  ends it); status ``completed`` with a ``stopped`` event.
"""

from __future__ import annotations

import functools
import glob
import math
import os
import re
import time
from typing import Any

try:
    import keras
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("tmon_callbacks.keras needs Keras 3: pip install 'tmon[keras]'") from exc
if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover - depends on the environment
    raise ImportError(f"tmon_callbacks.keras needs Keras 3, found keras {keras.__version__}: "
                      "pip install 'tmon[keras]'")

from typing_extensions import override

from tmon_core import events as ev
from tmon_core.control import ROLLBACK as ROLLBACK_EVENT
from tmon_core.control import STOPPED as STOPPED_EVENT
from tmon_core.control import Rollback, SaveCheckpoint, SetParams, Stop
from tmon_core.keys import DATA_TIME, EPOCH, LR, MOMENTUM, STEP_TIME, WEIGHT_DECAY, group_key
from tmon_core.store.writer import json_safe

from . import _keras
from ._base import (
    Rejected,
    RunSession,
    apply_decisions,
    caller_locals,
    guarded,
    make_options,
    options_signature,
    unwatch,
    watch_uncaught,
)

_perf = time.perf_counter
_PLAIN = (float, int)
# keys ReduceLROnPlateau and LearningRateScheduler add to the epoch's logs: the lr tmon records at every
# step, read from the optimizer, kept once (as ``lr``)
_LR_LOG_KEY = "learning_rate"
# callbacks Keras adds to every fit by itself (not listed in config["callbacks"])
_KERAS_DEFAULTS = ("History", "ProgbarLogger")
_PRECISION = {"float32": "32-true", "mixed_float16": "16-mixed", "mixed_bfloat16": "bf16-mixed",
              "float16": "16-true", "bfloat16": "bf16-true", "float64": "64-true"}


class _ScheduledLR:
    """The value of a ``LearningRateSchedule`` at a step, computed only when the writer thread asks.

    Evaluating a schedule costs ~40 µs of backend ops; a schedule is a pure function of the step,
    so the hot path keeps the schedule and a copy of the iteration count, nothing else.
    """

    __slots__ = ("schedule", "step")

    def __init__(self, schedule, step):
        self.schedule = schedule
        self.step = step

    def __float__(self) -> float:
        try:
            return float(keras.ops.convert_to_numpy(self.schedule(self.step)))
        except Exception:  # never let a user schedule break the writer: the point reads NaN
            return math.nan


def _lr_reader(opt):
    """A function returning the learning rate ``opt`` applies at its next step, without a device sync."""
    schedule = getattr(opt, "_learning_rate", None)
    copy = keras.ops.copy
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return lambda: _ScheduledLR(schedule, copy(opt.iterations))
    # a variable (a float lr, changed by ReduceLROnPlateau, LearningRateScheduler...) or a callable:
    # a copy, so a later assignment does not rewrite what this step recorded
    return lambda: copy(opt.learning_rate)


def _checkpoint_glob(filepath: str) -> str:
    """``ckpt/m-{epoch:02d}-{val_loss:.2f}.keras`` → ``ckpt/m-*-*.keras``, literal parts escaped."""
    parts = re.split(r"\{[^{}]*\}", filepath)
    return os.path.abspath("*".join(glob.escape(p) for p in parts))


class TMonCallback(keras.callbacks.Callback):
    """Record a Keras ``fit`` into a tmon store.

    >>> model.fit(x, y, epochs=3, callbacks=[TMonCallback()])   # doctest: +SKIP

    Args:
        store: database URL or SQLite path; default ``$TMON_STORE`` or ``sqlite:///tmon.db``.
        run_name: readable name of the run; default ``keras-<date>-<time>``.
        flush_interval: seconds between writes to the store.
        sample_interval: seconds between hardware samples; None turns sampling off.
        heartbeat_timeout: seconds of silence after which readers call the run ``lost``.
        log_grad_norm: must stay False: Keras hands callbacks no gradients.
        gpus: sample GPUs through NVML when present.
        schedule: ``tmon_core.At(...)`` items: parameter changes at a step or epoch.
        presets: name -> {parameter: value}, applied by ``run.apply_preset(name)``.
        params: name -> ``tmon_core.Param``: your own steerable knobs.
        control: ``off`` | ``view`` | ``manage`` (default: parameters, presets, checkpoints)
            | ``admin`` (also rollback and stop). See ``tmon_core.control``.
        tags, notes: labels and free text stored with the run.

    One instance can serve several ``fit()`` calls: each is its own run.
    """

    def __init__(self, store: str | os.PathLike | None = None, **options: Any):
        super().__init__()
        self.options = make_options(store, options)
        if self.options.log_grad_norm:
            raise ValueError("log_grad_norm=True is not available with Keras: Model.fit hands callbacks no "
                             f"gradients; received log_grad_norm={self.options.log_grad_norm!r}")
        self.session: RunSession | None = None
        self.run_id: str | None = None
        self._reset()

    def _reset(self) -> None:
        self._rec = None
        self._ctl = None
        self._step = 0
        self._last_step = None
        self._epoch = 0
        self._t_batch = None
        self._t_last_end = None
        self._batch_begin = 0
        self._opt_values: dict = {}
        self._readers: list = []
        self._batch_logs: dict = {}
        self._wrapped: dict[str, tuple] = {}
        self._checkpoints: list = []
        self._ckpt_globs: list[tuple[str, Any]] = []
        self._known_ckpts: dict[str, float] = {}
        self._ckpt_context: tuple = (0, 0, {})
        self._scan_every = 0
        self._scan_next_batch = False
        self._callbacks: list = []  # this fit's callbacks (read again at its end: what stopped it)
        self._stop_requested = False
        self._epoch_first_step = 0
        self._epoch_steps = 0  # batches run in the last epoch that ended
        self._last_epoch = None  # the last epoch that ended
        self._end_iterations = None  # the optimizer's iteration count when the fit ended
        self._evaluating_after_fit = False

    # ------------------------------------------------------------ lifecycle
    @override
    @guarded
    def on_train_begin(self, logs=None):
        if self.session is not None and not self.session.ended:
            self._unwrap()
            self.session.abandon(self._step)  # an earlier fit that raised where nothing saw it
        elif self.session is not None:
            self.session.end_evaluation()  # the previous run's evaluation, if one never finished
        self._reset()
        model = self.model
        _unwatch_evaluate(model)  # evaluations from now on belong to this fit's run
        session = self.session = RunSession(self.options, "keras")
        self.run_id = session.run_id
        self._rec = session.recorder
        self._ctl = session.controller
        if self._ctl is not None:
            self._ctl.get_value = lambda name, group: _keras.read_param(self._optimizer(), name, group)
        fit_locals = caller_locals(lambda obj: obj is model) or {}
        callback_list = caller_locals(
            lambda obj: isinstance(obj, keras.callbacks.CallbackList) and any(c is self for c in obj.callbacks))
        callbacks = self._callbacks = callback_list["self"].callbacks if callback_list else []
        self._checkpoints = [c for c in callbacks if isinstance(c, keras.callbacks.ModelCheckpoint)]
        self._ckpt_globs = [(_checkpoint_glob(c.filepath), c) for c in self._checkpoints
                            if isinstance(c.filepath, str) and "://" not in c.filepath]
        batch_freqs = [c.save_freq for c in self._checkpoints if isinstance(c.save_freq, int)]
        self._scan_every = min(batch_freqs) if batch_freqs else 0
        self._scan_checkpoints(record=False)  # files from earlier runs are not this run's
        self._step = self._iterations()
        self._readers = self._optimizer_readers()
        self._wrap("train_function")
        watch_uncaught(session, self._current_step)
        self._rec.update_config(**self._config(fit_locals))
        steps, epochs = (self.params or {}).get("steps"), (self.params or {}).get("epochs")
        initial_epoch = fit_locals.get("initial_epoch") or 0
        if isinstance(steps, int) and isinstance(epochs, int) and isinstance(initial_epoch, int):
            self._rec.update_run(total_steps=steps * max(0, epochs - initial_epoch))
        session.event(ev.TRAIN_START, step=self._step)

    def _optimizers(self) -> list:
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            return []
        opt = getattr(opt, "inner_optimizer", opt)  # LossScaleOptimizer (mixed precision) wraps the real one
        return list(getattr(opt, "optimizers", None) or [opt])

    def _optimizer_readers(self) -> list:
        readers = []
        for oi, opt in enumerate(self._optimizers()):
            mom_attr = next((a for a in ("momentum", "beta_1") if type(getattr(opt, a, None)) in _PLAIN), None)
            readers.append((opt, group_key(LR, oi, 0), _lr_reader(opt), mom_attr, group_key(MOMENTUM, oi, 0),
                            group_key(WEIGHT_DECAY, oi, 0)))
        return readers

    def _iterations(self) -> int:
        opts = self._optimizers()
        try:
            return int(keras.ops.convert_to_numpy(opts[0].iterations)) if opts else 0
        except Exception:
            return 0

    def _config(self, fit_locals: dict) -> dict:
        model = self.model
        params = self.params or {}
        batch_size = fit_locals.get("batch_size")
        if not isinstance(batch_size, int):  # a dataset or generator batches itself: ask Keras' adapter
            adapter = getattr(fit_locals.get("epoch_iterator"), "data_adapter", None)
            batch_size = getattr(adapter, "batch_size", None)
        policy = getattr(getattr(model, "dtype_policy", None), "name", None)
        opt = getattr(model, "optimizer", None)
        opts = self._optimizers()
        cfg: dict[str, Any] = {
            "framework": "keras",
            "framework_version": keras.__version__,
            "backend": keras.backend.backend(),
            "batch_size": batch_size if isinstance(batch_size, int) else None,
            "epochs": params.get("epochs"),
            "batches_per_epoch": params.get("steps"),
            "dtype_policy": policy,
            "precision": _PRECISION.get(policy, policy),
            "loss_scaling": opt is not None and hasattr(opt, "inner_optimizer"),
            "accumulate_grad_batches": (getattr(opts[0], "gradient_accumulation_steps", None) or 1) if opts else 1,
            "jit_compile": getattr(model, "jit_compile", None),
            "steps_per_execution": getattr(model, "steps_per_execution", None),
            "run_eagerly": getattr(model, "run_eagerly", None),
            "world_size": 1,
            "optimizers": [{"class": type(o).__name__, "config": json_safe(o.get_config())} for o in opts],
            "loss": json_safe(getattr(model, "loss", None)),
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "control": self._ctl.describe() if self._ctl is not None else None,
            ev.CONFIG_CALLBACKS: [_callback_entry(c) for c in self._callbacks
                                  if not isinstance(c, TMonCallback) and type(c).__name__ not in _KERAS_DEFAULTS],
        }
        try:
            cfg["num_parameters"] = model.count_params()
            cfg["trainable_parameters"] = sum(math.prod(w.shape) for w in model.trainable_weights)
        except ValueError:  # not built yet
            pass
        return cfg

    @override
    @guarded
    def on_train_end(self, logs=None):
        session = self.session
        if session is None or session.ended:
            return
        self._unwrap()
        self._scan_checkpoints()
        session.event(ev.TRAIN_END, step=self._step, data=self._end_reason())
        unwatch(session)
        session.end(ev.COMPLETED)
        if session.writes_metrics and session.recorder is not None:
            self._end_iterations = self._iterations()
            _watch_evaluate(self)

    def _end_reason(self) -> dict:
        """``train_end``'s data: why the fit ended. A fit that ran all its epochs (the last one whole)
        ended by its length, whatever else asked to stop at that last epoch."""
        params = self.params or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        if self._last_epoch is not None and self._last_epoch + 1 == epochs and (
                not isinstance(steps, int) or self._epoch_steps >= steps):
            return {"reason": ev.END_MAX_EPOCHS, "epochs": epochs}
        if self._stop_requested:
            return {"reason": ev.END_STOP_REQUEST}
        stopper = next((c for c in self._callbacks
                        if isinstance(c, keras.callbacks.EarlyStopping) and c.stopped_epoch > 0), None)
        if stopper is not None:
            settings = {k: v for k, v in _callback_entry(stopper).items() if k != "name"}
            return {"reason": ev.END_EARLY_STOPPING, "callback": type(stopper).__name__, **settings,
                    "mode": _resolved_mode(stopper), "stopped_epoch": stopper.stopped_epoch,
                    "best_epoch": getattr(stopper, "best_epoch", None)}
        if getattr(self.model, "stop_training", False):  # another callback (TerminateOnNaN...) or the user
            return {"reason": ev.END_SHOULD_STOP}
        # every epoch ran, the last short of steps_per_epoch: Keras warned that the input ran out of data
        return {"reason": ev.END_DATA_EXHAUSTED, "steps_per_epoch": steps, "last_epoch_steps": self._epoch_steps}

    def _current_step(self) -> int:
        return self._step

    # ------------------------------------------------------------ seeing exceptions
    def _wrap(self, name: str) -> None:
        """Route ``model.<name>`` (a step function of this fit) through a wrapper that sees its exceptions."""
        model = self.model
        fn = getattr(model, name, None)
        if fn is None or name in self._wrapped:
            return
        callback = self

        def step_function(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                callback._on_exception(exc)
                raise

        setattr(model, name, step_function)
        self._wrapped[name] = (fn, step_function)

    def _unwrap(self) -> None:
        model = self.model
        for name, (fn, wrapper) in self._wrapped.items():
            if getattr(model, name, None) is wrapper:  # unless Keras rebuilt it meanwhile
                setattr(model, name, fn)
        self._wrapped = {}

    def _on_exception(self, exc: BaseException) -> None:
        try:
            session = self.session
            if session is not None and not session.ended:
                self._unwrap()
                session.fail(exc, self._step)
                unwatch(session)
        except Exception:  # never mask the user's exception with one of ours
            pass

    # ------------------------------------------------------------ per batch (the hot path)
    @override
    @guarded
    def on_train_batch_begin(self, batch, logs=None):
        self._t_batch = _perf()
        self._batch_begin = batch
        if self._ctl is not None and self._step >= self._ctl.next_step:  # the hot path's one check
            self._apply(self._ctl.due(self._step), self._step)
        if self._rec is None:
            return
        if self._scan_next_batch:
            self._scan_next_batch = False
            self._scan_checkpoints()
        values = {}
        for opt, lr_key, read_lr, mom_attr, mom_key, wd_key in self._readers:
            values[lr_key] = read_lr()
            if mom_attr is not None:
                values[mom_key] = getattr(opt, mom_attr)
            wd = getattr(opt, "weight_decay", None)
            if type(wd) in _PLAIN:
                values[wd_key] = wd
        self._opt_values = values

    @override
    @guarded
    def on_train_batch_end(self, batch, logs=None):
        rec = self._rec
        if rec is None:
            return
        now = _perf()
        values = {k: v for k, v in logs.items() if type(v) in _PLAIN} if logs else {}
        self._batch_logs = values.copy()
        values.update(self._opt_values)
        t0 = self._t_batch
        if t0 is not None:
            values[STEP_TIME] = now - t0
            if self._t_last_end is not None:
                values[DATA_TIME] = t0 - self._t_last_end
        values[EPOCH] = self._epoch
        step = self._step
        rec.log(values, step)
        self._last_step = step
        self._step = step + max(1, batch - self._batch_begin + 1)  # steps_per_execution runs several
        if self._scan_every and self._step % self._scan_every == 0:
            self._ckpt_context = (self._step, self._epoch, self._batch_logs)
            self._scan_checkpoints()  # saved by a ModelCheckpoint listed before this callback
            self._scan_next_batch = True  # ... or after it
        self._t_last_end = _perf()

    # ------------------------------------------------------------ epochs, validation, checkpoints
    @override
    @guarded
    def on_epoch_begin(self, epoch, logs=None):
        if self.session is None or self.session.ended:
            return
        self._scan_checkpoints()  # saved at the last epoch's end by a callback listed after this one
        self._epoch = epoch
        self._epoch_first_step = self._step
        self._t_last_end = None
        if self._ctl is not None:
            self._ctl.on_epoch_start(epoch, self._step)
        self._readers = self._optimizer_readers()  # a callback may have swapped the lr for a schedule
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
            values = {k: v for k, v in logs.items() if type(v) in _PLAIN and k not in last
                      and not k.startswith(_LR_LOG_KEY)}
            if values:
                self._rec.log(values, self._last_step if self._last_step is not None else self._step)
        self._ckpt_context = (self._step, epoch, logs)
        self._scan_checkpoints()
        self._last_epoch, self._epoch_steps = epoch, self._step - self._epoch_first_step
        self.session.event(ev.EPOCH_END, step=self._step, epoch=epoch)

    @override
    @guarded
    def on_test_begin(self, logs=None):
        session = self.session
        if session is None:
            return
        if not session.ended:  # the validation of a fit
            self._wrap("test_function")
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
            session.log_evaluation({f"test_{k}": v for k, v in (logs or {}).items() if type(v) in _PLAIN}, step)
            session.end_evaluation(step)

    def _after_fit(self) -> bool:
        """Whether the model is still as this callback's fit left it: no fit has trained it since."""
        return self._end_iterations is not None and self._iterations() == self._end_iterations

    def _evaluation_step(self) -> int:
        return self._last_step if self._last_step is not None else self._step

    def _scan_checkpoints(self, record: bool = True) -> None:
        """Record the files ``ModelCheckpoint`` wrote (or rewrote) since the last scan."""
        if self._rec is None or not self._ckpt_globs:
            return
        step, epoch, logs = self._ckpt_context
        for pattern, cb in self._ckpt_globs:
            for path in glob.glob(pattern):
                try:
                    mtime = os.path.getmtime(path)
                except OSError:
                    continue
                if self._known_ckpts.get(path) == mtime:
                    continue
                self._known_ckpts[path] = mtime
                if record:
                    value = logs.get(cb.monitor)
                    self._rec.checkpoint(path, step=step, epoch=epoch, monitor=cb.monitor,
                                         monitor_value=value if type(value) in _PLAIN else None,
                                         source="ModelCheckpoint")


    # ------------------------------------------------------------ control decisions
    def _optimizer(self):
        opts = self._optimizers()
        if len(opts) != 1:
            raise Rejected(f"tmon steers a model with one optimizer; this one has {len(opts)}")
        return opts[0]

    def _apply(self, decisions, step: int) -> None:
        apply_decisions(self._ctl, decisions, step, lambda d: self._apply_one(d, step))

    def _apply_one(self, d, step: int) -> dict:
        model = self.model
        if isinstance(d, SetParams):
            old, new = _keras.apply_changes(self._optimizer(), d.changes, d.mode)
            if any(c.name == "lr" for c in d.changes):
                self._readers = self._optimizer_readers()  # the lr may now be another schedule object
            return {"old": old, "new": new}
        if isinstance(d, SaveCheckpoint):
            folder = self._manual_dir()
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"tmon-{self.run_id}-step={step}.keras")
            model.save(path)  # Keras' own format: weights, optimizer state, config
            self._known_ckpts[path] = os.path.getmtime(path)  # not a ModelCheckpoint file, whatever its glob
            self._rec.checkpoint(path, step=step, epoch=self._epoch, source="manual", description=d.description,
                                 tags=d.tags)
            return {"new": {"path": path}, "reason": d.description}
        if isinstance(d, Rollback):
            _keras.load_weights(model, d.path)
            return {"old": {"step": step}, "new": {"checkpoint_id": d.checkpoint_id, "path": d.path},
                    "event": ROLLBACK_EVENT, "reason": f"rolled back to checkpoint {d.checkpoint_id}"}
        if isinstance(d, Stop):
            model.stop_training = True  # this batch runs, then fit ends as EarlyStopping ends it
            self._stop_requested = True
            return {"event": STOPPED_EVENT, "reason": d.reason or "stop requested"}
        raise Rejected(f"unknown decision {type(d).__name__}")

    def _manual_dir(self) -> str:
        """The directory of this fit's first ModelCheckpoint (when it has no placeholders), else ./tmon-checkpoints."""
        for cb in self._checkpoints:
            path = cb.filepath
            if isinstance(path, str) and "://" not in path and "{" not in os.path.dirname(path):
                return os.path.dirname(os.path.abspath(path))
        return os.path.abspath("tmon-checkpoints")


def _callback_entry(cb) -> dict:
    """One ``config["callbacks"]`` item: the callback's class and the settings advice reads."""
    entry: dict[str, Any] = {"name": type(cb).__name__}
    names: tuple = ()
    if isinstance(cb, keras.callbacks.EarlyStopping):
        names = ("monitor", "mode", "patience", "min_delta", "baseline", "restore_best_weights", "start_from_epoch")
    elif isinstance(cb, keras.callbacks.ModelCheckpoint):
        names = ("monitor", "mode", "save_best_only", "save_weights_only", "save_freq", "filepath")
    elif isinstance(cb, keras.callbacks.ReduceLROnPlateau):
        names = ("monitor", "mode", "factor", "patience", "min_delta", "cooldown", "min_lr")
    for name in names:
        value = getattr(cb, name, None)
        if name == "min_delta" and isinstance(value, _PLAIN):
            value = abs(value)  # Keras negates it once it knows the monitored value must fall
        entry[name] = value if value is None or type(value) in (bool, int, float, str) else json_safe(value)
    return entry


def _resolved_mode(cb) -> str:
    """"min" or "max" as the callback compares (``mode="auto"`` resolved by Keras at its first epoch)."""
    op = getattr(cb, "monitor_op", None)
    return "min" if op is keras.ops.less else "max" if op is keras.ops.greater else cb.mode


def _watch_evaluate(cb: TMonCallback) -> None:
    """Route ``model.evaluate`` through ``cb`` after its fit: ``model.evaluate(x, y)`` is called without
    callbacks, as in keras-io's examples, and its result belongs to the run that trained the model.

    The model gets an instance attribute wrapping its own ``evaluate``: it adds ``cb`` to the
    evaluation's callbacks (``on_test_begin/end`` record it) while no other fit has trained the model
    since, and removes itself once one has. The next fit with a TMonCallback removes it at its start.
    """
    model = cb.model
    _unwatch_evaluate(model)
    original = model.evaluate

    @functools.wraps(original)
    def evaluate(*args, **kwargs):
        callbacks = args[6] if len(args) > 6 else kwargs.get("callbacks")
        if isinstance(callbacks, keras.callbacks.CallbackList):  # the validation of a fit without tmon
            return original(*args, **kwargs)
        if not cb._after_fit():  # trained again since: its evaluations are not this run's
            _unwatch_evaluate(model)
            return original(*args, **kwargs)
        listed = list(callbacks) if isinstance(callbacks, (list, tuple)) else [] if callbacks is None else [callbacks]
        if not any(c is cb for c in listed):
            listed.append(cb)
            if len(args) > 6:
                args = (*args[:6], listed, *args[7:])
            else:
                kwargs["callbacks"] = listed
        return original(*args, **kwargs)

    evaluate._tmon_run_evaluation = True
    setattr(model, "evaluate", evaluate)


def _unwatch_evaluate(model) -> None:
    if getattr(vars(model).get("evaluate"), "_tmon_run_evaluation", False):
        delattr(model, "evaluate")


__all__ = ["TMonCallback"]


options_signature(TMonCallback)
