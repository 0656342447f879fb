"""JSON that never fails, for what tmon stores from user code and frameworks (configs, event data,
tags, errors): unknown objects become their ``repr``; NaN and +-inf become strings.

>>> to_json({"lr": 1e-3, "eps": float("nan"), "betas": (0.9, 0.999)})
'{"lr": 0.001, "eps": "nan", "betas": [0.9, 0.999]}'
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["json_safe", "to_json"]


def to_json(obj: Any) -> str | None:
    """JSON that never fails: unknown objects become their ``repr``; NaN/inf become strings."""
    if obj is None:
        return None
    return json.dumps(json_safe(obj), allow_nan=False)


def json_safe(obj: Any, _depth: int = 0) -> Any:
    """``obj`` as plain JSON types (dicts with str keys, lists, numbers, strings), by the rules of
    ``to_json``; nesting deeper than 20 levels becomes its ``repr``."""
    if _depth > 20:
        return repr(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v, _depth + 1) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item(), _depth + 1)
    if hasattr(obj, "tolist") and getattr(obj, "ndim", 1) == 0:  # 0-d arrays and tensors
        try:
            return json_safe(obj.tolist(), _depth + 1)
        except Exception:
            pass
    if hasattr(obj, "to_dict"):
        try:
            return json_safe(obj.to_dict(), _depth + 1)
        except Exception:
            pass
    return repr(obj)
