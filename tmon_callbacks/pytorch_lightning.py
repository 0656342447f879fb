"""``TMonCallback`` for the standalone ``pytorch_lightning`` package (same implementation as
``tmon_callbacks.lightning``).

>>> from tmon_callbacks.pytorch_lightning import TMonCallback
>>> trainer = pytorch_lightning.Trainer(callbacks=[TMonCallback()])   # doctest: +SKIP
"""

try:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import Logger
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tmon_callbacks.pytorch_lightning needs the pytorch_lightning package: pip install 'tmon[pytorch_lightning]'"
    ) from exc

from ._lightning import DOC, TMonCallbackMixin, TMonLoggerMixin
from ._lightning_trainer import LightningPackage


class _TMonLogger(TMonLoggerMixin, Logger):
    pass


class TMonCallback(TMonCallbackMixin, pl.Callback):
    __doc__ = DOC
    _pl = LightningPackage.load("pytorch_lightning")
    _logger_class = _TMonLogger


__all__ = ["TMonCallback"]
