"""Where tmon reaches past torch's public LR-scheduler API, and why.

Steering a learning rate (``tmon_callbacks._torch.apply_changes``) writes the optimizer's param
groups, the one public place a scheduler reads them from; two things have no public access:
the children of a composite scheduler, and what ``get_last_lr()`` reports. Each name here closes
one of those gaps; ``tests/callbacks/test_workarounds_torch.py`` fails loudly when torch changes
what it relies on. Nothing else in tmon touches these internals.
"""

from __future__ import annotations


def inner_schedulers(scheduler) -> list:
    """The schedulers a ``SequentialLR`` or ``ChainedScheduler`` drives (empty for any other).

    Why: a change in ``scale`` mode rescales the ``base_lrs`` of each scheduler acting on the
    optimizer, and a composite one acts through its children, which torch keeps in ``_schedulers``
    with no public accessor (both keep it so since they were added, in torch 1.10)."""
    return list(getattr(scheduler, "_schedulers", None) or [])


def sync_last_lr(scheduler) -> None:
    """Make ``scheduler.get_last_lr()`` report the lrs its optimizer holds now.

    Why: ``get_last_lr()`` returns ``_last_lr``, which torch sets only inside ``step()``; after tmon
    changed the lr between two steps it would report the old value to whoever reads it (Lightning's
    ``LearningRateMonitor``, HF's logged ``learning_rate``) until the next step. A scheduler without
    ``_last_lr`` (not one of torch's) is left alone."""
    if hasattr(scheduler, "_last_lr") and getattr(scheduler, "optimizer", None) is not None:
        scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
