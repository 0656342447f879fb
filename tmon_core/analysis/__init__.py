"""After the run: ``report()`` turns a run's store into a health score, findings and concrete advice.

>>> import tmon_core
>>> r = tmon_core.report()                       # doctest: +SKIP  (the latest run of the default store)
>>> r = tmon_core.report("3f2a", store="sqlite:///runs.db")   # doctest: +SKIP
>>> r.health                                     # doctest: +SKIP  "good" | "warning" | "critical"
>>> r.recommendations[0].code                    # doctest: +SKIP  'Trainer(accumulate_grad_batches=2)'
>>> print(r); r.to_json()                        # doctest: +SKIP

Everything comes from the store (metrics, events, hardware samples, captured logs, control
history, checkpoints), so any run can be reported on, also a failed, interrupted or lost one, and
from any process. Each report is saved in ``tmon_reports``. The rules live in ``rules/``, one
module per family; their thresholds are ``Thresholds`` fields. The optimization detectors (spikes,
divergence, plateau, overfitting, gradient norm, NaN/inf) are ``detect``'s incremental ones, which
judge a run against its own noise; ``bench/diagnosis.py`` measures every rule on a labelled corpus
of healthy and faulty runs. Deprecation and future warnings from inside installed packages are
``report.library_notices``, apart from ``report.log_errors``.
"""

from __future__ import annotations

import os

from .model import CRITICAL, GOOD, INFO, WARNING, Finding, Recommendation, Thresholds
from .report import Report

__all__ = [
    "CRITICAL",
    "GOOD",
    "INFO",
    "WARNING",
    "Finding",
    "Recommendation",
    "Report",
    "Thresholds",
    "load_report",
    "report",
]


def _open(run, store):
    """(Run, Store, whether we opened the store)."""
    from ..store import Run, Store, open_store

    if isinstance(run, Run):
        return run, run.store, False
    own = not isinstance(store, Store)
    st = open_store(store) if own else store
    try:
        if run is None or run == "latest":
            found = st.latest_run()
            if found is None:
                raise KeyError(f"{st} holds no runs yet")
            return found, st, own
        if not isinstance(run, str):
            raise ValueError(
                f"run must be a run id, a unique id prefix, a run name, 'latest' or a Run, received {run!r}"
            )
        return st.run(run), st, own
    except BaseException:
        if own:
            st.close()
        raise


def report(
    run=None,
    *,
    store: str | os.PathLike | None = None,
    thresholds: Thresholds | dict | None = None,
    save: bool = True,
) -> Report:
    """The report of ``run`` (a run id, a unique prefix, a run name, ``"latest"``, a ``Run``; default:
    the latest run) in ``store`` (URL, path or ``Store``; default ``$TMON_STORE`` or ``sqlite:///tmon.db``).

    ``thresholds``: a ``Thresholds`` or a dict of the fields to change (``{"memory_warning": 0.8}``).
    ``save``: also write it to the store's ``tmon_reports`` table.
    """
    from .report import build
    from .report import save as save_report

    limits = Thresholds.coerce(thresholds)
    r, st, own = _open(run, store)
    try:
        rep = build(r, limits)
        if save:
            save_report(st, rep)
        return rep
    finally:
        if own:
            st.close()


def load_report(run=None, *, store: str | os.PathLike | None = None) -> Report | None:
    """The last report saved for ``run`` (default: the latest run), or None when none was saved."""
    from .report import load_latest

    r, st, own = _open(run, store)
    try:
        return load_latest(st, r.id)
    finally:
        if own:
            st.close()
