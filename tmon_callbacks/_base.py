"""Former home of what every adapter shares; each name now lives where its job is (re-exported here
while the adapters switch): the options in ``_options``, the never-crash helpers, ``Rejected`` and
decision dispatch in ``_adapter``, ``RunSession`` in ``tmon_core.session``, the frame reading and
uncaught-exception hooks in ``_workarounds.python``."""

from tmon_core.session import RunSession, TMonCallbackWarning, warn_once  # noqa: F401

from ._adapter import Rejected, apply_decisions, guarded  # noqa: F401
from ._options import CallbackOptions, make_options, options_signature  # noqa: F401
from ._workarounds.python import caller_locals, unwatch, watch_uncaught  # noqa: F401
