"""Plain-JSON views of results (numpy scalars and arrays, paths, namespaces), for run records and ``metrics.json``.

Usage:
    >>> from yolo_etram.utils.serialize import jsonable
    >>> json.dumps(jsonable({"AP": np.float64(0.45), "per_class": {"car": float("nan")}}))
    '{"AP": 0.45, "per_class": {"car": null}}'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_ARRAY = 1000
"""Arrays with this many values or more are left out (precision-recall curves): records stay small."""


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON types: NaN becomes None (JSON has no NaN), infinities their name; large arrays left out."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items() if not (isinstance(v, np.ndarray) and v.size >= MAX_ARRAY)}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return jsonable(x.item())
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "__dict__") and not callable(x):
        return jsonable(vars(x))
    return str(x)
