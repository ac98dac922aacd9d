"""Serialised answers of the read endpoints, reused until the data under them changes.

A dashboard (or fifty) polling the Pareto front and the candidate pages of a campaign asks
the same questions over and over, and the answers only change when the controller stores
something for that campaign. Each answer is therefore built once — queried, validated by its
response model and serialised — and kept as JSON bytes under the campaign's
:class:`storage.versions.DataVersion`, which every repository write to the campaign's data
raises in the writer's transaction. A request reads the current version (one primary-key
lookup, :func:`storage.read_data_version`) and gets the stored bytes while it is unchanged; any
change, from this process or another one sharing the database, makes the next request build
afresh. The version is read before the data, so a stored answer is never older than the
version it is filed under.

Answers are served twice over. :meth:`CachedReads.respond` (inside a FastAPI route) builds and
stores them, and files each under the raw request (path and query string) that asked for it.
:class:`CachedAnswers`, which the application asks before anything else, answers a repeat of
that exact request from memory after the version check, without routing, middleware,
dependency injection, validation or a trip to the thread pool, which cuts a cached read's
cost several times over (figures: docs/measurements.md). Anything it does not hold, and any answer whose data changed, goes on to FastAPI unchanged.

Every cached answer carries a strong ``ETag`` (a hash of its bytes) and ``Cache-Control:
no-cache``; a client that sends the tag back in ``If-None-Match`` gets ``304 Not Modified``
without a body (browsers do this by themselves: a polling dashboard downloads a large
campaign's front only when it changed).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.types import Scope, Send

from layerforge.api import API_PREFIX
from layerforge.api.middleware import route_template
from layerforge.storage import NotFoundError, get_engine, read_data_version, session_scope
from layerforge.storage.versions import VersionReader, VersionScope

DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_BYTES = 64 * 2**20

# OpenAPI ``responses`` entries of an endpoint served through the cache.
CACHED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "ETag": {"description": "send it back as If-None-Match", "schema": {"type": "string"}}
        }
    },
    304: {"description": "Not Modified: the If-None-Match ETag is still current"},
}


@dataclass(frozen=True)
class CachedBody:
    """One serialised answer, the data version it was built from, and where that version is
    read (``scope``: ``("campaign", id)`` or ``("candidate", id)``, see
    :func:`storage.read_data_version`). ``route`` is the route template that built it, which
    the request counter reports for answers served by :class:`CachedAnswers`."""

    version: Hashable
    body: bytes
    etag: str
    scope: tuple[VersionScope, int] | None = None
    route: str | None = None


class ResponseCache:
    """A thread-safe map of request -> answer, bounded in entries and in bytes (the least
    recently used answers leave first)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, CachedBody] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._building: dict[Hashable, tuple[threading.Lock, int]] = {}
        self._requests: OrderedDict[tuple[str, bytes], Hashable] = OrderedDict()
        self.served_before_routing = 0  # answers CachedAnswers sent (one writer: the event loop)

    def lookup(self, key: Hashable, version: Hashable) -> CachedBody | None:
        """The answer stored for ``key`` if it was built at exactly ``version``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.version != version:
                return None
            self._entries.move_to_end(key)
            return entry

    def file_request(self, path: str, query: bytes, key: Hashable) -> None:
        """Remember that the request ``path?query`` is answered by ``key`` (many spellings of
        one request, ``?limit=50`` and ``?order=desc&limit=50``, share one answer)."""
        with self._lock:
            self._requests[(path, query)] = key
            self._requests.move_to_end((path, query))
            while len(self._requests) > self.max_entries:
                self._requests.popitem(last=False)

    def for_request(self, path: str, query: bytes) -> CachedBody | None:
        """The answer last stored for the request ``path?query``, whatever its version."""
        with self._lock:
            key = self._requests.get((path, query))
            entry = None if key is None else self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def store(
        self,
        key: Hashable,
        version: Hashable,
        body: bytes,
        *,
        scope: tuple[VersionScope, int] | None = None,
        route: str | None = None,
    ) -> CachedBody:
        """Keep ``body`` as the answer to ``key`` at ``version`` (replacing older ones)."""
        entry = CachedBody(
            version, body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"', scope, route
        )
        if len(body) > self.max_bytes:
            return entry
        with self._lock:
            previous = self._entries.pop(key, None)
            self._bytes += len(body) - (len(previous.body) if previous else 0)
            self._entries[key] = entry
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted.body)
        return entry

    @contextmanager
    def building(self, key: Hashable) -> Iterator[None]:
        """Hold the lock of ``key`` while building its answer, so that of many requests that
        miss at once (fifty dashboards after one change) one builds and the rest wait for it."""
        with self._lock:
            lock, waiting = self._building.get(key) or (threading.Lock(), 0)
            self._building[key] = (lock, waiting + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, waiting = self._building[key]
                if waiting == 1:
                    del self._building[key]
                else:
                    self._building[key] = (lock, waiting - 1)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def stored_bytes(self) -> int:
        """The size of all stored answers."""
        with self._lock:
            return self._bytes


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def _reads_inline(database_url: str) -> bool:
    """Whether cheap reads run on the event loop: on SQLite they take microseconds and never
    wait for a writer; a networked database's round trip belongs in the thread pool."""
    return database_url.startswith("sqlite")


def _headers(entry: CachedBody) -> dict[str, str]:
    return {"ETag": entry.etag, "Cache-Control": "no-cache"}  # keep, but revalidate


class CachedReads:
    """What a cached read endpoint needs: its request, the application's cache and the
    database. Handed to routes by :data:`api.deps.CachedReadsDep`.

    :meth:`respond` does all of an answer's database work on the calling thread, so a sync
    route costs FastAPI a single trip to the thread pool.
    """

    def __init__(self, request: Request, cache: ResponseCache, database_url: str):
        self.request = request
        self.cache = cache
        self.database_url = database_url

    def respond(
        self,
        *,
        key: Hashable,
        scope: tuple[VersionScope, int],
        model: type[BaseModel],
        build: Callable[[Session], Any],
    ) -> Response:
        """The answer to ``key``: the data version at ``scope`` is read first (404 when that
        campaign or candidate does not exist); while it is unchanged the stored bytes are
        sent, otherwise ``build(session)`` is validated by ``model`` and serialised (exactly
        what FastAPI's ``response_model`` would send) and kept, filed under this request.

        ``build`` may raise (404, 400, 422 ...); errors are never cached.
        """
        engine = get_engine(self.database_url)
        current = read_data_version(engine, *scope)
        if current is None:
            raise NotFoundError(f"{scope[0]} {scope[1]} does not exist")
        entry = self.cache.lookup(key, current)
        if entry is None:
            with self.cache.building(key):
                entry = self.cache.lookup(key, current)
                if entry is None:
                    with session_scope(engine, readonly=True) as session:
                        data = build(session)
                    body = model.model_validate(data).model_dump_json().encode()
                    route = route_template(self.request.scope, (API_PREFIX,))
                    entry = self.cache.store(key, current, body, scope=scope, route=route)
        self.cache.file_request(
            self.request.scope["path"], self.request.scope.get("query_string", b""), key
        )
        if etag_matches(self.request.headers.get("if-none-match"), entry.etag):
            return Response(status_code=304, headers=_headers(entry))
        return Response(entry.body, media_type="application/json", headers=_headers(entry))

    async def respond_quick(self, **kwargs: Any) -> Response:
        """:meth:`respond` for an answer that takes a few milliseconds to build (one
        candidate): on SQLite, whose reads never wait for a writer, it runs right here on the
        event loop, sparing the trip to the thread pool and the hand-offs of the interpreter
        between threads that cost more than the build; on a networked database it runs in the
        thread pool."""
        if _reads_inline(self.database_url):
            return self.respond(**kwargs)
        return await anyio.to_thread.run_sync(functools.partial(self.respond, **kwargs))


class CachedAnswers:
    """Answer a ``GET`` that :meth:`CachedReads.respond` answered before straight from the
    cache while the data under it is unchanged: no routing, middleware, validation or thread
    pool. The application calls :meth:`serve` first for every request (see
    :class:`api.app.LayerforgeAPI`).

    The version check is one primary-key read (:class:`storage.versions.VersionReader`),
    made on the event loop for SQLite, whose readers never wait, and in the
    thread pool for a database behind a network. Any error in that check, a deleted campaign
    or a changed version leaves the request to the application, which answers it (and
    refreshes the cache) as if this did not exist. Answers sent here are counted in the
    request metrics under their route like any other.
    """

    def __init__(
        self,
        cache: ResponseCache,
        database_url: str,
        count: Callable[..., None] | None = None,
    ):
        self.cache = cache
        self.database_url = database_url
        self.count = count
        self._inline = _reads_inline(database_url)
        self._reader: VersionReader | None = None

    async def _current(self, entry: CachedBody) -> Hashable | None:
        if self._reader is None:
            self._reader = VersionReader(get_engine(self.database_url))
        scope = entry.scope
        assert scope is not None, "only entries with a version scope are revalidated"
        try:
            if self._inline:
                return self._reader.read(*scope)
            return await anyio.to_thread.run_sync(self._reader.read, *scope)
        except Exception:  # noqa: BLE001 - the application reports database trouble itself
            return None

    async def serve(self, scope: Scope, send: Send) -> bool:
        """Send the stored answer to this HTTP request if it is current; False to let the
        application answer."""
        if scope["method"] != "GET":
            return False
        started = time.perf_counter()
        entry = self.cache.for_request(scope["path"], scope.get("query_string", b""))
        if entry is None or entry.scope is None or await self._current(entry) != entry.version:
            return False
        self.cache.served_before_routing += 1
        headers = [(b"etag", entry.etag.encode()), (b"cache-control", b"no-cache")]
        status = 304 if etag_matches(_header(scope, b"if-none-match"), entry.etag) else 200
        body = b"" if status == 304 else entry.body
        if status == 200:
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if self.count is not None:
            self.count("GET", entry.route, status, time.perf_counter() - started, cached=True)
        return True

    def close(self) -> None:
        """Close the version reader's own database connection."""
        if self._reader is not None:
            self._reader.close()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
