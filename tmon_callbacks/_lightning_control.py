"""Control decisions applied to a Lightning fit: parameter changes to its optimizers (scaling their
schedulers), a checkpoint through ``trainer.save_checkpoint``, a rollback from a checkpoint file,
a stop through ``trainer.should_stop``."""

from __future__ import annotations

import os

from tmon_core import events as ev
from tmon_core.control import Rollback, SaveCheckpoint, SetParams, Stop

from . import _torch
from ._adapter import CheckpointWatcher, Rejected, apply_decisions


class Steering:
    """Applies one fit's decisions. ``controller`` (None on a process that only applies what rank 0
    decided) resolves them; ``recorder`` (None: records nothing) records a requested checkpoint,
    which ``checkpoints`` (the ModelCheckpoint folders' watcher) then knows as tmon's own."""

    def __init__(self, pl, controller, recorder, checkpoints: CheckpointWatcher, run_id: str | None):
        self.pl, self.controller, self.rec, self.checkpoints, self.run_id = (
            pl,
            controller,
            recorder,
            checkpoints,
            run_id,
        )
        self.schedulers: list = []  # the fit's LR schedulers, from train start
        self.stop_requested = False
        self.guard = None  # the fit's TorchGuard (guard=...): its snapshots and rollbacks

    def apply(self, decisions, trainer, pl_module, step: int) -> None:
        handlers = {
            SetParams: lambda d: self._set_params(d, trainer),
            SaveCheckpoint: lambda d: self._save_checkpoint(d, trainer, step),
            Rollback: lambda d: self._rollback(d, trainer, pl_module, step),
            Stop: lambda d: self._stop(d, trainer),
        }
        if self.guard is not None:  # its snapshot and rollback (a Rollback's subclass: looked up first)
            handlers.update(self.guard.handlers(step))
        apply_decisions(self.controller, decisions, step, handlers)

    def _set_params(self, d: SetParams, trainer) -> dict:
        old, new = _torch.apply_changes(trainer.optimizers, self.schedulers, d.changes, d.mode)
        return {"old": old, "new": new}

    def _save_checkpoint(self, d: SaveCheckpoint, trainer, step: int) -> dict:
        path = os.path.join(manual_checkpoint_dir(self.pl, trainer), f"tmon-{self.run_id}-step={step}.ckpt")
        trainer.save_checkpoint(path)  # every rank calls it; the strategy writes once
        if self.rec is not None:
            self.rec.checkpoint(
                path,
                step=step,
                epoch=trainer.current_epoch,
                source="manual",
                description=d.description,
                tags=d.tags,
            )
            # in a folder ModelCheckpoint's scan reads, it is known: the scan must not take it for
            # ModelCheckpoint's own (elsewhere the scan never sees it, nor may it know it)
            if self.checkpoints.covers(path):
                self.checkpoints.known(path)
        return {"new": {"path": path}, "reason": d.description}

    def _rollback(self, d: Rollback, trainer, pl_module, step: int) -> dict:
        ckpt = _torch.read_torch_checkpoint(d.path)
        state = ckpt.get("state_dict", ckpt)
        states = ckpt.get("optimizer_states")
        if states is not None:
            _torch.check_optimizer_states(trainer.optimizers, states)
        missing, unexpected = check_keys(pl_module, state)
        if missing or unexpected:
            raise Rejected(
                f"checkpoint {d.path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        pl_module.load_state_dict(state)
        if states is not None:
            _torch.restore_optimizer_states(trainer.optimizers, states)
        return {
            "old": {"step": step},
            "new": {
                "checkpoint_id": d.checkpoint_id,
                "path": d.path,
                "checkpoint_step": ckpt.get("global_step"),
            },
            "event": ev.ROLLBACK,
            "reason": f"rolled back to checkpoint {d.checkpoint_id}",
        }

    def _stop(self, d: Stop, trainer) -> dict:
        trainer.should_stop = True
        self.stop_requested = True
        return {"event": ev.STOPPED, "reason": d.reason or "stop requested"}


def manual_checkpoint_dir(pl, trainer) -> str:
    """Where a checkpoint requested through tmon goes: the first ModelCheckpoint's folder, else
    ``<default_root_dir>/checkpoints``."""
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, pl.ModelCheckpoint) and cb.dirpath:
            return cb.dirpath
    return os.path.join(trainer.default_root_dir, "checkpoints")


def check_keys(module, state: dict) -> tuple[list, list]:
    """The keys of ``module``'s state missing from ``state``, and those ``state`` has in excess."""
    own = set(module.state_dict().keys())
    theirs = set(state.keys())
    return sorted(own - theirs), sorted(theirs - own)
