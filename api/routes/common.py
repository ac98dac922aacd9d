"""Helpers the route modules share: opaque cursors, JSON-safe numbers, and the hypervolume's
reference box.

The hypervolume is also given normalized to [0, 1]: divided by the volume of the box
between the campaign's reference point and the ideal point (accuracy 1 for every maximized
objective, 0 for every cost), so that 1 means "every objective at its best" whatever the
objectives' units.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from typing import Any

from layerforge.api.errors import ApiError


def encode_cursor(data: dict[str, Any]) -> str:
    """An opaque cursor: URL-safe base64 of compact JSON."""
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    """Decode a cursor made by :func:`encode_cursor` for listing ``kind``; 400 otherwise."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        data = None
    if not isinstance(data, dict) or data.get("k") != kind:
        raise ApiError(
            400,
            f"cursor {cursor[:40]!r} is not a cursor of this listing; "
            "pass back the next_cursor of the previous page",
            "bad_cursor",
        )
    return data


# Row ids are 32-bit integers on PostgreSQL: a forged cursor with a larger one made the
# query fail ("integer out of range", a 503) instead of a 400.
MAX_CURSOR_ID = 2**31 - 1


def cursor_id(data: dict[str, Any]) -> int:
    """The row id a decoded cursor carries; 400 naming the cursor when it is not one."""
    value = data.get("id")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CURSOR_ID:
        raise ApiError(
            400,
            f"the cursor is damaged: its id {value!r} is not a row id "
            "(pass back the next_cursor of the previous page)",
            "bad_cursor",
        )
    return value


def finite(value: Any) -> float | None:
    """``value`` as a float, or None for NaN, ±inf and missing values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def ideal_value(maximize: bool) -> float:
    """The best value an objective can reach: accuracy 1 (maximized), cost 0 (minimized)."""
    return 1.0 if maximize else 0.0


def hypervolume_box(
    objectives: Sequence[dict[str, Any]], reference_point: Sequence[float | None] | None
) -> dict[str, Any] | None:
    """The reference box: its reference and ideal corners by objective name (on the
    objectives' own scale, accuracy as accuracy) and its volume; None without a reference."""
    if not reference_point or len(reference_point) != len(objectives):
        return None
    reference, ideal, volume = {}, {}, 1.0
    for objective, minimized in zip(objectives, reference_point):
        if minimized is None:
            return None
        maximize = bool(objective.get("maximize"))
        value = -float(minimized) if maximize else float(minimized)  # back from minimized
        best = ideal_value(maximize)
        reference[str(objective["name"])] = value
        ideal[str(objective["name"])] = best
        volume *= abs(value - best)
    return {"reference": reference, "ideal": ideal, "volume": volume}


def normalized(hypervolume: float | None, box: dict[str, Any] | None) -> float | None:
    """``hypervolume`` as a fraction of the reference box (None when either is unknown)."""
    if hypervolume is None or box is None or not box["volume"] > 0:
        return None
    value = hypervolume / box["volume"]
    return value if math.isfinite(value) else None


def describe_box(box: dict[str, Any] | None) -> str:
    """One line naming the reference point and the ideal point, for captions and headers."""
    if box is None:
        return "no reference point recorded"
    reference = ", ".join(f"{k} = {v:g}" for k, v in box["reference"].items())
    ideal = ", ".join(f"{k} = {v:g}" for k, v in box["ideal"].items())
    return f"reference point {reference}; ideal point {ideal}"
