"""The Lightning adapter: one implementation for ``lightning.pytorch`` and ``pytorch_lightning``.

``tmon_callbacks.lightning`` and ``tmon_callbacks.pytorch_lightning`` each define
``class TMonCallback(TMonCallbackMixin, <package>.Callback)``; the mixin holds every hook and reads
the package's own classes from ``cls._pl`` (a ``LightningPackage``).

Lightning hook → what tmon records:

==============================  ===========================================================
``setup("fit")``                 opens the run (global rank 0) and the hardware sampler
                                 (each node's local rank 0); the run id is broadcast to all ranks
``on_train_start``               ``train_start`` event; config (hparams, precision, batch size,
                                 accumulate_grad_batches, dataloader workers, devices, strategy,
                                 optimizers, schedulers, the callbacks in use: ``callbacks``);
                                 attaches tmon's logger
``self.log`` (via the logger)    every metric Lightning hands its loggers, at Lightning's step,
                                 at the cadence of ``log_every_n_steps``
``on_train_batch_start/end``     every optimizer step: ``loss`` (what ``training_step`` returned;
                                 with ``accumulate_grad_batches=N`` the mean over the step's N
                                 micro-batches), ``lr``/``momentum``/``weight_decay`` per param group
                                 (as the step's optimizer update used them), ``step_time`` (seconds
                                 in the step's batches), ``data_time`` (seconds waiting for them,
                                 the epoch's first included), ``epoch`` (and ``grad_norm`` from
                                 ``on_before_optimizer_step`` when asked); between logging steps
                                 also the step's ``self.log`` values, as Lightning would hand them
                                 to its loggers there
``on_before_backward``,          with ``guard=`` (``tmon_core.guard``): the step's loss and gradient
``on_before_optimizer_step``     norm checked with one device sync (the gradients only under DDP,
                                 the same on every rank; the loss only under 16-mixed), a non-finite
                                 step's gradients dropped so the optimizer skips it; the guard's
                                 snapshots, rollback and stop apply at ``on_train_batch_start``
``ModelCheckpoint`` saves        ``checkpoint`` rows and events (path, size, step, monitor value);
                                 files its top-k policy removes are marked deleted
epoch/validation hooks           ``epoch_start``/``epoch_end``, ``validation_start``/``end``
``on_exception``                 ``exception`` or ``oom`` event, ``train_end`` (reason exception or
                                 interrupt); status failed (interrupted on KeyboardInterrupt)
``teardown("fit")``              ``train_end`` with why the fit ended (``events.END_REASONS``:
                                 early_stopping with the callback's settings, time_limit, max_steps,
                                 max_epochs, stop_request, should_stop); status completed
``setup/teardown("test"|         ``trainer.test()``/``validate()`` after the fit: recorded into the
"validate")``                    fit's run between ``evaluation_start``/``end`` (status unchanged)
==============================  ===========================================================

Steps are Lightning's logging steps (``_batches_that_stepped``: optimizer steps taken before the
batch), so ``loss`` and a ``self.log``-ged ``train_loss`` line up. Validation events carry the
step of the training batch they follow, the step Lightning logs the validation metrics at (the
``epoch_end`` event carries the next step). On a logging step the batch's values wait in the
callback from ``on_train_batch_end`` until Lightning hands its loggers the ``self.log`` values, a
moment later, and both go to the recorder as one entry (with the batch's own wall time): half the
entries for the writer to convert per step. Between logging steps the ``self.log`` values are read
from Lightning's result collection (tensors as they are, converted by the writer thread, no
device sync) into the batch's entry, so there is one entry per step either way.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, ClassVar

from typing_extensions import override

from tmon_core import events as ev
from tmon_core.guard import Guard
from tmon_core.keys import DATA_TIME, EPOCH, GRAD_NORM, LOSS, STEP_TIME
from tmon_core.session import RunSession

from . import _lightning_trainer as lt
from . import _ray, _torch
from ._adapter import CheckpointWatcher, StepClock, guarded
from ._ddp import DecisionLink
from ._guard_torch import TorchGuard
from ._lightning_control import Steering
from ._lightning_steps import StepEntries
from ._lightning_trainer import LightningPackage
from ._options import make_options, options_doc, options_signature
from ._workarounds import lightning as wa

if TYPE_CHECKING:  # what the mixins are mixed into (either package: the same API)
    from lightning.pytorch import Callback as _Callback
    from lightning.pytorch.loggers import Logger as _Logger
else:
    _Callback = _Logger = object

_now = time.time


#: the docstring of each package's ``TMonCallback``
DOC = f"""Record a Lightning fit into a tmon store.

    >>> trainer = Trainer(max_epochs=3, callbacks=[TMonCallback()])   # doctest: +SKIP

    {options_doc(indent=4, run_name="readable name of the run; default ``lightning-<date>-<time>``.")}

    One instance can serve several ``fit()`` calls: each is its own run.
    """


class TMonLoggerMixin(_Logger):
    """Receives what ``self.log`` produces, exactly as Lightning's own loggers do (mixed into the
    package's ``Logger``)."""

    def __init__(self, callback):
        super().__init__()
        self._cb = callback

    @property
    @override
    def name(self) -> str:
        return "tmon"

    @property
    @override
    def version(self) -> str | None:
        return self._cb.run_id

    @override
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # read from the module at train start instead

    @override
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._cb._on_logged(metrics, step)

    @override
    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self._cb._scan_checkpoints()


class TMonCallbackMixin(_Callback):
    """Every hook of ``TMonCallback`` (mixed into the package's ``Callback``)."""

    _pl: ClassVar[LightningPackage]
    _logger_class: ClassVar[type]  # TMonLoggerMixin over the package's Logger

    def __init__(self, store: str | os.PathLike | None = None, **options: Any):
        super().__init__()
        self.options = make_options(store, options)
        self.session: RunSession | None = None
        self.run_id: str | None = None
        self._logger = self._logger_class(self)
        self._state_key: str | None = None
        self._guard_opt = Guard.from_option(self.options.guard)
        if self._pl.skips_non_callable_hooks:
            unused = wa.UNUSED_BATCH_HOOKS
            if self._guard_opt is not None:  # the guard's check needs the loss and the step's gradients
                unused = tuple(h for h in unused if h != "on_before_backward")
            elif not self.options.log_grad_norm:
                unused = (*unused, "on_before_optimizer_step")
            wa.skip_unused_hooks(self, unused, self._pl.Callback, TMonCallbackMixin)

    # ------------------------------------------------------------ lifecycle
    @override
    @guarded
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            self._begin_evaluation(trainer, stage)
            return
        self._reset()
        framework, ranks = (
            self._pl.framework,
            {"local_rank": trainer.local_rank, "node_rank": trainer.node_rank},
        )
        opts, owner = self.options, {}
        # a Ray Train worker: the trial's run (rank 0 owns it, resumed after a restart), ranks by Ray
        # node; a SQLite store across nodes raises here, before training (_ray.SharedStoreRequired)
        self._ray = ray = _ray.join(self.options)
        if ray is not None:
            opts, owner = ray.options, {"run_id": ray.run_id, "resume": True}
            ranks = {"local_rank": ray.local_rank, "node_rank": ray.node_rank}
        run_id = session = None
        if trainer.global_rank == 0:
            session = RunSession(opts, framework, global_rank=0, **ranks, **owner)
            run_id = session.run_id
        if trainer.world_size > 1:
            run_id = trainer.strategy.broadcast(run_id, src=0)
        if session is None:
            session = RunSession(opts, framework, global_rank=trainer.global_rank, run_id=run_id, **ranks)
        self.session, self.run_id = session, run_id
        self._trainer = trainer
        self._rec = session.recorder if session.writes_metrics else None
        self._ctl = session.controller
        self._link = DecisionLink(self.options) if trainer.world_size > 1 else None
        self._steering = Steering(self._pl, self._ctl, self._rec, self._ckpts, run_id)

    def _close_link(self) -> None:
        link, self._link = getattr(self, "_link", None), None
        if link is not None:
            link.close()

    def _reset(self) -> None:
        self._close_link()  # a fit whose teardown never came left its link
        self.session = self.run_id = self._trainer = None
        self._rec = self._ctl = self._link = self._ray = None
        self._step_offset = 0  # added to Lightning's steps: a restarted Ray trial continues its run
        self._ckpts = CheckpointWatcher()  # the folders ModelCheckpoint writes, from train start
        self._steering = Steering(self._pl, None, None, self._ckpts, None)  # this fit's, from setup
        self._optimizers: list = []
        self._step = 0
        self._batch_step = 0  # the step the last training batch was recorded at
        self._last_global_step = 0
        self._accum = 1  # micro-batches per optimizer step (0: manual optimization)
        self._clock = StepClock()
        self._entries = StepEntries(None, self)  # this fit's, from train start
        self._opt_values = self._grad_norm = None
        self._guard = self._guard_loss = None  # this fit's TorchGuard (guard=...), from train start
        self._guard_grads = True  # whether the guard's check reads the gradients (not under fp16's scaler)
        self._evaluating = None  # "test" | "validate" while evaluation after the fit is recorded

    @override
    @guarded
    def on_train_start(self, trainer, pl_module) -> None:
        self._optimizers = list(trainer.optimizers)
        self._steering.schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        self._step = self._last_global_step = trainer.global_step
        # 0: every batch is a step (manual optimization: Lightning counts batches, not the
        # optimizer steps they take); N > 1: N micro-batches per optimizer step
        self._accum = (
            0
            if not pl_module.automatic_optimization
            else 1
            if trainer.strategy.handles_gradient_accumulation
            else trainer.accumulate_grad_batches
        )
        if self._guard_opt is not None:  # on every rank: each skips, snapshots and restores its own
            self._start_guard(trainer, pl_module)
        if self._rec is None:
            return
        if self._ray is not None:  # an earlier attempt of this Ray trial recorded steps: go on after them
            self._step_offset = self._ray.resume(self._rec, trainer.global_step)
            self._step += self._step_offset
        self._entries = StepEntries(self._rec, self, wa.result_collection(trainer), self._accum)
        self._ckpts.patterns = CheckpointWatcher.in_folders(lt.checkpoint_dirs(self._pl, trainer), "*.ckpt")
        self._ckpts.scan()  # files from earlier runs are not this run's
        self._attach(trainer)  # only now, after ModelCheckpoint resolved its directory from loggers[0]
        if self._ctl is not None:
            self._ctl.get_value = lambda name, group: _torch.read_param(trainer.optimizers, name, group)
        config = lt.run_config(self._pl, trainer, pl_module, self, self._ctl)
        self._rec.update_config(**config)
        if self._ray is not None:  # the trial's config as hyperparameters, Ray's settings
            self._rec.update_config(**self._ray.config(config.get("hparams")))
        total = lt.total_steps(trainer)
        if total is not None:
            self._rec.update_run(total_steps=total + self._step_offset)
        self.session.event(ev.TRAIN_START, step=self._step)

    @override
    @guarded
    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            if self._evaluating is not None:
                self._end_evaluation(trainer)
            return
        if self.session is None:
            return
        self._detach(trainer)
        self._close_guard()
        self._close_link()  # (every rank: the last exchange was at the last batch's start)
        if not self.session.ended:
            if self._rec is not None:
                self._entries.release()
                self._scan_checkpoints()
                self._ray_checkpoint(trainer)
                self.session.event(
                    ev.TRAIN_END,
                    step=self._step,
                    **lt.end_reason(self._pl, trainer, self._steering.stop_requested),
                )
            self.session.end(ev.COMPLETED)
        self._trainer = None

    @override
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        try:
            if self._evaluating is not None:  # the fit's run keeps its status
                self._end_evaluation(trainer)
            elif self.session is not None:
                self._detach(trainer)
                self._close_guard()
                if self._rec is not None:
                    self._entries.release()  # the last batch before the crash is kept
                self.session.fail(exception, self._step, record_train_end=True)
                self._trainer = None
        except Exception:  # never mask the user's exception with one of ours
            pass

    def _start_guard(self, trainer, pl_module) -> None:
        """The guard of this fit (``guard=``): rank 0 decides, every rank checks its steps and keeps
        its snapshots. Under fp16 with a gradient scaler, inf gradients are the scaler's business (it
        skips those steps and lowers its scale): the guard judges the loss only."""
        self._guard_grads = str(trainer.precision) not in ("16-mixed", "16")  # (16-true has no scaler)
        self._guard = TorchGuard(
            self._guard_opt,
            self._rec,
            self._ctl,
            pl_module,
            trainer.optimizers,
            self._steering.schedulers,
            self._step,
        )
        self._steering.guard = self._guard

    def _close_guard(self) -> None:
        if self._guard is not None:
            self._guard.close()
            self._guard = self._guard_loss = None

    def _begin_evaluation(self, trainer, stage: str) -> None:
        """``trainer.test()`` / ``validate()`` after this callback's fit: recorded into that run."""
        session = self.session
        if stage not in ("test", "validate") or session is None or not session.ended:
            return
        self._evaluating = stage
        session.begin_evaluation(stage, step=self._step)
        self._attach(trainer)

    def _end_evaluation(self, trainer) -> None:
        self._detach(trainer)
        self._evaluating = None
        self.session.end_evaluation()

    def _attach(self, trainer) -> None:
        if self._logger not in trainer.loggers:
            trainer.loggers = list(trainer.loggers) + [self._logger]

    def _detach(self, trainer) -> None:
        if self._logger in trainer.loggers:
            trainer.loggers = [lg for lg in trainer.loggers if lg is not self._logger]

    # ------------------------------------------------------------ per batch (the hot path)
    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._clock.begin()
        step = self._step
        entries = self._entries
        if entries.held is not None:
            entries.release()
        if self._link is not None:  # DDP: rank 0 decides, every rank applies at this step
            decisions = self._link.exchange(self._ctl, step)
            if decisions:
                self._steering.apply(decisions, trainer, pl_module, step)
        elif self._ctl is not None and step >= self._ctl.next_step:  # the hot path's one check
            self._steering.apply(self._ctl.due(step), trainer, pl_module, step)
        if self._rec is not None:
            # the values this batch's optimizer step uses: by batch end a step-interval
            # scheduler has already moved them on to the next batch's
            self._opt_values = _torch.optimizer_values(self._optimizers)

    @override
    @guarded
    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._guard is not None:  # (with accumulation, the sum: a NaN in any micro-batch stays NaN)
            loss = loss.detach()
            self._guard_loss = loss if self._guard_loss is None else self._guard_loss + loss

    @override
    @guarded
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._guard is not None:
            # after backward (and DDP's all-reduce), before the update: one device sync
            loss, self._guard_loss = self._guard_loss, None
            self._guard.check(
                self._step,
                pl_module.parameters(),
                [optimizer],
                # DDP: the gradients only, the same on every rank, so every rank decides alike
                loss if trainer.world_size == 1 or not self._guard_grads else None,
                grads=self._guard_grads,
            )
            if self.options.log_grad_norm and self._rec is not None and self._guard_grads:
                self._grad_norm = self._guard.grad_norm  # the check's norm (None after a skip: no grads)
                return
        if self.options.log_grad_norm and self._rec is not None:
            self._grad_norm = _torch.grad_norm(pl_module.parameters())

    @override
    @guarded
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = self._step
        self._batch_step = step
        gs = trainer.global_step
        # Lightning's logging step advances once per batch that ends an accumulation window
        # (every batch in manual optimization, however many optimizers it steps)
        stepped = gs != self._last_global_step or self._accum == 0
        if stepped:
            self._last_global_step = gs
            self._step = step + 1
            if self._guard is not None:
                self._guard.step_end(step)
        rec = self._rec
        if rec is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs  # (or a bare tensor)
        busy, wait = self._clock.end(stepped or self._accum <= 1)
        if self._accum > 1:  # one record per optimizer step
            self._entries.add_micro_batch(loss)
            if not stepped:
                return
            loss = self._entries.window_loss()
        values = self._opt_values or _torch.optimizer_values(self._optimizers)
        self._opt_values = None
        if loss is not None:
            values[LOSS] = loss
        if busy is not None:
            values[STEP_TIME] = busy
        if wait is not None:
            values[DATA_TIME] = wait
        if self._grad_norm is not None:
            values[GRAD_NORM] = self._grad_norm
            self._grad_norm = None
        every = trainer.log_every_n_steps
        logs = every and ((step + 1) % every == 0 or trainer.should_stop) or trainer.fast_dev_run
        self._entries.hold(values, step, _now(), trainer.current_epoch, not logs)  # (see _lightning_steps)
        self._clock.pause()  # (the time spent here is not the next batch's data loading)

    def _on_logged(self, metrics: dict, step: int | None) -> None:
        if self._evaluating is not None:  # trainer.test()/validate() after the fit
            if self.session is not None:
                self.session.log_evaluation({k: v for k, v in metrics.items() if k != EPOCH}, step)
        elif self._rec is not None and metrics:
            if self._step_offset and step is not None:
                step += self._step_offset
            self._entries.logged(metrics, step, self._step)

    # ------------------------------------------------------------ epochs, validation, checkpoints
    @override
    @guarded
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # the epoch's data iterator is made (workers started) and its first batch fetched after
        # this hook: that wait is the first batch's data_time
        self._clock.new_epoch(first_wait=True)
        if self._ctl is not None:
            self._ctl.on_epoch_start(trainer.current_epoch, self._step)
        if self._rec is not None and self._ckpts.patterns:
            # ModelCheckpoint removes a top-k loser after its logger hook ran: see it now
            self._scan_checkpoints()
        self._ray_checkpoint(trainer)  # reported after tmon's epoch end hook ran
        self.session and self.session.event(ev.EPOCH_START, step=self._step, epoch=trainer.current_epoch)

    @override
    @guarded
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._entries.release()
        self._ray_checkpoint(trainer)
        self.session and self.session.event(ev.EPOCH_END, step=self._step, epoch=trainer.current_epoch)

    @override
    @guarded
    def on_validation_start(self, trainer, pl_module) -> None:
        self._entries.release()
        if self.session is not None and not trainer.sanity_checking and self._evaluating is None:
            self.session.event(ev.VALIDATION_START, step=self._batch_step, epoch=trainer.current_epoch)

    @override
    @guarded
    def on_validation_end(self, trainer, pl_module) -> None:
        if self.session is not None and not trainer.sanity_checking and self._evaluating is None:
            self.session.event(ev.VALIDATION_END, step=self._batch_step, epoch=trainer.current_epoch)
        self._clock.pause()  # validation time is not data-loading time

    def _scan_checkpoints(self) -> None:
        """Record checkpoint files that appeared (or were rewritten) since the last scan, and those removed."""
        if self._rec is None:
            return
        trainer = self._trainer
        new, removed = self._ckpts.scan()
        for path in new:
            monitor, value = lt.checkpoint_monitor(self._pl, trainer, path)
            self._rec.checkpoint(
                path,
                step=trainer.global_step + self._step_offset,
                epoch=trainer.current_epoch,
                monitor=monitor,
                monitor_value=value,
                source="ModelCheckpoint",
            )
        for path in removed:
            self._rec.checkpoint_removed(path)

    def _ray_checkpoint(self, trainer) -> None:
        """A checkpoint Ray persisted since the last look (``RayTrainReportCallback`` reports at epoch
        end), recorded at its path in the run's storage."""
        if self._ray is not None and self._rec is not None:
            self._ray.record_checkpoint(
                self._rec, trainer.global_step + self._step_offset, trainer.current_epoch
            )

    @property
    @override
    def state_key(self) -> str:
        # two tmon callbacks in one Trainer must not share checkpoint state; the run name keys it
        # when given (stable if a resumed fit points at another store), else the store.
        # Kept: Lightning reads it at every hook call.
        wa.finish_lazy_instance(self)
        if self._state_key is None:
            if self.options.run_name:
                self._state_key = wa.state_key(self, run_name=self.options.run_name)
            else:
                self._state_key = wa.state_key(self, store=str(self.options.store))
        return self._state_key

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}  # JSON-safe: which run wrote the checkpoint


options_signature(TMonCallbackMixin)  # (every TMonCallback's __init__: help() and IDEs show the options)
