"""``GET /campaigns/{id}/events``: server-sent events read from the event table.

Each stored event becomes ``id: N / event: KIND / data: JSON``. The stream starts after
``Last-Event-ID`` (what EventSource sends on reconnect) or ``?after=``, sends a keep-alive
comment when nothing happened for a while, and ends with an ``end`` event once the campaign
is finished and every event was sent — or when its lifetime runs out (the client reconnects
with Last-Event-ID and loses nothing).
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from layerforge.api.deps import SettingsDep
from layerforge.api.errors import responses
from layerforge.api.routes.campaigns import CampaignId
from layerforge.storage import (
    CAMPAIGN_FINISHED,
    NotFoundError,
    StorageError,
    get_engine,
    session_scope,
)
from layerforge.storage import repository as repo

router = APIRouter(tags=["campaigns"])

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
MAX_STREAM_SECONDS = 300.0


# Event ids are 32-bit integers on PostgreSQL: a larger cursor would make the query fail
# ("integer out of range") instead of returning nothing.
MAX_EVENT_ID = 2**31 - 1


def _read(url: str, campaign_id: int, after: int) -> tuple[str | None, list[tuple[int, str, dict]]]:
    after = min(after, MAX_EVENT_ID)
    with session_scope(get_engine(url), readonly=True) as s:
        try:
            status = repo.get_campaign(s, campaign_id=campaign_id).status
        except NotFoundError:
            return None, []
        events = repo.list_events(s, campaign_id=campaign_id, after=after, limit=200)
        return status, [(e.id, e.kind, e.payload or {}) for e in events]


@router.get(
    "/campaigns/{campaign_id}/events",
    response_class=StreamingResponse,
    responses={
        **responses(404, 422),
        200: {
            "description": "text/event-stream of the campaign's events",
            # one server-sent event (the stream is a sequence of them): its kind, its id
            # (the Last-Event-ID to resume after) and its JSON payload as text
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "event": {"type": "string"},
                            "id": {"type": "string"},
                            "data": {"type": "string"},
                            "retry": {"type": "integer"},
                        },
                        "required": ["data"],
                    }
                }
            },
        },
    },
)
async def stream_events(
    campaign_id: CampaignId,
    request: Request,
    settings: SettingsDep,
    after: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="start after this event id")
    ] = None,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**63 - 1)] = None,
    timeout: Annotated[
        float | None, Query(gt=0, le=3600, description="close the stream after this many s")
    ] = None,
) -> StreamingResponse:
    """Server-sent events of the campaign's progress (status, progress, candidate, ...)."""
    url = settings.database_url
    status, _ = await anyio.to_thread.run_sync(_read, url, campaign_id, 2**62)
    if status is None:
        raise NotFoundError(f"campaign {campaign_id} does not exist")
    state = request.app.state
    lifetime = min(
        timeout or MAX_STREAM_SECONDS, getattr(state, "sse_max_seconds", MAX_STREAM_SECONDS)
    )
    keepalive = getattr(state, "sse_keepalive_seconds", KEEPALIVE_SECONDS)
    poll = getattr(state, "sse_poll_seconds", POLL_SECONDS)
    cursor = max(after or 0, last_event_id or 0)

    async def generate():
        nonlocal cursor
        started = last_sent = time.monotonic()
        yield f"retry: 2000\n: campaign {campaign_id}\n\n"
        while True:
            try:
                current, events = await anyio.to_thread.run_sync(_read, url, campaign_id, cursor)
            except StorageError:
                # a dropped database connection must not kill the stream: try again
                # next round (the engine reconnects; the cursor loses nothing)
                if time.monotonic() - started >= lifetime or await request.is_disconnected():
                    return
                await anyio.sleep(poll)
                continue
            for event_id, kind, payload in events:
                cursor = event_id
                data = json.dumps(payload, separators=(",", ":"), default=str)
                yield f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"
                last_sent = time.monotonic()
            if current is None or (current in CAMPAIGN_FINISHED and not events):
                yield f"event: end\ndata: {json.dumps({'status': current or 'deleted'})}\n\n"
                return
            if events and len(events) == 200:
                continue  # more are waiting: no pause
            now = time.monotonic()
            if now - started >= lifetime:
                return
            if now - last_sent >= keepalive:
                yield ": keep-alive\n\n"
                last_sent = now
            if await request.is_disconnected():
                return
            await anyio.sleep(poll)

    return StreamingResponse(
        generate(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
