"""``RunControl``: the steering methods of a ``Run`` (set a parameter, checkpoint, roll back, stop).

Each asks the training process through a row of ``tmon_requests``; ``tmon_core.control.requests``
says what a request may hold and how it is answered.
"""

from __future__ import annotations

from typing import Any


def _control():
    from ..control import requests  # imported on first use: readers that never steer don't pay for it

    return requests


class RunControl:
    """Mixed into ``Run``: each method acts on this run (``self``)."""

    def set_param(self, name: str, value: Any, *, group: int | None = None, mode: str = "scale", **kw):
        """Ask the running training to set ``name`` (``lr``, ``weight_decay``, ``momentum``, ``betas``,
        ``eps``, a custom Param; ``lr@1`` for one param group) to ``value``. Returns a ``Request``."""
        return _control().set_param(self, name, value, group=group, mode=mode, **kw)

    def set_params(self, values: dict, *, mode: str = "scale", **kw):
        """Several parameters in one request, applied together at one step."""
        return _control().set_params(self, values, mode=mode, **kw)

    def apply_preset(self, name: str, **kw):
        return _control().apply_preset(self, name, **kw)

    def request_checkpoint(self, description: str | None = None, tags: list[str] | None = None, **kw):
        return _control().request_checkpoint(self, description, tags, **kw)

    def rollback(self, checkpoint_id: int, *, compatible: bool = False, allow_path: bool = False, **kw):
        """Restore a recorded checkpoint (see ``tmon_core.control.requests.rollback``)."""
        return _control().rollback(self, checkpoint_id, compatible=compatible, allow_path=allow_path, **kw)

    def stop(self, reason: str | None = None, **kw):
        return _control().stop(self, reason, **kw)

    def requests(self):
        """The run's control requests, oldest first: kind, payload, status, applied_step, old/new, reason."""
        return _control().requests(self)

    def tag_checkpoint(self, checkpoint_id: int, tags: list[str], description: str | None = None) -> None:
        _control().tag_checkpoint(self, checkpoint_id, tags, description)

    def delete_checkpoint(self, checkpoint_id: int) -> None:
        _control().delete_checkpoint(self, checkpoint_id)

    def impact(self, request_id: int, key: str = "loss", window: int = 50) -> dict:
        """The loss trend over ``window`` steps before vs after an applied change."""
        return _control().impact(self, request_id, key, window)
