"""Explicit encoding of non-finite floats and JSON payloads that must survive every backend.

PostgreSQL's JSON types reject NaN and Infinity, and SQL ``NULL`` cannot tell "missing"
from "NaN". Objective values are therefore stored as a finite ``value`` column plus a
``value_kind`` column (``finite``, ``+inf``, ``-inf``, ``nan``); JSON payloads replace
non-finite floats by the strings ``"nan"``, ``"inf"`` and ``"-inf"``.
"""

from __future__ import annotations

import math
from typing import Any

FINITE, POS_INF, NEG_INF, NAN = "finite", "+inf", "-inf", "nan"
VALUE_KINDS = (FINITE, POS_INF, NEG_INF, NAN)


def encode_float(value: float) -> tuple[float | None, str]:
    """Split a float into the ``(value, value_kind)`` column pair."""
    value = float(value)
    if math.isnan(value):
        return None, NAN
    if math.isinf(value):
        return None, POS_INF if value > 0 else NEG_INF
    return value, FINITE


def decode_float(value: float | None, kind: str) -> float:
    """Inverse of :func:`encode_float`."""
    if kind == FINITE:
        if value is None:
            raise ValueError("a finite objective value is missing its number")
        return float(value)
    if kind == NAN:
        return math.nan
    if kind == POS_INF:
        return math.inf
    if kind == NEG_INF:
        return -math.inf
    raise ValueError(f"unknown value_kind {kind!r}; expected one of {VALUE_KINDS}")


def json_safe(obj: Any) -> Any:
    """Return ``obj`` with non-finite floats turned into strings, recursively.

    Tuples become lists; NumPy scalars become Python numbers. Everything a result payload
    may hold (dicts, lists, numbers, strings, booleans, None) passes through.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj
