"""Helpers the route modules share: opaque cursors and JSON-safe numbers."""

from __future__ import annotations

import base64
import binascii
import json
import math
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


def finite(value: Any) -> float | None:
    """``value`` as a float, or None for NaN, ±inf and missing values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
