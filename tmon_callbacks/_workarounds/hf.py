"""Where tmon reaches past the public callback API of the Hugging Face ``Trainer``, and why.

``TrainerCallback`` has no exception hook, is not handed the ``Trainer`` that drives it, and is
not told what a script adds to an evaluation's metrics before ``Trainer.log_metrics``. Each name
here closes one of those gaps; ``tests/callbacks/test_workarounds_hf.py`` fails loudly when
transformers changes what it relies on. Nothing else in tmon touches these internals.
"""

from __future__ import annotations

import functools
import sys

from .python import caller_locals

# The directory name Trainer saves a checkpoint under, ``f"{PREFIX_CHECKPOINT_DIR}-{global_step}"``
# (transformers.trainer_utils): no hook hands on_save the directory it wrote.
CHECKPOINT_PREFIX = "checkpoint"


class TrainListener:
    """A ``TrainerCallback`` that also hears what no ``TrainerCallback`` hook tells: ``train()``
    entered and left (with the exception escaping it) and ``log_metrics()`` called. It hears them
    once :func:`watch_train` has been applied to the trainer holding it."""

    def train_entered(self) -> None:
        """``Trainer.train`` was called."""

    def train_failed(self, exc: BaseException) -> None:
        """``exc`` is escaping ``Trainer.train`` (the trainer re-raises it right after)."""

    def train_left(self) -> None:
        """``Trainer.train`` returned or raised."""

    def metrics_logged(self, split: str, metrics: dict) -> None:
        """``Trainer.log_metrics(split, metrics)`` is about to print (and the script to save) them."""


_watching_classes: dict[type, type] = {}


def watch_train(trainer) -> None:
    """Make ``trainer.train`` and ``trainer.log_metrics`` tell the ``TrainListener`` callbacks it
    holds (``trainer.callback_handler.callbacks``) about each call.

    Why a class swap: ``train`` has no exception hook, and an exception escaping it (an OOM
    included) must end the run failed. The trainer's class becomes a same-named subclass (same
    module, qualname and doc) adding only ``train`` and ``log_metrics``, rather than an instance
    attribute: a method bound at call time keeps a temporary ``Trainer(...).train()`` alive, and
    no reference cycle keeps a finished trainer's model in memory.
    """
    if trainer is not None and not getattr(type(trainer), "_tmon_watches_train", False):
        trainer.__class__ = _watching_class(type(trainer))


def _watching_class(cls: type) -> type:
    sub = _watching_classes.get(cls)
    if sub is None:

        def train(self, *args, **kwargs):
            listeners = [cb for cb in self.callback_handler.callbacks if isinstance(cb, TrainListener)]
            for cb in listeners:
                cb.train_entered()
            try:
                return cls.train(self, *args, **kwargs)
            except BaseException as exc:
                for cb in listeners:
                    cb.train_failed(exc)
                raise
            finally:
                for cb in listeners:
                    cb.train_left()

        def log_metrics(self, split, metrics):
            # run_clm.py adds perplexity, eval_samples... to evaluate()'s metrics, then calls this
            for cb in self.callback_handler.callbacks:
                if isinstance(cb, TrainListener):
                    cb.metrics_logged(split, metrics)
            return cls.log_metrics(self, split, metrics)

        functools.update_wrapper(train, cls.train)
        functools.update_wrapper(log_metrics, cls.log_metrics)
        sub = _watching_classes[cls] = type(
            cls.__name__,
            (cls,),
            {
                "train": train,
                "log_metrics": log_metrics,
                "_tmon_watches_train": True,
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
            },
        )
    return sub


def find_trainer(callback):
    """The ``Trainer`` holding ``callback``, read from the calling frames (set-up hooks only: a
    ``TrainerCallback`` is never handed its trainer; ``on_init_end`` runs inside ``Trainer.__init__``,
    ``on_train_begin`` inside ``train``), else None."""
    from transformers import Trainer

    def holds(obj) -> bool:
        handler = getattr(obj, "callback_handler", None)
        return isinstance(obj, Trainer) and any(cb is callback for cb in getattr(handler, "callbacks", ()))

    found = caller_locals(holds)
    return found["self"] if found else None


def trainer_callbacks(callback) -> list:
    """The (live) callback list of the ``CallbackHandler`` calling ``callback`` now, read from the
    calling frames (set-up hooks only): what ended a fit (an ``EarlyStoppingCallback``) and the
    callbacks' settings are read from it; no hook hands a callback the others."""
    from transformers.trainer_callback import CallbackHandler

    found = caller_locals(
        lambda o: isinstance(o, CallbackHandler) and any(c is callback for c in o.callbacks)
    )
    return found["self"].callbacks if found else []


def after_fit_stage() -> str:
    """``"test"`` inside ``Trainer.predict`` (its metrics are ``test_*``), else ``"evaluate"``: read
    from the calling frames, as ``on_prediction_step`` does not say which of the two runs."""
    from transformers import Trainer

    frame = sys._getframe(1)
    try:
        while frame is not None:
            if frame.f_code.co_name in ("predict", "evaluate") and isinstance(
                frame.f_locals.get("self"), Trainer
            ):
                return "test" if frame.f_code.co_name == "predict" else "evaluate"
            frame = frame.f_back
        return "evaluate"
    finally:
        del frame


def early_stopping_exhausted(callback) -> bool:
    """Whether an ``EarlyStoppingCallback``'s patience ran out (its counter is undocumented state)."""
    return callback.early_stopping_patience_counter >= callback.early_stopping_patience
