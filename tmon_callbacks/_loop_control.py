"""How ``tmon_core.track()`` applies the controller's decisions to a plain loop's optimizer,
scheduler and model (``torch_loop`` decides when: at each ``t.step()`` and epoch start)."""

from __future__ import annotations

import os

import torch

from tmon_core import events as ev
from tmon_core.control import Rollback, SaveCheckpoint, SetParams, Stop

from . import _torch
from ._adapter import Rejected, apply_decisions, warn_once


class LoopControl:
    """The decision handlers of ``torch_loop.Tracker`` (a base class of it), on the tracker's
    ``model``, ``_optimizers``, ``_schedulers``, ``checkpoint_dir``, ``run_id``, ``_epoch``,
    recorder ``_rec``, controller ``_ctl`` and ``_link`` (``_ddp.DecisionLink`` when distributed)."""

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
        handlers = {
            SetParams: self._set_params,
            SaveCheckpoint: lambda d: self._save_requested(d, step),
            Rollback: lambda d: self._rollback(d, step),
            Stop: self._stop,
        }
        if self._guard is not None:  # its snapshot and rollback (a Rollback's subclass: looked up first)
            handlers.update(self._guard.handlers(step))
        apply_decisions(self._ctl, decisions, step, handlers)

    def _set_params(self, d: SetParams) -> dict:
        if not self._optimizers and any(c.custom is None for c in d.changes):
            raise Rejected("track() was given no optimizer: pass optimizer= to steer its parameters")
        old, new = _torch.apply_changes(self._optimizers, self._schedulers, d.changes, d.mode)
        return {"old": old, "new": new}

    def _save_requested(self, d: SaveCheckpoint, step: int) -> dict:
        path = self._save(step, source="manual", description=d.description, tags=d.tags)
        return {"new": {"path": path}, "reason": d.description}

    def _rollback(self, d: Rollback, step: int) -> dict:
        if self.model is None:
            raise Rejected("track() was given no model: pass model= so tmon can roll it back")
        model_state, opt_states = _torch.read_loop_checkpoint(d.path)
        if opt_states is not None:
            _torch.check_optimizer_states(self._optimizers, opt_states)
        _torch.load_model_state(_torch.unwrap_model(self.model), model_state, d.path)
        if opt_states is not None:
            _torch.restore_optimizer_states(self._optimizers, opt_states)
        return {
            "old": {"step": step},
            "new": {
                "checkpoint_id": d.checkpoint_id,
                "path": d.path,
                "optimizer_restored": opt_states is not None,
            },
            "event": ev.ROLLBACK,
            "reason": f"rolled back to checkpoint {d.checkpoint_id}",
        }

    def _stop(self, d: Stop) -> dict:
        self.should_stop = self._stop_requested = True
        return {"event": ev.STOPPED, "reason": d.reason or "stop requested"}

    def _save(self, step: int, *, source: str, description: str | None = None, tags=None) -> str | None:
        """Save model, optimizer and scheduler state (PyTorch's own checkpoint layout) into
        ``checkpoint_dir`` as ``tmon-<run>-step=<step>.pt`` and record it; the path."""
        if self.model is None:
            raise Rejected("track() was given no model: pass model= so tmon can save checkpoints")
        path = os.path.abspath(os.path.join(self.checkpoint_dir, f"tmon-{self.run_id}-step={step}.pt"))
        if self._rec is None:
            return path  # another process of the run writes the file
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        opt_states = [o.state_dict() for o in self._optimizers]
        state = {
            "model_state_dict": _torch.unwrap_model(self.model).state_dict(),
            "optimizer_state_dict": opt_states[0] if len(opt_states) == 1 else opt_states,
            "step": step,
            "epoch": self._epoch,
        }
        if self._schedulers:
            state["scheduler_state_dict"] = [s.state_dict() for s in self._schedulers]
        torch.save(state, path)
        self._rec.checkpoint(
            path, step=step, epoch=self._epoch, source=source, description=description, tags=tags
        )
        return path
