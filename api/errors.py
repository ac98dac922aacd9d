"""One error shape for every failure: ``{"error": {"code": "...", "message": "..."}}``.

FastAPI's own 404/405/422 answers, storage errors and body-limit rejections all go through the
handlers here, and :func:`responses` documents them in the OpenAPI schema so clients (and
schemathesis) can rely on the shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from layerforge.storage import (
    ConflictError,
    DatabaseFileChangedError,
    IdempotencyConflictError,
    NotFoundError,
    StorageError,
)

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "unavailable",
}
# The 503 code of a SQLite file deleted or replaced under the running service: unlike
# ``unavailable`` a retry does not cure it (no Retry-After), a restart on a good file does.
DATABASE_FILE_CHANGED = "database_file_changed"


class FieldError(BaseModel):
    """One invalid field: its path (``body.budget.max_candidates``) and what is wrong."""

    path: str
    message: str


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable code, e.g. not_found, conflict")
    message: str = Field(description="what went wrong, naming the field or the state")
    fields: list[FieldError] | None = Field(None, description="per-field problems (422)")


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorBody


class ApiError(Exception):
    """Raised by routes: becomes ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODES.get(status, "error")
        self.headers = headers


def error_json(
    status: int,
    message: str,
    code: str | None = None,
    *,
    fields: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON response of an error."""
    body: dict[str, Any] = {"code": code or CODES.get(status, "error"), "message": message}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse({"error": body}, status_code=status, headers=headers)


_DESCRIPTIONS = {
    400: "Malformed request (bad JSON, bad cursor)",
    401: "Missing or wrong bearer token",
    404: "No such resource",
    409: "The resource is in the wrong state for this action",
    413: "Request body too large",
    422: "A parameter or a field of the body is invalid",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {
        s: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(s, "Error")} for s in statuses
    }


def _path(loc: Any) -> str:
    return ".".join(str(part) for part in loc) or "request"


def validation_fields(errors: Any) -> list[dict[str, str]]:
    return [
        {
            "path": _path(e.get("loc", ())),
            "message": str(e.get("msg", "invalid")).removeprefix("Value error, "),
        }
        for e in errors
    ]


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    for e in errors:
        if e.get("type") == "json_invalid":
            detail = (e.get("ctx") or {}).get("error", "")
            position = e.get("loc", ("body", 0))[-1]
            return error_json(
                400,
                f"request body is not valid JSON: {detail} (at character {position})".replace(
                    ":  (", ": ("
                ),
                "malformed_json",
            )
    fields = validation_fields(errors)
    message = "; ".join(f"{f['path']}: {f['message']}" for f in fields[:10])
    if len(fields) > 10:
        message += f"; and {len(fields) - 10} more"
    return error_json(422, message or "invalid request", fields=fields)


async def _http_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_json(exc.status_code, message, headers=getattr(exc, "headers", None))


async def _api_handler(request: Request, exc: ApiError) -> JSONResponse:
    return error_json(exc.status, exc.message, exc.code, headers=exc.headers)


async def _not_found_handler(request: Request, exc: NotFoundError) -> JSONResponse:
    return error_json(404, str(exc))


async def _conflict_handler(request: Request, exc: ConflictError) -> JSONResponse:
    return error_json(409, str(exc))


async def _storage_handler(request: Request, exc: StorageError) -> JSONResponse:
    log.warning("storage error on %s %s: %s", request.method, request.url.path, exc)
    return error_json(
        503, "the database is unavailable; retry shortly", headers={"Retry-After": "2"}
    )


async def _idempotency_handler(request: Request, exc: IdempotencyConflictError) -> JSONResponse:
    return error_json(409, str(exc), "idempotency_conflict")


async def _database_file_handler(request: Request, exc: DatabaseFileChangedError) -> JSONResponse:
    # no log line here: the storage layer logged the cause once, when it found it
    return error_json(503, str(exc), DATABASE_FILE_CHANGED)


async def _internal_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_json(500, f"internal error ({type(exc).__name__})")


def install(app: FastAPI) -> None:
    """Register every handler on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]  # Starlette types a handler's error as Exception; each takes its own
    app.add_exception_handler(StarletteHTTPException, _http_handler)  # type: ignore[arg-type]  # Starlette types a handler's error as Exception; each takes its own
    app.add_exception_handler(ApiError, _api_handler)  # type: ignore[arg-type]  # Starlette types a handler's error as Exception; each takes its own
    app.add_exception_handler(NotFoundError, _not_found_handler)  # type: ignore[arg-type]  # Starlette types a handler's error as Exception; each takes its own
    app.add_exception_handler(ConflictError, _conflict_handler)  # type: ignore[arg-type]  # Starlette types a handler's error as Exception; each takes its own
    app.add_exception_handler(IdempotencyConflictError, _idempotency_handler)  # type: ignore[arg-type]  # Starlette types a handler's error as Exception; each takes its own
    app.add_exception_handler(StorageError, _storage_handler)  # type: ignore[arg-type]  # Starlette types a handler's error as Exception; each takes its own
    app.add_exception_handler(DatabaseFileChangedError, _database_file_handler)  # type: ignore[arg-type]  # Starlette types a handler's error as Exception; each takes its own
    app.add_exception_handler(Exception, _internal_handler)
