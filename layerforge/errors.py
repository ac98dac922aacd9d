"""The exceptions of the notebook facade and the HTTP client, importable without the rest.

Every error a layerforge call raises on purpose is a :class:`LayerforgeError`:

* :class:`SpecError` — a campaign spec is invalid (``fields`` names each bad field, the same
  paths whether :func:`layerforge.run` checked it here or the API checked it on a server);
  :class:`SpecFileError` when the spec file itself cannot be read (YAML or JSON syntax, with
  line and column).
* :class:`ExportWarning` (a ``UserWarning``, not an error) — an exported candidate was
  rejected or failed.
* :class:`ServerUnreachable` — nothing answers at the client's URL (also a ``ConnectionError``).
* :class:`ApiError` — the service answered with ``{"error": {"code", "message"}}``; one
  subclass per HTTP status (:class:`NotFoundError`, :class:`ConflictError`, ...), each carrying
  the API's ``status``, ``code`` and ``message`` unchanged.
"""

from __future__ import annotations

from typing import Any


class LayerforgeError(Exception):
    """Base of every error layerforge raises on purpose."""


class SpecError(LayerforgeError, ValueError):
    """A campaign spec is invalid.

    ``fields`` lists ``(path, message)`` pairs, the path relative to the spec
    (``budget.max_candidates``); ``code`` is the API's ``validation_error``.
    """

    code = "validation_error"

    def __init__(self, message: str, fields: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.message = message
        self.fields: list[tuple[str, str]] = list(fields or [])


class SpecFileError(SpecError):
    """A spec file cannot be read: missing, unreadable, or not valid JSON / YAML.

    ``path`` is the file; ``line`` and ``column`` (1-based) locate a syntax error.
    """

    def __init__(self, message: str, path: str, line: int | None = None, column: int | None = None):
        super().__init__(message, [("file", message)])
        self.path = path
        self.line = line
        self.column = column


class ExportWarning(UserWarning):
    """An exported layer was not a completed candidate (rejected or failed): the code is what
    was tried, not what was found. The server's ``X-Layerforge-Warning`` says why."""


class ServerUnreachable(LayerforgeError, ConnectionError):
    """No answer from the service at ``url`` (refused, timed out, DNS, TLS ...)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach the layerforge service at {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiError(LayerforgeError):
    """The service answered with an error: its HTTP ``status``, the API's ``code`` (e.g.
    ``not_found``, ``invalid_state``) and ``message``, and for a 422 the per-field problems
    (``fields``: ``(path, message)`` pairs as the API names them, e.g.
    ``body.budget.max_candidates``)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        method: str = "",
        url: str = "",
        fields: list[tuple[str, str]] | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.url = url
        self.fields: list[tuple[str, str]] = list(fields or [])
        self.retry_after = retry_after


class BadRequestError(ApiError):
    """400: the request is malformed (bad JSON, a cursor of another listing)."""


class AuthenticationError(ApiError):
    """401: a mutating call without the server's bearer token, or with a wrong one."""


class ForbiddenError(ApiError):
    """403: the call is not allowed."""


class NotFoundError(ApiError):
    """404: no such campaign, candidate or route."""


class ConflictError(ApiError):
    """409: the resource is in the wrong state for the call (``invalid_state``), an
    idempotency key was reused with another spec (``idempotency_conflict``), or a candidate
    cannot be exported or plotted (``not_exportable``, ``not_plottable``)."""


class PayloadTooLargeError(ApiError):
    """413: the request body is over the server's LAYERFORGE_MAX_BODY_BYTES."""


class ValidationError(ApiError):
    """422: a parameter or a field of the body is invalid (``fields`` names each)."""


class RemoteSpecError(ValidationError, SpecError):
    """422 on a submitted campaign spec: both an :class:`ApiError` (the API's code and
    message) and a :class:`SpecError` whose ``fields`` are relative to the spec, exactly as
    :func:`layerforge.run` names them."""

    def __init__(self, status: int, code: str, message: str, **kwargs: Any):
        fields = kwargs.pop("fields", None) or []
        ValidationError.__init__(self, status, code, message, fields=fields, **kwargs)
        self.fields = [(path.removeprefix("body."), text) for path, text in fields]


class ServerError(ApiError):
    """5xx: the service failed (500) or its database is unavailable (503, retry later)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
}


def error_class(status: int) -> type[ApiError]:
    """The exception class for an HTTP error status (:class:`ApiError` for the others)."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, ApiError)


__all__ = [
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ExportWarning",
    "ForbiddenError",
    "LayerforgeError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RemoteSpecError",
    "ServerError",
    "ServerUnreachable",
    "SpecError",
    "SpecFileError",
    "ValidationError",
    "error_class",
]
