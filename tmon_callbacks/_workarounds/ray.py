"""Every place tmon relies on something Ray Train does not offer publicly.

Each function says why tmon needs it and what it reads; ``tests/callbacks/test_ray.py`` fails loudly
when an installed Ray no longer has what a function relies on (its real Ray Train workers must record
the trial's ``train_loop_config`` as hyperparameters). Nothing here is imported outside a Ray Train
worker.
"""

from __future__ import annotations

from typing import Any


def train_loop_config() -> dict | None:
    """The ``train_loop_config`` the ``TorchTrainer`` was given (a Tune trial's config), or None.

    Why: it is the trial's hyperparameters, which tmon records with the run; a callback is not
    handed it (only the user's training function is) and Ray Train V2's public ``TrainContext`` has
    no getter for it. Reads ``ray.train.v2._internal.execution.context.get_train_context()
    .train_run_context.train_loop_config`` (Ray 2.50+, Train V2); on Train V1 the public context
    has none either, so None.
    """
    try:
        import ray.train
        from ray.train.v2._internal.execution.context import get_train_context
    except ImportError:  # Ray Train V1 only
        return None
    if type(ray.train.get_context()).__name__ == "LocalTrainContext":  # local mode (num_workers=0): none kept
        return None
    config: Any = get_train_context().train_run_context.train_loop_config
    return dict(config) if isinstance(config, dict) else None


__all__ = ["train_loop_config"]
