"""tmon and the tools teams already run: import TensorBoard logs, MLflow stores, Lightning/Keras
``CSVLogger`` files and HF ``trainer_state.json`` as tmon runs; export a tmon run to TensorBoard
event files or an MLflow store.

Each imported run is an ordinary tmon run (``report()``, ``tmon show``, the Monitor work on it);
its ``framework`` names the source format and a second import of the same source finds the first
instead of writing it again (see ``_common``). The readers need ``tensorboard`` or ``mlflow``
(``mlflow-skinny`` is enough), imported only when used: ``import tmon_core`` stays free of both.

>>> from tmon_core import interop  # doctest: +SKIP
>>> interop.import_tensorboard("lightning_logs/", "tmon.db")  # doctest: +SKIP
[Imported(run_id='3f2a...', source='.../lightning_logs/version_0', created=True, points=4096, ...)]
"""

from __future__ import annotations

from ._common import Imported
from .csvlog import import_csv
from .mlflow_store import export_mlflow, import_mlflow
from .tensorboard import export_tensorboard, import_tensorboard

__all__ = [
    "Imported",
    "export_mlflow",
    "export_tensorboard",
    "import_csv",
    "import_mlflow",
    "import_tensorboard",
]
