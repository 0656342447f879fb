"""The Recorder: the training-side hot path and the writer thread behind it.

>>> rec = Recorder("sqlite:///runs.db", run_name="demo")          # doctest: +SKIP
>>> for step in range(100):                                        # doctest: +SKIP
...     rec.log({"loss": 1 / (step + 1)}, step=step)
>>> rec.close()                                                    # doctest: +SKIP

One job per module:

- ``api.py``: ``Recorder``, what training calls (``log``, ``event``, ``checkpoint``, ``close``...);
- ``packing.py``: the packed hot path, one row of bytes per ``log()`` call and key set;
- ``conversion.py``: what a metric value may be, and logged values to float64 columns;
- ``thread.py``: the writer thread, its flushes, and a failing store (``TMonStoreWarning``);
- ``alerting.py``: the recorder's live alerts, seen by the writer thread at each flush.

An exception's description and ``is_oom`` live in ``tmon_core.errors``; ``path_size`` in
``tmon_core.checkpoints``.
"""

from .api import Recorder, new_run_id
from .conversion import prepare_value
from .thread import TMonStoreWarning

__all__ = ["Recorder", "TMonStoreWarning", "new_run_id", "prepare_value"]
