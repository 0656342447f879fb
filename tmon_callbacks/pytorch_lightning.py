"""``TMonCallback`` for the standalone ``pytorch_lightning`` package (same implementation as
``tmon_callbacks.lightning``).

>>> from tmon_callbacks.pytorch_lightning import TMonCallback
>>> trainer = pytorch_lightning.Trainer(callbacks=[TMonCallback()])   # doctest: +SKIP
"""

try:
    import pytorch_lightning  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tmon_callbacks.pytorch_lightning needs the pytorch_lightning package: pip install 'tmon[pytorch_lightning]'"
    ) from exc

from ._lightning_impl import build

TMonCallback = build("pytorch_lightning")

__all__ = ["TMonCallback"]
