"""The saved reports of a store (``tmon_reports``): a run's report card as JSON, newest read back first.

``store`` is an open ``Store``; ``tmon_core.analysis.report`` builds the report and its JSON.
"""

from __future__ import annotations

from sqlalchemy import select

from .schema import ReportRow

__all__ = ["latest_report_body", "save_report"]


def save_report(store, run_id: str, created_at: float, health: str, body: str) -> int:
    """Add a report row (``body``: the report's JSON); returns its id."""
    with store.write_engine.begin() as conn:
        return conn.execute(
            ReportRow.__table__.insert().values(
                run_id=run_id,
                created_at=created_at,
                health=health,
                body=body,
            )
        ).inserted_primary_key[0]


def latest_report_body(store, run_id: str) -> str | None:
    """The JSON of run ``run_id``'s newest saved report, or None."""
    with store.engine.connect() as conn:
        return conn.execute(
            select(ReportRow.body)
            .where(ReportRow.run_id == run_id)
            .order_by(ReportRow.created_at.desc(), ReportRow.id.desc())
            .limit(1)
        ).scalar()
