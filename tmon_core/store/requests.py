"""The control request rows of a store (``tmon_requests``): inserted by whoever steers a run, read
back by them; the recorder's writer polls, applies and rejects them (``writer.StoreWriter``).

``store`` is an open ``Store``. Rows come back as plain dicts of the table's columns, JSON columns
as stored (text): ``decode_json`` reads one. ``parse_request_row`` is what the training process
makes of a row before its controller sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import select

from .schema import RequestRow

__all__ = [
    "COLUMNS",
    "KINDS",
    "BadRequest",
    "decode_json",
    "insert_request",
    "json_depth",
    "parse_request_row",
    "request_row",
    "request_rows",
]

#: the request kinds a run understands (the controller's levels say who may send each)
KINDS = ("set_param", "preset", "checkpoint", "rollback", "stop")

# Bounds on a request row read by the training process. A row is data from anyone who can write
# the store: it is measured before it is parsed, so no row can stall or crash the writer thread.
MAX_PAYLOAD_CHARS = 64 * 1024
MAX_DEPTH = 32  # a request payload is two or three levels deep
MAX_INT = 2**63 - 1  # what the store's BIGINT columns (and checkpoint ids) can hold
_TOKENS = re.compile(r'\\.|["\[\]{}]', re.DOTALL)

#: the columns of a run's requests as ``request_rows`` gives them (the run id left out)
COLUMNS = [c for c in RequestRow.__table__.columns.keys() if c != "run_id"]


def insert_request(
    store,
    run_id: str,
    kind: str,
    payload: str,
    *,
    status: str,
    requested_by: str,
    requested_at: float,
    reason: str | None = None,
    applied_at: float | None = None,
) -> int:
    """Add a request row (``payload``: JSON text); returns its id."""
    with store.write_engine.begin() as conn:
        return conn.execute(
            RequestRow.__table__.insert().values(
                run_id=run_id,
                kind=kind,
                payload=payload,
                status=status,
                requested_by=requested_by,
                requested_at=requested_at,
                reason=reason,
                applied_at=applied_at,
            )
        ).inserted_primary_key[0]


def request_row(store, request_id: int) -> dict | None:
    """The row of request ``request_id``, or None."""
    with store.engine.connect() as conn:
        row = conn.execute(select(RequestRow).where(RequestRow.id == request_id)).mappings().first()
    return dict(row) if row is not None else None


def request_rows(store, run_id: str) -> list[dict]:
    """The rows of run ``run_id``'s requests, oldest first, with the ``COLUMNS``."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(*[RequestRow.__table__.c[c] for c in COLUMNS])
            .where(RequestRow.run_id == run_id)
            .order_by(RequestRow.id)
        ).mappings()
        return [dict(r) for r in rows]


class BadRequest(ValueError):
    """A request row the training process refuses before reading it; the message is the reason."""


def parse_request_row(row: dict) -> dict:
    """The request in a raw ``tmon_requests`` row (id, kind, payload text, requested_by), checked:
    ``{"id", "kind", "payload": dict, "requested_by"}``. Raises ``BadRequest`` with the reason for
    a row no run should act on: an unknown kind, a payload that is too long, too deeply nested,
    not a JSON object, or holding an integer beyond 64 bits."""
    kind = row.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise BadRequest(f"unknown request kind {kind!r:.50}; the kinds are {', '.join(KINDS)}")
    text = row.get("payload")
    if text is None or text == "":
        payload: Any = {}
    else:
        if not isinstance(text, str):
            raise BadRequest(f"payload must be JSON text, received {type(text).__name__}")
        if len(text) > MAX_PAYLOAD_CHARS:
            raise BadRequest(
                f"payload is {len(text)} characters long; a request holds at most {MAX_PAYLOAD_CHARS}"
            )
        depth = json_depth(text)
        if depth > MAX_DEPTH:
            raise BadRequest(f"payload is nested {depth} levels deep; a request holds at most {MAX_DEPTH}")
        try:
            payload = json.loads(text)
        except ValueError as exc:  # also a number of more digits than Python converts
            raise BadRequest(f"payload is not a valid JSON object: {str(exc)[:200]}") from None
        if not isinstance(payload, dict):
            raise BadRequest(
                f"payload is not a valid JSON object: a JSON object is needed, received "
                f"{type(payload).__name__}"
            )
        _check_ints(payload)
    requested_by = row.get("requested_by")
    return {
        "id": row["id"],
        "kind": kind,
        "payload": payload,
        "requested_by": requested_by if isinstance(requested_by, str) else None,
    }


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest, counted without recursion or parsing
    (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = False
    for m in _TOKENS.finditer(text):  # one pass; an escape is one token, so \" never ends a string
        tok = m.group()
        if tok == '"':
            in_string = not in_string
        elif in_string or len(tok) == 2:
            continue
        elif tok in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


def _check_ints(payload: dict) -> None:
    stack: list = [payload]
    while stack:
        node = stack.pop()
        items = node.values() if isinstance(node, dict) else node
        for v in items:
            if isinstance(v, int) and not isinstance(v, bool) and not -MAX_INT - 1 <= v <= MAX_INT:
                raise BadRequest(
                    f"payload holds the integer {str(v)[:30]}{'...' if len(str(v)) > 30 else ''}, "
                    f"beyond 64 bits"
                )
            if isinstance(v, (dict, list)):
                stack.append(v)


def decode_json(text: str | None):
    """A stored JSON column; a row written by hand with broken (or too long, too deep) JSON reads as
    its raw text."""
    if not text:
        return None
    if len(text) > MAX_PAYLOAD_CHARS or json_depth(text) > MAX_DEPTH:
        return text  # a hostile row: shown as its text, never parsed
    try:
        return json.loads(text)
    except ValueError:
        return text
