"""tmon under Ray Train and Ray Tune: ``TMonCallback`` (Lightning, HF) works unchanged in a Ray Train
worker (see ``tmon_callbacks._ray`` and the README's "Ray Train and Ray Tune"); this module holds what a
user calls or catches.

>>> from tmon_callbacks.ray import trial_runtime_env   # in a Tune trial's function  # doctest: +SKIP

Importing it imports no Ray.
"""

from ._ray import SharedStoreRequired, trial_runtime_env

__all__ = ["SharedStoreRequired", "trial_runtime_env"]
