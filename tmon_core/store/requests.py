"""The control request rows of a store (``tmon_requests``): inserted by whoever steers a run, read
back by them; the recorder's writer polls, applies and rejects them (``writer.StoreWriter``).

``store`` is an open ``Store``. Rows come back as plain dicts of the table's columns, JSON columns
as stored (text); ``tmon_core.control.requests`` decodes them.
"""

from __future__ import annotations

from sqlalchemy import select

from .schema import RequestRow

__all__ = ["COLUMNS", "insert_request", "request_row", "request_rows"]

#: the columns of a run's requests as ``request_rows`` gives them (the run id left out)
COLUMNS = [c for c in RequestRow.__table__.columns.keys() if c != "run_id"]


def insert_request(store, run_id: str, kind: str, payload: str, *, status: str, requested_by: str,
                   requested_at: float, reason: str | None = None, applied_at: float | None = None) -> int:
    """Add a request row (``payload``: JSON text); returns its id."""
    with store.write_engine.begin() as conn:
        return conn.execute(RequestRow.__table__.insert().values(
            run_id=run_id, kind=kind, payload=payload, status=status, requested_by=requested_by,
            requested_at=requested_at, reason=reason, applied_at=applied_at,
        )).inserted_primary_key[0]


def request_row(store, request_id: int) -> dict | None:
    """The row of request ``request_id``, or None."""
    with store.engine.connect() as conn:
        row = conn.execute(select(RequestRow).where(RequestRow.id == request_id)).mappings().first()
    return dict(row) if row is not None else None


def request_rows(store, run_id: str) -> list[dict]:
    """The rows of run ``run_id``'s requests, oldest first, with the ``COLUMNS``."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(*[RequestRow.__table__.c[c] for c in COLUMNS])
                            .where(RequestRow.run_id == run_id).order_by(RequestRow.id)).mappings()
        return [dict(r) for r in rows]
