"""The Recorder: the training-side hot path and the writer thread behind it.

>>> rec = Recorder("sqlite:///runs.db", run_name="demo")          # doctest: +SKIP
>>> for step in range(100):                                        # doctest: +SKIP
...     rec.log({"loss": 1 / (step + 1)}, step=step)
>>> rec.close()                                                    # doctest: +SKIP

One job per module:

- ``api.py``: ``Recorder``, what training calls (``log``, ``event``, ``checkpoint``, ``close``...);
- ``packing.py``: the packed hot path, one row of bytes per ``log()`` call and key set;
- ``conversion.py``: what a metric value may be, and logged values to float64 columns;
- ``thread.py``: the writer thread, its flushes, and a failing store (``TMonStoreWarning``).
"""

# (describe_exception, is_oom, path_size, _live, _prepare_value: shims while callers move to
# tmon_core.errors, tmon_core.checkpoints, Recorder.attach and prepare_value)
from ..checkpoints import path_size  # noqa: F401
from ..errors import describe_exception, is_oom  # noqa: F401
from .api import Recorder, _live, new_run_id  # noqa: F401
from .conversion import prepare_value
from .conversion import prepare_value as _prepare_value  # noqa: F401
from .thread import TMonStoreWarning

__all__ = ["Recorder", "TMonStoreWarning", "new_run_id", "prepare_value"]
