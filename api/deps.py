"""Dependencies shared by the routes: settings, database sessions, the bearer token check."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

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
