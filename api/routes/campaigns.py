"""Campaign routes: submit, list, inspect, pause / resume / cancel, delete, Pareto, history."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from layerforge.api.cache import CACHED_RESPONSES
from layerforge.api.deps import CachedReadsDep, SessionDep, SettingsDep, WriteSessionDep
from layerforge.api.errors import ApiError, responses
from layerforge.api.routes.common import (
    cursor_id,
    decode_cursor,
    encode_cursor,
    finite,
    hypervolume_box,
    normalized,
)
from layerforge.api.schemas import (
    CampaignCreate,
    CampaignDetail,
    CampaignPage,
    CampaignPublic,
    CampaignStatus,
    EstimatePublic,
    HypervolumeHistory,
    HypervolumePointPublic,
    ParetoPublic,
)
from layerforge.storage import ConflictError, StorageError, get_engine, is_transient, session_scope
from layerforge.storage import repository as repo
from layerforge.storage.models import (
    CAMPAIGN_FINISHED,
    Campaign,
    Candidate,
    HypervolumePoint,
    ObjectiveValue,
)

router = APIRouter(tags=["campaigns"])

MAX_ID = 2**31 - 1
CampaignId = Annotated[int, Path(ge=1, le=MAX_ID, description="campaign id")]

# Which statuses each action may start from, and where it leads.
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "pause": (("queued", "running"), "paused"),
    "resume": (("paused",), "running"),
    "cancel": (("queued", "running", "paused"), "cancelled"),
}


# ---------------------------------------------------------------- shaping


def _budget(campaign: Campaign) -> int:
    budget = (campaign.spec or {}).get("budget") or {}
    return int(budget.get("max_candidates") or 0)


def _max_seconds(campaign: Campaign) -> float | None:
    budget = (campaign.spec or {}).get("budget") or {}
    return finite(budget.get("max_seconds"))


def _candidate_totals(session: Session, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(Candidate.campaign_id, func.count())
        .where(Candidate.campaign_id.in_(ids))
        .group_by(Candidate.campaign_id)
    )
    return {int(cid): int(count) for cid, count in rows}


def campaign_public(campaign: Campaign, candidates: int) -> dict[str, Any]:
    budget = _budget(campaign)
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "space_kind": campaign.space_kind,
        "strategy": campaign.strategy,
        "objectives": [
            {"name": str(o.get("name")), "maximize": bool(o.get("maximize"))}
            for o in campaign.objectives or []
            if isinstance(o, dict)
        ],
        "progress": {
            "candidates": candidates,
            "budget": budget,
            "fraction": min(1.0, candidates / budget) if budget else 0.0,
        },
        "error": campaign.error,
        "created_at": campaign.created_at,
        "started_at": campaign.started_at,
        "finished_at": campaign.finished_at,
        "updated_at": campaign.updated_at,
    }


def _best(session: Session, campaign: Campaign) -> dict[str, float | None]:
    rows = session.execute(
        select(ObjectiveValue.name, func.max(ObjectiveValue.value), func.min(ObjectiveValue.value))
        .where(ObjectiveValue.campaign_id == campaign.id, ObjectiveValue.value_kind == "finite")
        .group_by(ObjectiveValue.name)
    )
    extremes = {name: (high, low) for name, high, low in rows}
    best: dict[str, float | None] = {}
    for objective in campaign.objectives or []:
        name = str(objective.get("name"))
        high, low = extremes.get(name, (None, None))
        best[name] = finite(high if objective.get("maximize") else low)
    return best


def _estimate(campaign: Campaign, counts: dict[str, int], elapsed: float) -> dict[str, Any]:
    budget = _budget(campaign)
    finished = sum(v for k, v in counts.items() if k not in ("proposed", "running"))
    remaining = max(budget - finished, 0)
    if campaign.status in CAMPAIGN_FINISHED:
        return {
            "remaining_candidates": 0,
            "remaining_seconds": 0.0,
            "rate_per_second": finished / elapsed if elapsed > 0 else None,
            "limited_by": None,
        }
    rate = finished / elapsed if elapsed > 0 and finished > 0 else None
    by_candidates = remaining / rate if rate else None
    max_seconds = _max_seconds(campaign)
    by_time = max(max_seconds - elapsed, 0.0) if max_seconds is not None else None
    options = [
        (v, k) for v, k in ((by_candidates, "candidates"), (by_time, "seconds")) if v is not None
    ]
    if not options:
        return {
            "remaining_candidates": remaining,
            "remaining_seconds": None,
            "rate_per_second": rate,
            "limited_by": None,
        }
    seconds, limited_by = min(options)
    return {
        "remaining_candidates": remaining,
        "remaining_seconds": seconds,
        "rate_per_second": rate,
        "limited_by": limited_by,
    }


def campaign_detail(session: Session, campaign: Campaign) -> dict[str, Any]:
    counts = repo.count_candidates(session, campaign_id=campaign.id)
    last_hv = session.scalars(
        select(HypervolumePoint)
        .where(HypervolumePoint.campaign_id == campaign.id)
        .order_by(HypervolumePoint.id.desc())
        .limit(1)
    ).first()
    elapsed = max(
        float(campaign.elapsed_seconds or 0.0), float(last_hv.elapsed_seconds) if last_hv else 0.0
    )
    public = campaign_public(campaign, sum(counts.values()))
    box = hypervolume_box(public["objectives"], campaign.reference_point)
    hypervolume = finite(last_hv.hypervolume) if last_hv else None
    return {
        **public,
        "hypervolume_normalized": normalized(hypervolume, box),
        "hypervolume_box": box,
        "spec": campaign.spec or {},
        "counts": counts,
        "evaluations": repo.count_evaluations(session, campaign_id=campaign.id),
        "funnel": repo.rejection_funnel(session, campaign_id=campaign.id),
        "best": _best(session, campaign),
        "hypervolume": hypervolume,
        "elapsed_seconds": elapsed,
        "estimate": EstimatePublic(**_estimate(campaign, counts, elapsed)),
    }


def _wake(request: Request) -> None:
    manager = getattr(request.app.state, "manager", None)
    if manager is not None:
        manager.wake()


# ---------------------------------------------------------------- routes


@router.post(
    "/campaigns",
    status_code=202,
    response_model=CampaignDetail,
    responses={
        **responses(400, 401, 409, 413, 422),
        202: {
            "description": "Accepted; the campaign is queued. `Location` names it.",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
    },
)
def submit_campaign(
    spec: CampaignCreate,
    request: Request,
    response: Response,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="a retried POST with the same key returns the same campaign",
        ),
    ] = None,
) -> dict[str, Any]:
    """Submit a campaign spec; it is queued and the controller starts it."""
    from layerforge.search.campaign import create_campaign

    url = settings.database_url
    engine = get_engine(url)
    dumped = spec.model_dump(mode="json")
    if idempotency_key is not None:
        with session_scope(engine, readonly=True) as s:
            existing = repo.find_campaign_by_idempotency_key(s, key=idempotency_key)
            if existing is not None and existing.spec != dumped:
                raise ApiError(
                    409,
                    f"Idempotency-Key {idempotency_key!r} was used for campaign "
                    f"{existing.id} with a different spec",
                    "idempotency_conflict",
                )
    try:
        campaign_id = create_campaign(url, spec, idempotency_key=idempotency_key)
    except ConflictError:
        if idempotency_key is None:
            raise
        campaign_id = create_campaign(url, spec, idempotency_key=idempotency_key)  # lost a race
    _wake(request)
    response.headers["Location"] = f"/api/v1/campaigns/{campaign_id}"
    with session_scope(engine, readonly=True) as s:
        return campaign_detail(s, repo.get_campaign(s, campaign_id=campaign_id))


@router.get("/campaigns", response_model=CampaignPage, responses=responses(400, 422))
def list_campaigns(
    session: SessionDep,
    status: Annotated[
        CampaignStatus | None, Query(description="only campaigns in this status")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Campaigns, newest first, a page at a time."""
    after = None
    if cursor:
        data = decode_cursor(cursor, "campaigns")
        if data.get("status") != status:
            raise ApiError(400, "the cursor belongs to another status filter", "bad_cursor")
        after = cursor_id(data)
    rows = repo.list_campaigns(session, status=status, after=after, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    totals = _candidate_totals(session, [c.id for c in page])
    return {
        "items": [campaign_public(c, totals.get(c.id, 0)) for c in page],
        "next_cursor": encode_cursor({"k": "campaigns", "id": page[-1].id, "status": status})
        if more
        else None,
    }


@router.get(
    "/campaigns/{campaign_id}", response_model=CampaignDetail, responses=responses(404, 422)
)
def get_campaign(campaign_id: CampaignId, session: SessionDep) -> dict[str, Any]:
    """Status, counts per candidate status, funnel, best values, hypervolume and estimate."""
    return campaign_detail(session, repo.get_campaign(session, campaign_id=campaign_id))


def _act(session: Session, campaign_id: int, action: str) -> Campaign:
    allowed, target = ACTIONS[action]
    campaign = repo.get_campaign(session, campaign_id=campaign_id)
    if campaign.status not in allowed:
        raise ApiError(
            409,
            f"cannot {action} campaign {campaign_id}: it is {campaign.status!r}; "
            f"only a campaign that is {' or '.join(repr(s) for s in allowed)} can be "
            f"moved to {target!r}",
            "invalid_state",
        )
    return repo.set_campaign_status(
        session, campaign_id=campaign_id, status=target, expected=allowed
    )


def _action_route(action: str):
    allowed, target = ACTIONS[action]

    def endpoint(campaign_id: CampaignId, request: Request, session: WriteSessionDep) -> dict:
        campaign = _act(session, campaign_id, action)
        session.flush()
        result = campaign_public(
            campaign, sum(repo.count_candidates(session, campaign_id=campaign_id).values())
        )
        if action == "resume":
            session.commit()
            _wake(request)
        return result

    endpoint.__name__ = f"{action}_campaign"
    endpoint.__doc__ = (
        f"Move the campaign from {' or '.join(allowed)} to {target}; 409 from any other status."
    )
    router.add_api_route(
        f"/campaigns/{{campaign_id}}/{action}",
        endpoint,
        methods=["POST"],
        response_model=CampaignPublic,
        responses=responses(401, 404, 409, 422),
        name=f"{action}_campaign",
    )


for _action in ACTIONS:
    _action_route(_action)


@router.delete("/campaigns/{campaign_id}", status_code=204, responses=responses(401, 404, 409, 422))
def delete_campaign(campaign_id: CampaignId, settings: SettingsDep) -> Response:
    """Delete a finished (completed, cancelled or failed) campaign and all it holds."""
    # Right after a cancel, the campaign's runner may still be closing its evaluations; on
    # PostgreSQL the cascade and that write can deadlock and one of them is aborted. The
    # aborted delete is retried here (twice) rather than answered with a 503.
    for attempt in range(3):
        try:
            with session_scope(get_engine(settings.database_url)) as session:
                campaign = repo.get_campaign(session, campaign_id=campaign_id)
                if campaign.status not in CAMPAIGN_FINISHED:
                    raise ApiError(
                        409,
                        f"cannot delete campaign {campaign_id}: it is "
                        f"{campaign.status!r}; only completed, cancelled or failed "
                        "campaigns can be deleted (cancel it first)",
                        "invalid_state",
                    )
                repo.delete_campaign(session, campaign_id=campaign_id)
            return Response(status_code=204)
        except StorageError as err:
            if attempt == 2 or not is_transient(err):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def pareto_answer(database_url: str, campaign_id: int) -> dict[str, Any]:
    """The fields of :class:`api.schemas.ParetoPublic` (non-finite numbers as None)."""
    from layerforge.search.campaign import pareto_of_campaign

    data = pareto_of_campaign(database_url, campaign_id)

    def point(p: dict[str, Any]) -> dict[str, Any]:
        return {**p, "values": {k: finite(v) for k, v in (p.get("values") or {}).items()}}

    return {
        **data,
        "reference_point": None
        if data.get("reference_point") is None
        else [finite(v) for v in data["reference_point"]],
        "front": [point(p) for p in data["front"]],
        "dominated": [point(p) for p in data["dominated"]],
    }


@router.get(
    "/campaigns/{campaign_id}/pareto",
    response_model=ParetoPublic,
    responses={**responses(404, 422), **CACHED_RESPONSES},
)
def get_pareto(campaign_id: CampaignId, reads: CachedReadsDep) -> Response:
    """The Pareto front and the dominated points (values by objective name; NaN as null).

    The answer is computed once per change of the campaign's data and served from memory
    until the next one: dashboards poll this while a campaign runs.
    """
    return reads.respond(
        key=("pareto", campaign_id),
        scope=("campaign", campaign_id),
        model=ParetoPublic,
        build=lambda _session: pareto_answer(reads.database_url, campaign_id),
    )


@router.get(
    "/campaigns/{campaign_id}/hypervolume",
    response_model=HypervolumeHistory,
    responses=responses(404, 422),
)
def get_hypervolume(
    campaign_id: CampaignId,
    session: SessionDep,
    max_points: Annotated[
        int, Query(ge=2, le=100_000, description="downsample to this many")
    ] = 2000,
) -> dict[str, Any]:
    """The hypervolume after each evaluation (evenly downsampled, the last point kept)."""
    campaign = repo.get_campaign(session, campaign_id=campaign_id)
    box = hypervolume_box(campaign_public(campaign, 0)["objectives"], campaign.reference_point)
    points = repo.list_hypervolume(session, campaign_id=campaign_id)
    if len(points) > max_points:
        step = len(points) / (max_points - 1)
        points = [points[int(i * step)] for i in range(max_points - 1)] + [points[-1]]
    return {
        "campaign_id": campaign_id,
        "box": box,
        "points": [
            HypervolumePointPublic(
                evaluations=p.evaluations,
                hypervolume=finite(p.hypervolume),
                hypervolume_normalized=normalized(finite(p.hypervolume), box),
                elapsed_seconds=float(p.elapsed_seconds or 0.0),
                created_at=p.created_at,
            )
            for p in points
        ],
    }
