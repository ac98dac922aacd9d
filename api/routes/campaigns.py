"""Campaign routes: submit, list, inspect, pause / resume / cancel, delete, Pareto, history."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
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
    EstimatePublic,
    HypervolumeHistory,
    HypervolumePointPublic,
    OptunaStudyPublic,
    ParetoPublic,
)
from layerforge.storage import (
    CAMPAIGN_FINISHED,
    CANDIDATE_IN_FLIGHT,
    Campaign,
    CampaignStatus,
    StorageError,
    get_engine,
    is_transient,
    session_scope,
)
from layerforge.storage import repository as repo

router = APIRouter(tags=["campaigns"])

MAX_ID = 2**31 - 1
CampaignId = Annotated[int, Path(ge=1, le=MAX_ID, description="campaign id")]

# Which statuses each action may start from, and where it leads.
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "pause": ((CampaignStatus.QUEUED, CampaignStatus.RUNNING), CampaignStatus.PAUSED),
    "resume": ((CampaignStatus.PAUSED,), CampaignStatus.RUNNING),
    "cancel": (
        (CampaignStatus.QUEUED, CampaignStatus.RUNNING, CampaignStatus.PAUSED),
        CampaignStatus.CANCELLED,
    ),
}


# ---------------------------------------------------------------- shaping


def _budget(campaign: Campaign) -> int:
    budget = (campaign.spec or {}).get("budget") or {}
    return int(budget.get("max_candidates") or 0)


def _max_seconds(campaign: Campaign) -> float | None:
    budget = (campaign.spec or {}).get("budget") or {}
    return finite(budget.get("max_seconds"))


def _candidate_totals(session: Session, ids: list[int]) -> dict[int, int]:
    return repo.candidate_totals(session, campaign_ids=ids)


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
    extremes = repo.objective_extremes(session, campaign_id=campaign.id)
    best: dict[str, float | None] = {}
    for objective in campaign.objectives or []:
        name = str(objective.get("name"))
        high, low = extremes.get(name, (None, None))
        best[name] = finite(high if objective.get("maximize") else low)
    return best


def _estimate(campaign: Campaign, counts: dict[str, int], elapsed: float) -> dict[str, Any]:
    budget = _budget(campaign)
    finished = sum(v for k, v in counts.items() if k not in CANDIDATE_IN_FLIGHT)
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


def _waiting(session: Session, campaign: Campaign) -> str | None:
    """Why a running campaign's work is not running (its runner's latest progress event says,
    e.g. no Ray worker has a free CPU); None for any other status."""
    if campaign.status != CampaignStatus.RUNNING:
        return None
    event = repo.latest_event(session, campaign_id=campaign.id, kind="progress")
    payload = (event.payload if event is not None else None) or {}
    reason = payload.get("waiting")
    return str(reason) if reason else None


def campaign_detail(session: Session, campaign: Campaign) -> dict[str, Any]:
    counts = repo.count_candidates(session, campaign_id=campaign.id)
    last_hv = repo.latest_hypervolume(session, campaign_id=campaign.id)
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
        "waiting": _waiting(session, campaign),
        "counts": counts,
        "evaluations": repo.count_evaluations(session, campaign_id=campaign.id),
        "funnel": repo.rejection_funnel(session, campaign_id=campaign.id),
        "best": _best(session, campaign),
        "hypervolume": hypervolume,
        "elapsed_seconds": elapsed,
        "estimate": EstimatePublic(**_estimate(campaign, counts, elapsed)),
        "fidelity": _fidelity(session, campaign.id),
    }


def _fidelity(session: Session, campaign_id: int) -> dict[str, Any] | None:
    """The campaign's proxy-fidelity report (its newest ``fidelity`` event), if any."""
    event = repo.latest_event(session, campaign_id=campaign_id, kind="fidelity")
    return dict(event.payload) if event is not None else None


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
    """Submit a campaign spec; it is queued and the controller starts it.

    With an ``Idempotency-Key``: the same key and the same spec (normalized) return the
    campaign the first submission created (``Idempotent-Replayed: true``), concurrent ones
    included; the same key with another spec is a 409 ``idempotency_conflict``."""
    from layerforge.search.queries import create_or_find_campaign

    url = settings.database_url
    campaign_id, created = create_or_find_campaign(url, spec, idempotency_key=idempotency_key)
    if created:
        _wake(request)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/api/v1/campaigns/{campaign_id}"
    with session_scope(get_engine(url), readonly=True) as s:
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
        if action == "cancel":
            session.commit()
            manager = getattr(request.app.state, "manager", None)
            if manager is not None:
                manager.cancel(campaign_id)  # its jobs stop now, not at the runner's next check
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


# How long a delete waits for the campaign's runner (in this service) to stop.
DELETE_RUNNER_STOP_S = 10.0


def _refuse_unfinished(campaign: Campaign) -> None:
    if campaign.status not in CAMPAIGN_FINISHED:
        raise ApiError(
            409,
            f"cannot delete campaign {campaign.id}: it is {campaign.status!r}; only "
            "completed, cancelled or failed campaigns can be deleted (cancel it first)",
            "invalid_state",
        )


@router.delete("/campaigns/{campaign_id}", status_code=204, responses=responses(401, 404, 409, 422))
def delete_campaign(campaign_id: CampaignId, request: Request, settings: SettingsDep) -> Response:
    """Delete a finished (completed, cancelled or failed) campaign and all it holds.

    The campaign's runner in this service (still closing a cancelled campaign, say) is
    stopped first, and the row goes only once it has left, so no runner ever writes for a
    deleted campaign; a runner that does not stop within 10 s is a 409 and nothing is
    deleted. A runner in another process notices the deletion and leaves by itself.
    """
    engine = get_engine(settings.database_url)
    with session_scope(engine, readonly=True) as session:
        _refuse_unfinished(repo.get_campaign(session, campaign_id=campaign_id))
    manager = getattr(request.app.state, "manager", None)
    try:
        if manager is not None and not manager.stop_campaign(
            campaign_id, timeout_s=DELETE_RUNNER_STOP_S
        ):
            raise ApiError(
                409,
                f"cannot delete campaign {campaign_id} yet: its runner did not stop within "
                f"{DELETE_RUNNER_STOP_S:g} s; try again",
                "runner_busy",
            )
        _delete(engine, campaign_id)
    finally:
        if manager is not None:
            manager.forget(campaign_id)
    return Response(status_code=204)


def _delete(engine, campaign_id: int) -> None:
    """Delete the campaign's row (and, by cascade, everything under it)."""
    # Right after a cancel, the campaign's runner may still be closing its evaluations; on
    # PostgreSQL the cascade and that write can deadlock and one of them is aborted. The
    # aborted delete is retried here (twice) rather than answered with a 503.
    for attempt in range(3):
        try:
            with session_scope(engine) as session:
                _refuse_unfinished(repo.get_campaign(session, campaign_id=campaign_id))
                repo.delete_campaign(session, campaign_id=campaign_id)
            return
        except StorageError as err:
            if attempt == 2 or not is_transient(err):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def pareto_answer(database_url: str, campaign_id: int) -> dict[str, Any]:
    """The fields of :class:`api.schemas.ParetoPublic` (non-finite numbers as None)."""
    from layerforge.search.queries import pareto_of_campaign

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
    "/campaigns/{campaign_id}/optuna",
    response_model=OptunaStudyPublic,
    responses={
        **responses(404, 422),
        200: {"content": {"application/vnd.sqlite3": {}}, "description": "the study"},
    },
)
def get_optuna_study(
    campaign_id: CampaignId,
    session: SessionDep,
    format: Annotated[
        Literal["json", "sqlite"], Query(description="json (the trials) or sqlite (a study file)")
    ] = "json",
) -> Any:
    """The campaign's evaluated candidates as a multi-objective Optuna study: one trial per
    candidate (params: text and structure; values: the objectives; user attrs: LaTeX,
    fingerprint, status). ``sqlite`` is a file ``optuna.load_study`` and optuna-dashboard
    open (``sqlite:///FILE``); ``layerforge export-optuna`` writes the JSON into any
    Optuna storage."""
    from layerforge.search.optuna_export import study_document, write_study

    document = study_document(session, campaign_id)
    if format == "json":
        return document
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "study.db")
        write_study(document, f"sqlite:///{path}")
        with open(path, "rb") as file:
            content = file.read()
    return Response(
        content,
        media_type="application/vnd.sqlite3",
        headers={"Content-Disposition": f'attachment; filename="{document["study_name"]}.db"'},
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


@router.get("/campaigns/{campaign_id}/transfer", responses=responses(404, 422))
def get_transfer(
    campaign_id: CampaignId, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """The transfer stage's confirmation: each re-evaluated candidate's held-out runs (mean,
    SD and values over seeds per proxy and learning rate), whether it beats the baseline by
    more than 2 pooled SDs on every one (``beats_baseline``), and the scale controls
    (2·relu, 3·relu trained raw). Empty until the transfer stage has run."""
    from layerforge.search.queries import transfer_ranking

    repo.get_campaign(session, campaign_id=campaign_id)  # 404 for an unknown campaign
    rows = transfer_ranking(settings.database_url, campaign_id)
    return {
        "campaign_id": campaign_id,
        "rows": rows,
        "confirmed": [
            r["candidate_id"]
            for r in rows
            if r.get("beats_baseline") is True and not r.get("control")
        ],
    }
