"""``TMonCallback`` for ``lightning.pytorch`` (the ``lightning`` package).

>>> from tmon_callbacks.lightning import TMonCallback
>>> trainer = Trainer(max_epochs=3, callbacks=[TMonCallback()])   # doctest: +SKIP
"""

try:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import Logger
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tmon_callbacks.lightning needs the lightning package: pip install 'tmon[lightning]'"
    ) from exc

from ._lightning import DOC, TMonCallbackMixin, TMonLoggerMixin
from ._lightning_trainer import LightningPackage


class _TMonLogger(TMonLoggerMixin, Logger):
    pass


class TMonCallback(TMonCallbackMixin, pl.Callback):
    __doc__ = DOC
    _pl = LightningPackage.load("lightning.pytorch")
    _logger_class = _TMonLogger


__all__ = ["TMonCallback"]
