"""Service routes: ops, built-in layers, health and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select, text

from layerforge.api.deps import SessionDep, SettingsDep
from layerforge.api.errors import responses
from layerforge.api.schemas import HealthPublic, OpPublic
from layerforge.storage import current_revision, get_engine, head_revision
from layerforge.storage.models import (
    CAMPAIGN_STATUSES,
    CANDIDATE_STATUSES,
    EVALUATION_STATUSES,
    Campaign,
    Candidate,
    Evaluation,
)

router = APIRouter(tags=["service"])
service_router = APIRouter(tags=["service"])

SpaceKind = Literal["activation", "normact"]


@router.get("/ops", response_model=list[OpPublic], responses=responses(422))
def list_ops(kind: Annotated[SpaceKind | None, Query()] = None) -> list[dict[str, Any]]:
    """The grammar's ops (for a space kind, or all), with arity and the spaces that allow them."""
    from layerforge.grammar import list_ops as grammar_ops

    return [
        {"name": op.name, "arity": int(op.arity), "kinds": sorted(op.kinds)}
        for op in grammar_ops(kind)
    ]


@router.get("/builtins", response_model=list[str], responses=responses(422))
def list_builtins(kind: Annotated[SpaceKind | None, Query()] = None) -> list[str]:
    """Names of the built-in layers (usable as campaign seeds)."""
    from layerforge.grammar import list_builtins as grammar_builtins

    return list(grammar_builtins(kind))


@service_router.get("/healthz", response_model=HealthPublic)
def healthz(settings: SettingsDep) -> dict[str, Any]:
    """Liveness and database reachability, with the schema revision and version."""
    from layerforge.api import layerforge_version

    engine = get_engine(settings.database_url)
    database: dict[str, Any] = {"backend": engine.dialect.name}
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database["ok"] = True
        database["revision"] = current_revision(settings.database_url)
        database["head"] = head_revision()
    except Exception as err:  # noqa: BLE001 - reported, not raised
        database["ok"] = False
        database["error"] = str(err).splitlines()[0]
    return {
        "status": "ok" if database["ok"] else "degraded",
        "version": layerforge_version(),
        "database": database,
    }


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@service_router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format",
        }
    },
)
def metrics(request: Request, session: SessionDep) -> PlainTextResponse:
    """Prometheus metrics: campaigns, candidates and evaluations by status, HTTP requests,
    active controller runners."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}")

    def by_status(model, statuses) -> list[tuple[dict, float]]:
        counts = dict.fromkeys(statuses, 0)
        for status, count in session.execute(
            select(model.status, func.count()).group_by(model.status)
        ):
            counts[status] = int(count)
        return [({"status": s}, float(c)) for s, c in counts.items()]

    family(
        "layerforge_campaigns",
        "gauge",
        "Campaigns by status.",
        by_status(Campaign, CAMPAIGN_STATUSES),
    )
    family(
        "layerforge_candidates",
        "gauge",
        "Candidates by status.",
        by_status(Candidate, CANDIDATE_STATUSES),
    )
    family(
        "layerforge_evaluations",
        "gauge",
        "Evaluations by status.",
        by_status(Evaluation, EVALUATION_STATUSES),
    )
    manager = getattr(request.app.state, "manager", None)
    family(
        "layerforge_controller_active_runners",
        "gauge",
        "Campaigns the controller in this process is running now.",
        [({}, float(len(manager.active()) if manager is not None else 0))],
    )
    snapshot = request.app.state.request_metrics.snapshot()
    family(
        "layerforge_http_requests_total",
        "counter",
        "HTTP requests by method, route, status.",
        [
            ({"method": m, "route": r, "status": s}, float(c))
            for (m, r, s), c in sorted(snapshot.items())
        ],
    )
    cache = request.app.state.response_cache
    family(
        "layerforge_response_cache_entries",
        "gauge",
        "Serialised read answers held in memory.",
        [({}, float(len(cache)))],
    )
    family(
        "layerforge_response_cache_bytes",
        "gauge",
        "Size of the serialised read answers held in memory.",
        [({}, float(cache.stored_bytes))],
    )
    family(
        "layerforge_response_cache_served_total",
        "counter",
        "Repeated reads answered from memory before routing (their data unchanged).",
        [({}, float(cache.served_before_routing))],
    )
    return PlainTextResponse(
        "\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8"
    )
