"""Sharing control decisions across ranks so every rank applies the same change at the same step.

Rank 0 owns the controller. Before every batch all ranks take part in one broadcast of a
single int64 (the number of decisions) over a gloo process group of tmon's own, so a GPU run
never syncs its device for this; only when the number is non-zero do the decisions follow,
pickled as plain dicts (custom ``Param`` callables stay on each rank: they are looked up by
name in that rank's own callback options).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from tmon_core.control import Change, Rollback, SaveCheckpoint, SetParams, Stop
from tmon_core.guard import GuardRollback, GuardSnapshot

# a guard's decisions (snapshot, rollback, its lr change, stop) travel like the controller's: plain fields
_KINDS = {
    cls.__name__: cls for cls in (SetParams, SaveCheckpoint, Rollback, Stop, GuardSnapshot, GuardRollback)
}


class DecisionLink:
    def __init__(self, options):
        self._custom = options.params or {}
        self._group = (
            dist.new_group(backend="gloo") if dist.is_available() and dist.is_initialized() else None
        )
        self._count = torch.zeros(1, dtype=torch.int64)

    @property
    def group(self):
        """tmon's gloo process group (None: not distributed, or closed)."""
        return self._group

    def exchange(self, controller, step: int) -> list:
        """Rank 0: the controller's decisions for ``step``; other ranks: the same decisions, received."""
        decisions = []
        if controller is not None and step >= controller.next_step:
            decisions = controller.due(step)
        if self._group is None:
            return decisions
        self._count[0] = len(decisions)
        dist.broadcast(self._count, src=0, group=self._group)
        n = int(self._count[0])
        if n == 0:
            return decisions
        box = [[_to_wire(d) for d in decisions] if controller is not None else None]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return decisions if controller is not None else [_from_wire(w, self._custom) for w in box[0]]

    def close(self) -> None:
        """Release tmon's process group once the fit's last exchange is done (every process calls
        this at the fit's end; it is local). Left alive, each fit would add a gloo group, with its
        sockets and threads, to the process until it exits, and tear it down only at interpreter
        exit, while the other processes may still be running."""
        group, self._group = self._group, None
        if group is None:
            return
        try:
            if dist.is_initialized():
                dist.destroy_process_group(group)
        except Exception:  # (the user destroyed the world first: the group went with it)
            pass


def _to_wire(d) -> dict:
    out = {"kind": type(d).__name__}
    for f in dataclasses.fields(d):
        v = getattr(d, f.name)
        if f.name == "changes":
            v = [(c.name, c.group, c.value) for c in v]
        out[f.name] = v
    return out


def _from_wire(w: dict, custom: dict):
    w = dict(w)
    cls = _KINDS[w.pop("kind")]
    if "changes" in w:
        w["changes"] = [Change(n, g, v, custom.get(n)) for n, g, v in w["changes"]]
    return cls(**w)
