"""``tmon_core.track()``: tmon for a plain PyTorch loop (or 🤗 Accelerate, or any hand-written loop).

Kept apart from its implementation (``tmon_callbacks.torch_loop``) so ``import tmon_core`` still
imports no framework: torch is imported at the first ``track()`` call.
"""

from __future__ import annotations

import os
from typing import Any


def track(
    optimizer=None,
    model=None,
    scheduler=None,
    *,
    config: dict | None = None,
    store: str | os.PathLike | None = None,
    total_steps: int | None = None,
    checkpoint_dir: str | os.PathLike = "tmon-checkpoints",
    **options: Any,
):
    """Record a hand-written training loop into a tmon store; returns a ``Tracker``.

    >>> with tmon_core.track(optimizer=opt, model=model, scheduler=sched, config={"batch_size": 64}) as t:  # doctest: +SKIP
    ...     for epoch in range(3):
    ...         for x, y in t.batches(loader):      # epoch events, data_time per batch
    ...             loss = F.cross_entropy(model(x), y)
    ...             loss.backward(); opt.step(); sched.step(); opt.zero_grad()
    ...             t.step(loss=loss)               # one optimizer step: loss, lr per group, step_time...
    ...         t.log({"val_loss": evaluate(model)})
    ...         t.checkpoint(path, monitor="val_loss", monitor_value=v)  # a file you saved
    ...         if t.should_stop:                   # a stop request (tmon stop, the widget)
    ...             break

    Args:
        optimizer: the ``torch.optim.Optimizer`` (or a list; accelerate's wrapper is fine): its lr,
            momentum and weight decay are recorded per param group and steered through it.
        model: the ``torch.nn.Module``: its size in the config; what tmon saves and rolls back.
        scheduler: the LR scheduler(s), so a steered lr continues the schedule from the new level.
        config: your settings (JSON-able), stored as the run's ``hparams``; ``batch_size``,
            ``num_workers``, ``max_grad_norm``, ``precision``, ``epochs`` in it inform the report.
        store: database URL or SQLite path; default ``$TMON_STORE`` or ``sqlite:///tmon.db``.
        total_steps: the steps the loop will take (progress in the widget, ``max_steps`` as the end
            reason); else ``config["epochs"]`` times the loader's length when ``t.batches`` is used.
        checkpoint_dir: where tmon saves the checkpoints it is asked for.
        **options: the options of every ``TMonCallback``: ``run_name``, ``flush_interval``,
            ``sample_interval``, ``heartbeat_timeout``, ``log_grad_norm``, ``gpus``, ``schedule``,
            ``presets``, ``params``, ``control``, ``tags``, ``notes``, ``capture_logs``,
            ``capture_output``, ``report``, ``widget``, ``alerts``, ``notify``, ``guard``, ``group``.
            An unknown one is a TypeError listing them.

    Leaving the ``with`` block ends the run: ``completed``; ``failed`` (or ``interrupted``) when an
    exception leaves it, which is then re-raised. Without ``with``, call ``t.finish()``.
    """
    try:
        from tmon_callbacks.torch_loop import Tracker
    except ImportError as exc:
        if getattr(exc, "name", None) == "torch":
            raise ImportError("tmon_core.track needs torch: pip install torch") from exc
        raise
    return Tracker(
        optimizer,
        model,
        scheduler,
        config=config,
        store=store,
        total_steps=total_steps,
        checkpoint_dir=checkpoint_dir,
        **options,
    )
