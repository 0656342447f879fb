"""tmon_callbacks: one thin adapter per framework. Import the one you train with:

- ``tmon_callbacks.lightning`` (``lightning.pytorch``)
- ``tmon_callbacks.pytorch_lightning`` (the standalone ``pytorch_lightning`` package)

Importing this package imports no framework.
"""
