"""Dependencies shared by the routes: settings, database sessions, the bearer token check."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from layerforge.api.cache import CachedReads
from layerforge.api.errors import ApiError
from layerforge.api.settings import Settings
from layerforge.storage import get_engine, session_scope

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The dependencies that do no I/O are ``async def`` so that FastAPI runs them on the event
# loop instead of handing each to the thread pool (a thread switch per request apiece).


async def get_app_settings(request: Request) -> Settings:
    """The settings the application was created with."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_cached_reads(request: Request, settings: SettingsDep) -> CachedReads:
    """Answers of read endpoints served from the application's cache (see :mod:`api.cache`)."""
    return CachedReads(request, request.app.state.response_cache, settings.database_url)


CachedReadsDep = Annotated[CachedReads, Depends(get_cached_reads)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """A read-only session (readers never wait for the controller on SQLite)."""
    with session_scope(get_engine(settings.database_url), readonly=True) as session:
        yield session


def get_write_session(settings: SettingsDep) -> Iterator[Session]:
    """A session that commits when the route returns and rolls back when it raises."""
    with session_scope(get_engine(settings.database_url)) as session:
        yield session


# scope="function": the session commits (or rolls back) as soon as the route returns, before the
# response is sent, so a client that got 2xx always reads its own write.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
WriteSessionDep = Annotated[Session, Depends(get_write_session, scope="function")]


async def require_token(request: Request) -> None:
    """Mutating calls need ``Authorization: Bearer <token>`` when a token is configured.

    Installed as an application-wide dependency (``FastAPI(dependencies=...)``), so every
    route — including ones added later — passes through it; reads stay open. It reads the
    header itself (no OpenAPI parameter); :func:`api.app.create_app` documents the bearer
    scheme on exactly the mutating operations.
    """
    token = request.app.state.settings.api_token
    if not token or request.method.upper() not in MUTATING_METHODS:
        return
    header = request.headers.get("authorization")
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    ):
        raise ApiError(
            401,
            "this call needs 'Authorization: Bearer <token>' (the server's LAYERFORGE_API_TOKEN)"
            if header is None
            else "the bearer token is wrong",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _nul_path(value: Any, path: str) -> str | None:
    """The path of the first string (or key) under ``value`` holding a NUL, else None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            found = _nul_path(item, where)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


async def reject_nul_text(request: Request) -> None:
    """A NUL character in any text of a JSON body is a 422 naming the field: PostgreSQL
    cannot store one (it would surface as a 503), and no name, seed or note needs it.

    Installed application-wide like :func:`require_token`; FastAPI has read (and cached)
    the body before dependencies run. Valid JSON can only hold a NUL as ``\\u0000``."""
    if request.method.upper() not in MUTATING_METHODS:
        return
    body = await request.body()
    if b"\\u0000" not in body:
        return
    try:
        data = json.loads(body)
    except ValueError:
        return  # FastAPI answers malformed JSON itself
    path = _nul_path(data, "")
    if path is not None:
        raise ApiError(
            422,
            f"{path or 'body'}: text may not contain a NUL character (\\u0000)",
            "validation_error",
        )
