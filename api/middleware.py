"""Pure ASGI middleware: the request-body limit (413) and the HTTP request metrics.

:class:`RequestMetrics` holds the Prometheus series of one application (its own
``prometheus_client`` registry, so two apps in one process never mix their counts): requests
by method, route template and status, and a latency histogram per route. Answers sent from
the response cache before routing (:class:`api.cache.CachedAnswers`) are counted there too,
and also as cache-served.
"""

from __future__ import annotations

import json
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body reader re-raises it as is."""

    def __init__(self, message: str):
        super().__init__(413, message)


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413.

    Checks the declared ``Content-Length`` first, then counts the bytes actually received
    (chunked uploads and lying headers), so no route ever sees more than ``max_bytes``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        too_large = f"the request body is larger than the limit of {limit} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, 400, "bad_request", "Content-Length is not a number")
                    return
                if declared > limit:
                    await _send_error(send, 413, "payload_too_large", too_large)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(too_large)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_error(send, 413, "payload_too_large", too_large)
        except Exception as err:  # FastAPI wraps body-reading errors; unwrap ours
            if _caused_by_limit(err) and not started:
                await _send_error(send, 413, "payload_too_large", too_large)
                return
            raise


def _caused_by_limit(err: BaseException | None) -> bool:
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, _BodyTooLarge):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


#: Latency buckets in seconds: cache-served reads take well under a millisecond, a campaign
#: submission tens of milliseconds, a curve or export of a large graph up to seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RequestMetrics:
    """HTTP requests by method, route template and status, with their latency per route, as
    Prometheus series on ``registry`` (thread-safe, like every ``prometheus_client`` metric)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "layerforge_http_requests",
            "HTTP requests by method, route, status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "layerforge_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cached = Counter(
            "layerforge_http_cached_responses",
            "Answers sent from the response cache before routing, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )

    def add(
        self,
        method: str,
        route: str | None,
        status: int,
        seconds: float | None = None,
        *,
        cached: bool = False,
    ) -> None:
        """Count one answered request (and its duration, when measured)."""
        route = route or "unmatched"
        self.requests.labels(method, route, str(status)).inc()
        if seconds is not None:
            self.latency.labels(method, route).observe(seconds)
        if cached:
            self.cached.labels(route, str(status)).inc()


class MetricsMiddleware:
    """Count and time every HTTP request under its route template
    (``/api/v1/campaigns/{campaign_id}``)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics, prefixes: tuple[str, ...] = ()):
        self.app = app
        self.metrics = metrics
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self.metrics.add(
                scope.get("method", "GET"),
                route_template(scope, self.prefixes),
                status,
                time.perf_counter() - started,
            )


def route_template(scope: Scope, prefixes: tuple[str, ...] = ()) -> str:
    """The template of the route that answered (``/api/v1/campaigns/{campaign_id}``),
    ``/static`` for static files, ``unmatched`` for anything no route took."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    path = scope.get("path", "")
    if template is None:
        return "/static" if path.startswith("/static/") else "unmatched"
    for prefix in prefixes:  # routes of an included router report their path without it
        if path.startswith(prefix + "/") and not template.startswith(prefix + "/"):
            return prefix + template
    return template
