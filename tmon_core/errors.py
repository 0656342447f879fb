"""What tmon says about an exception that ended a fit: its description, and whether it was an
out-of-memory error (recorded as an ``oom`` event in place of ``exception``).

>>> from tmon_core.errors import describe_exception, is_oom
>>> is_oom(MemoryError())
True
>>> describe_exception(ValueError("bad value"))["type"]
'builtins.ValueError'
"""

from __future__ import annotations

import traceback


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error, from any framework or device."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"OutOfMemoryError", "MemoryError", "ResourceExhaustedError"}:
        return True
    text = str(exc).lower()
    return "out of memory" in text or "cuda_error_out_of_memory" in text or "oom when allocating" in text


def describe_exception(exc: BaseException) -> dict:
    """The run's stored ``error`` (and an ``exception`` event's data): the exception's qualified
    type, its message (first 10,000 characters), its traceback (last 50,000) and ``oom``."""
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:10_000],
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-50_000:],
        "oom": is_oom(exc),
    }
