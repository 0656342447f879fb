"""Every place the Lightning adapter relies on something Lightning does not offer publicly.

Each function says why tmon needs it and what it reads; ``tests/callbacks/test_workarounds_lightning.py``
fails loudly when an installed Lightning no longer has what a function relies on. Everything here
works for ``lightning.pytorch`` and ``pytorch_lightning`` alike (the objects are passed in).
"""

from __future__ import annotations

from typing import Any

#: The first Lightning whose callback dispatcher (``_call_callback_hooks``) passes over a hook
#: attribute that is not callable (``fn = getattr(callback, hook_name); if callable(fn): ...``):
#: pytorch_lightning 1.6.0, where PR #10979 made ``Trainer.call_hook`` the protected
#: ``Trainer._call_callback_hooks`` with that check (Lightning's upgrade guide lists the PR; 1.5's
#: ``TrainerCallbackHookMixin`` called ``callback.<hook>(...)`` on every callback, a ``None`` would
#: raise). ``lightning.pytorch.trainer.call._call_callback_hooks`` keeps the check in 2.x.
SKIPS_NON_CALLABLE_HOOKS_SINCE = (1, 6)

#: per-batch hooks that Lightning hands every callback and TMonCallback does not use
UNUSED_BATCH_HOOKS = (
    "on_before_backward",
    "on_after_backward",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def skips_non_callable_hooks(version: str | None) -> bool:
    """Whether a Lightning of ``version`` skips a callback's hook attribute that is not callable.
    An unreadable version: no (every hook is kept, as for a plain callback)."""
    try:
        from packaging.version import Version  # (a dependency of Lightning)

        release = Version(version).release
    except Exception:
        return False
    return tuple(release[:2]) >= SKIPS_NON_CALLABLE_HOOKS_SINCE


def skip_unused_hooks(callback, names, *owners: type) -> None:
    """Make the hooks ``names`` not callable on ``callback`` where ``owners`` (Lightning's
    ``Callback``, tmon's own classes) define them, so Lightning's dispatcher passes over them.

    Why: Lightning calls every per-batch hook of every callback, ~1.5 us each (a profiler context,
    the state key, the call) even when the hook does nothing. Only on a Lightning where
    ``skips_non_callable_hooks`` holds; a hook a subclass defines stays.
    """
    for name in names:
        owner = next((k for k in type(callback).__mro__ if name in vars(k)), None)
        if owner is not None and owner in owners:  # (None: this Lightning has no such hook)
            setattr(callback, name, None)


def result_collection(trainer):
    """Lightning's collection of the fit's ``self.log`` values, when it has the shape
    ``logged_now`` reads, else None (values between logging steps are then not recorded).

    Why: between logging steps Lightning hands its loggers nothing, and it has no public accessor
    of the step's ``self.log`` values that does not also convert the progress bar's values to
    floats (a device sync each). Reads ``trainer.fit_loop.epoch_loop._results`` (a dict of
    ``_ResultMetric``) and its ``_forked_name``.
    """
    try:
        results = trainer.fit_loop.epoch_loop._results
        results._forked_name  # noqa: B018 (the method logged_now calls)
        return results if isinstance(results, dict) else None
    except AttributeError:
        return None


def logged_now(results, values: dict, names: dict) -> None:
    """Add to ``values`` the ``self.log`` values Lightning would hand its loggers if this were a
    logging step (``on_step`` ones, the last value of each), read from ``results``
    (``result_collection``): each metric's ``meta.on_step``/``meta.logger``, ``has_reset``, its
    last value ``_forward_cache``, and the logged name from ``results._forked_name(metric, True)``.
    Tensors stay tensors (the writer converts them). A name already in ``values`` (tmon records it
    itself) keeps tmon's value. ``names`` caches the logged name of each result key."""
    for key, rm in results.items():
        meta = rm.meta
        if meta.on_step and meta.logger and not rm.has_reset:
            v = rm._forward_cache
            if v is None:
                continue
            name = names.get(key)
            if name is None:
                name = names[key] = results._forked_name(rm, True)[1]
            if name not in values:
                values[name] = v


def state_key(callback, **key: Any) -> str:
    """``Callback._generate_state_key(**key)``: the state key Lightning makes from the class's
    qualified name and ``key``, the helper Lightning's own ``Callback.state_key`` docstring tells
    a callback that may appear twice in one Trainer to use (it has no public name)."""
    return callback._generate_state_key(**key)


def finish_lazy_instance(callback) -> None:
    """Run ``__init__`` of a ``jsonargparse.lazy_instance`` that has not run it yet.

    Why: LightningCLI's ``trainer_defaults={"callbacks": [lazy_instance(TMonCallback, ...)]}``
    gives an object whose ``__init__`` runs at the first *method* call (``_lazy_init``), but
    Lightning reads the ``state_key`` property before it calls any method.
    """
    if "_state_key" not in callback.__dict__ and callable(getattr(callback, "_lazy_init", None)):
        callback._lazy_init()


def private_settings(cb) -> dict:
    """The settings of a Lightning callback that it keeps only in private attributes: a ``Timer``'s
    ``duration_s`` (``_duration``), ``StochasticWeightAveraging``'s epoch start, annealing epochs
    and strategy (``_swa_epoch_start``, ...). Read with getattr: a Lightning without one records
    the rest."""
    name = type(cb).__name__
    out: dict[str, Any] = {}
    if name == "StochasticWeightAveraging":
        for attr in ("_swa_epoch_start", "_annealing_epochs", "_annealing_strategy"):
            if hasattr(cb, attr):
                out[attr.lstrip("_")] = getattr(cb, attr)
    elif name == "Timer" and getattr(cb, "_duration", None) is not None:
        out["duration_s"] = cb._duration
    return out
