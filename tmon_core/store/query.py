"""Old home of the read API, split into ``store``, ``run``, ``points`` and ``downsample``: kept importable."""

from .run import ONE_BASED_STEPS, Run, effective_status, steps_done  # noqa: F401
from .store import Store, open_store, sqlite_path  # noqa: F401
