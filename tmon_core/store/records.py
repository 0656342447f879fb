"""What one record may hold, checked before it reaches the store, and what to say when a record is
refused.

A batch is written in one transaction, so one value the database refuses used to fail the whole
batch, and, kept for the next try, every later flush of the run with it. The writer thread
checks each row of the side tables (events, logs, samples, checkpoints, request outcomes, run
fields) against its columns first: text is made storable (``text.storable``), numbers are
converted to the column's kind, and a value no column of that kind can hold (an int beyond 64
bits, a string where a number belongs, a column the table does not have) refuses its own row
only, with the field and the reason. Metric points are never looked at here: their keys are
checked by ``log()`` and their values are float64 arrays (no per-point work).

What these checks cannot foresee (a trigger, a constraint added by the database's owner) is
found by the writer's bisection (``StoreWriter.write_each``).
"""

from __future__ import annotations

import functools
import math
import numbers
import sqlite3
import sys

import numpy as np
from sqlalchemy import Boolean, Float, Integer, LargeBinary, String
from sqlalchemy import exc as sa_exc

from .schema import CheckpointRow, EventRow, GpuSampleRow, LogRow, RequestRow, RunRow, SampleRow
from .text import MAX_TEXT, storable

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

#: Batch attribute -> the table its rows go to
TABLES = {
    "events": EventRow,
    "samples": SampleRow,
    "gpu_samples": GpuSampleRow,
    "checkpoints": CheckpointRow,
    "logs": LogRow,
}
#: the fields of a refused row that tell a reader which record it was
_IDENTITY = ("type", "step", "key", "path", "logger", "level", "gpu", "id", "wall_time")


@functools.cache
def columns(model) -> dict[str, tuple[str, int, bool]]:
    """Column name -> (kind: text/int/float/bool/bytes, most characters of text, nullable)."""
    out = {}
    for c in model.__table__.columns:
        t = c.type
        if isinstance(t, Boolean):
            kind = "bool"
        elif isinstance(t, Integer):  # BigInteger too
            kind = "int"
        elif isinstance(t, Float):
            kind = "float"
        elif isinstance(t, String):  # Text too
            kind = "text"
        elif isinstance(t, LargeBinary):
            kind = "bytes"
        else:
            kind = "any"
        out[c.name] = (kind, getattr(t, "length", None) or MAX_TEXT, bool(c.nullable))
    return out


@functools.cache
def _defaults(model) -> tuple[tuple[str, object], ...]:
    """The columns that need a value and have a default of their own (``node_rank``, ``deleted``):
    the writer's plain INSERTs do not apply SQLAlchemy's defaults, so a row without them gets them here."""
    return tuple(
        (c.name, c.default.arg)
        for c in model.__table__.columns
        if not c.nullable and c.default is not None and c.default.is_scalar
    )


def clean_value(kind: str, limit: int, nullable: bool, v):
    """``(value as the column stores it, None)``, or ``(None, why it cannot be stored)``."""
    if v is None:
        return (None, None) if nullable else (None, "is missing (None); this column needs a value")
    if kind == "text":
        return storable(v if type(v) is str else str(v), limit), None
    if kind == "int":
        if type(v) is not int:
            if isinstance(v, (numbers.Integral, np.integer)):  # bool, numpy ints
                v = int(v)
            elif isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
                v = int(v)
            else:
                return None, f"is {v!r:.60} ({type(v).__name__}), not an integer"
        if not _INT_MIN <= v <= _INT_MAX:
            return None, f"is {v:.4g}, beyond the 64-bit integer range of this column"
        return v, None
    if kind == "float":
        if type(v) is not float:
            if not isinstance(v, (numbers.Real, np.number)) or isinstance(v, np.complexfloating):
                return None, f"is {v!r:.60} ({type(v).__name__}), not a number"
            try:
                v = float(v)
            except (OverflowError, ValueError, TypeError):
                return None, f"is {v:.4g}, beyond the floating-point range"
        if v != v and not nullable:
            return None, "is NaN; this column needs a number"
        return v, None
    if kind == "bool":
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and v in (0, 1)):
            return bool(v), None
        return None, f"is {v!r:.60} ({type(v).__name__}), not True or False"
    if kind == "bytes" and not isinstance(v, (bytes, bytearray, memoryview)):
        return None, f"is {type(v).__name__}, not bytes"
    return v, None


def clean_row(model, row: dict, skip: tuple = ()) -> tuple[dict | None, dict | None]:
    """``(row with storable values, None)`` or ``(None, refusal)``; ``skip``: keys left as they are."""
    cols = columns(model)
    out = None
    for name, default in _defaults(model):
        if name not in row:
            if out is None:
                out = dict(row)
            out[name] = default
    for name, v in row.items():
        spec = cols.get(name)
        if spec is None or name == "run_id":
            if name in skip:
                continue
            return None, refusal(
                model.__tablename__, name, f"is not a column of {model.__tablename__} that tmon writes", row
            )
        if name in skip:
            continue
        # the usual values go through as they are: a sample (a dozen numbers a second) costs ~10 us
        t = type(v)
        kind = spec[0]
        if kind == "text":
            if t is str and len(v) <= spec[1] and v.isascii() and "\x00" not in v:
                continue
        elif kind == "int":
            if t is int and _INT_MIN <= v <= _INT_MAX:
                continue
        elif kind == "float":
            if t is float and (v == v or spec[2]):
                continue
        if v is None and spec[2]:
            continue
        new, why = clean_value(*spec, v)
        if why is not None:
            return None, refusal(model.__tablename__, name, why, row)
        if new is not v:
            if out is None:
                out = dict(row)
            out[name] = new
    return (row if out is None else out), None


def clean_batch(batch) -> list[dict]:
    """Make every side-table record of ``batch`` storable, in place; return the refusals of the
    records that cannot be (they leave the batch). Metric points are left alone."""
    refused: list[dict] = []
    for attr, model in TABLES.items():
        rows = getattr(batch, attr)
        if rows:
            setattr(batch, attr, _clean_rows(model, rows, refused))
    if batch.request_updates:
        batch.request_updates = _clean_rows(RequestRow, batch.request_updates, refused, skip=("id",))
    if batch.run_update:
        cols = columns(RunRow)
        for name, v in list(batch.run_update.items()):
            spec = cols.get(name)
            new, why = (
                (None, "is not a column of tmon_runs that tmon writes")
                if spec is None
                else clean_value(*spec, v)
            )
            if why is None:
                batch.run_update[name] = new
            else:
                del batch.run_update[name]
                refused.append(refusal("tmon_runs", name, why, {}))
    if batch.removed_checkpoints:
        kind, limit, _ = columns(CheckpointRow)["path"]
        batch.removed_checkpoints = [
            (storable(p if type(p) is str else str(p), limit), pos) for p, pos in batch.removed_checkpoints
        ]
    if batch.reject_pending:
        batch.reject_pending = storable(str(batch.reject_pending), columns(RequestRow)["reason"][1])
    return refused


def _clean_rows(model, rows: list[dict], refused: list[dict], skip: tuple = ()) -> list[dict]:
    out = []
    for r in rows:
        row, why = clean_row(model, r, skip)
        if why is None:
            out.append(row)
        else:
            refused.append(why)
    return out


def refusal(table: str, field: str | None, reason: str, row: dict) -> dict:
    """What a ``record_refused`` event says: the table, the field, why, and the fields that identify
    the record (its type, step, key, path...), each kept short and storable."""
    out = {"table": table, "field": field, "reason": storable(reason, 1000)}
    for k in _IDENTITY:
        v = row.get(k)
        if v is not None:
            out[k] = storable(v if type(v) is str else str(v), 200) if not isinstance(v, (int, float)) else v
    msg = row.get("message")
    if isinstance(msg, str) and table == "tmon_logs":
        out["message"] = storable(msg, 200)
    return out


def describe(refused: dict) -> str:
    """A refused record in a sentence: ``tmon_logs record (logger 'x', step 3): field message ...``."""
    ident = ", ".join(f"{k} {refused[k]!r}" for k in _IDENTITY if k in refused)
    field = f"field {refused['field']} " if refused.get("field") else ""
    return f"{refused['table']} record{f' ({ident})' if ident else ''}: {field}{refused['reason']}"


def error_text(exc: BaseException) -> str:
    """The database's own words for ``exc``: the driver's error without SQLAlchemy's statement and
    parameters (a batch's parameters are thousands of values)."""
    orig = getattr(exc, "orig", None) if isinstance(exc, sa_exc.DBAPIError) else None
    err = orig if orig is not None else exc
    first = str(err).strip().split("\n", 1)[0]
    return f"{type(err).__name__}: {first[:500]}"


def store_failure(exc: BaseException) -> bool:
    """``exc`` says the store itself cannot be written now (locked, unreachable, read-only, full),
    not that a record is bad: the drivers report those as OperationalError (or an OSError)."""
    if isinstance(exc, (sa_exc.OperationalError, sqlite3.OperationalError, OSError, sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    psycopg = sys.modules.get("psycopg")  # not imported: not its error
    return psycopg is not None and isinstance(exc, psycopg.OperationalError)
