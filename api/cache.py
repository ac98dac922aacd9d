"""Serialised answers of the read endpoints, reused until the data under them changes.

A dashboard (or fifty) polling the Pareto front and the candidate pages of a campaign asks
the same questions over and over, and the answers only change when the controller stores
something for that campaign. Each answer is therefore built once — queried, validated by its
response model and serialised — and kept as JSON bytes under the campaign's
:class:`storage.repository.DataVersion`, which every repository write to the campaign's data
raises in the writer's transaction. A request reads the current version (one primary-key
lookup) and gets the stored bytes while it is unchanged; any change, from this process or
another one sharing the database, makes the next request build afresh. The version is read
before the data, so a stored answer is never older than the version it is filed under.

Every cached answer carries a strong ``ETag`` (a hash of its bytes) and ``Cache-Control:
no-cache``; a client that sends the tag back in ``If-None-Match`` gets ``304 Not Modified``
without a body (browsers do this by themselves: a polling dashboard downloads the 1.4 MB
front of a 10,000-candidate campaign only when it changed).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from storage import get_engine, session_scope

DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_BYTES = 64 * 2**20

# OpenAPI ``responses`` entries of an endpoint served through the cache.
CACHED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"headers": {"ETag": {"description": "send it back as If-None-Match",
                               "schema": {"type": "string"}}}},
    304: {"description": "Not Modified: the If-None-Match ETag is still current"},
}


@dataclass(frozen=True)
class CachedBody:
    """One serialised answer and the data version it was built from."""

    version: Hashable
    body: bytes
    etag: str


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

    def lookup(self, key: Hashable, version: Hashable) -> CachedBody | None:
        """The answer stored for ``key`` if it was built at exactly ``version``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.version != version:
                return None
            self._entries.move_to_end(key)
            return entry

    def store(self, key: Hashable, version: Hashable, body: bytes) -> CachedBody:
        """Keep ``body`` as the answer to ``key`` at ``version`` (replacing older ones)."""
        entry = CachedBody(version, body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"')
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


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


class CachedReads:
    """What a cached read endpoint needs: its request, the application's cache and the
    database. Handed to routes by :data:`api.deps.CachedReadsDep`.

    :meth:`respond` does all of an answer's database work in one read session on the
    calling thread, so a sync route costs FastAPI a single trip to the thread pool.
    """

    def __init__(self, request: Request, cache: ResponseCache, database_url: str):
        self.request = request
        self.cache = cache
        self.database_url = database_url

    def respond(
        self,
        *,
        key: Hashable,
        version: Callable[[Session], Hashable],
        model: type[BaseModel],
        build: Callable[[Session], Any],
    ) -> Response:
        """The answer to ``key``: ``version(session)`` is read first; while it is unchanged the
        stored bytes are sent, otherwise ``build(session)`` is validated by ``model`` and
        serialised (exactly what FastAPI's ``response_model`` would send) and kept.

        Either callable may raise (404, 400, 422 ...); errors are never cached.
        """
        with session_scope(get_engine(self.database_url), readonly=True) as session:
            current = version(session)
            entry = self.cache.lookup(key, current)
            if entry is None:
                with self.cache.building(key):
                    entry = self.cache.lookup(key, current)
                    if entry is None:
                        body = model.model_validate(build(session)).model_dump_json().encode()
                        entry = self.cache.store(key, current, body)
        headers = {"ETag": entry.etag, "Cache-Control": "no-cache"}  # keep, but revalidate
        if etag_matches(self.request.headers.get("if-none-match"), entry.etag):
            return Response(status_code=304, headers=headers)
        return Response(entry.body, media_type="application/json", headers=headers)
