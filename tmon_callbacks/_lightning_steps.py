"""One recorder entry per Lightning training step.

A step's own values (``loss``, ``lr``..., from ``on_train_batch_end``) are held until what else
belongs to the step is known, so the step is one recorder entry: on a logging step Lightning hands
its loggers the step's ``self.log`` values right after that hook (merged by :meth:`StepEntries.logged`);
between logging steps they are read from Lightning's result collection when the entry is released
(next batch, epoch end, validation, the end of the fit), after the module's and later callbacks'
hooks logged theirs too. With ``accumulate_grad_batches=N`` the loss of a step is the mean over its
N micro-batches.
"""

from __future__ import annotations

from tmon_core.keys import EPOCH

from ._adapter import warn_once
from ._workarounds import lightning as wa


class StepEntries:
    """The entries of one fit's training steps, written to ``recorder`` (None: a process that
    records nothing). ``owner`` is the callback the warnings name; ``results`` Lightning's result
    collection (``_workarounds.lightning.result_collection``) or None; ``accumulate`` the
    micro-batches per optimizer step."""

    __slots__ = ("rec", "owner", "results", "held", "accumulate", "_names", "_loss", "_count")

    def __init__(self, recorder, owner, results=None, accumulate: int = 1):
        self.rec = recorder
        self.owner = owner
        self.results = results
        # (values, step, wall time, epoch, between logging steps) of the last batch, not yet recorded
        self.held = None
        self.accumulate = accumulate
        self._names: dict = {}  # result key -> the name Lightning logs it under
        self._loss = None  # the sum of the micro-batch losses of the step in progress
        self._count = 0

    # ------------------------------------------------------------ gradient accumulation
    def add_micro_batch(self, loss) -> None:
        """A micro-batch's loss as Lightning hands it back (divided by ``accumulate_grad_batches``)."""
        if loss is not None:
            self._loss = loss if self._loss is None else self._loss + loss
            self._count += 1

    def window_loss(self):
        """The loss of the step that just ended its window: the sum of its micro-batches' losses, the
        mean of what training_step returned (rescaled when the epoch's last window is short)."""
        loss, n = self._loss, self._count
        self._loss, self._count = None, 0
        if loss is not None and n != self.accumulate:
            loss = loss * (self.accumulate / n)
        return loss

    # ------------------------------------------------------------ entries
    def hold(self, values: dict, step: int, wall: float, epoch: int, between: bool) -> None:
        """Hold a step's own values (``between``: not a Lightning logging step)."""
        if self.held is not None:
            self.release()
        self.held = (values, step, wall, epoch, between)

    def release(self) -> None:
        """Record the held values (no logger call came for their step): with the step's
        ``self.log`` values when it was not a logging step."""
        held = self.held
        if held is None:
            return
        self.held = None
        values, step, wall, epoch, between = held
        plain = len(values)
        if between and self.results:
            self._add_logged_now(values)
        values[EPOCH] = epoch
        try:
            self.rec.log(values, step, wall_time=wall)
        except (TypeError, ValueError) as exc:  # a self.log key or value tmon refuses
            if len(values) == plain + 1:
                raise
            own = dict(list(values.items())[:plain])
            own[EPOCH] = epoch
            self.rec.log(own, step, wall_time=wall)
            warn_once(self.owner, "self.log values", exc)

    def logged(self, metrics: dict, step: int | None, current_step: int) -> None:
        """What Lightning hands its loggers (``step`` None: ``current_step``): merged into the held
        entry of that step, else recorded on its own."""
        held = self.held
        # (the held values have no epoch yet: the "epoch" Lightning adds to every logged dict
        # must not stop the merge; ours is set after, so the entry's keys keep one order)
        if held is not None and (step is None or step == held[1]) and held[0].keys().isdisjoint(metrics):
            self.held = None
            values, at, wall, epoch, between = held
            if between and self.results:  # a logger call Lightning's cadence did not foresee
                self._add_logged_now(values)
            values.update(metrics)
            values[EPOCH] = epoch
            try:
                self.rec.log(values, at, wall_time=wall)
                return
            except (TypeError, ValueError):  # one of the self.log values: record ours, then say which
                for k in metrics:
                    if k != EPOCH:
                        del values[k]
                self.rec.log(values, at, wall_time=wall)
        else:
            self.release()
        extra = {k: v for k, v in metrics.items() if k != EPOCH}  # recorded per batch already
        if extra:
            try:
                self.rec.log(extra, current_step if step is None else step)
            except (TypeError, ValueError) as exc:  # a key or value tmon refuses: say so, go on
                warn_once(self.owner, "log_metrics", exc)

    def _add_logged_now(self, values: dict) -> None:
        """The step's ``self.log`` values into ``values`` (``_workarounds.lightning.logged_now``);
        a Lightning whose result collection reads otherwise: one warning, and no more tries."""
        try:
            wa.logged_now(self.results, values, self._names)
        except Exception as exc:
            self.results = None
            warn_once(self.owner, "self.log values between logging steps", exc)
