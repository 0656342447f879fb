"""``TMonCallback`` for ``lightning.pytorch`` (the ``lightning`` package).

>>> from tmon_callbacks.lightning import TMonCallback
>>> trainer = Trainer(max_epochs=3, callbacks=[TMonCallback()])   # doctest: +SKIP
"""

try:
    import lightning.pytorch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("tmon_callbacks.lightning needs the lightning package: pip install 'tmon[lightning]'") from exc

from ._lightning_impl import build

TMonCallback = build("lightning.pytorch")

__all__ = ["TMonCallback"]
