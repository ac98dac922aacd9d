"""Service routes: ops, built-in layers, health and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy.orm import Session

from layerforge.api.deps import SessionDep, SettingsDep
from layerforge.api.errors import DATABASE_FILE_CHANGED, responses
from layerforge.api.schemas import HealthPublic, OpPublic
from layerforge.storage import (
    CAMPAIGN_STATUSES,
    CANDIDATE_STATUSES,
    EVALUATION_STATUSES,
    CampaignStatus,
    DatabaseFileChangedError,
    EvaluationStatus,
    current_revision,
    get_engine,
    head_revision,
    ping,
    verify_database_file,
)
from layerforge.storage import repository as repo

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


@service_router.get(
    "/healthz",
    response_model=HealthPublic,
    responses={
        503: {
            "model": HealthPublic,
            "description": "The SQLite database file was deleted or replaced under the "
            "service (`database.code` is database_file_changed); restart it on a good file",
        }
    },
)
def healthz(settings: SettingsDep) -> Any:
    """Liveness and database reachability, with the schema revision and version.

    503 when the SQLite file the service opened is no longer at its path (deleted or
    replaced): the service cannot write any more, and an orchestrator should restart it."""
    from layerforge.api import layerforge_version

    engine = get_engine(settings.database_url)
    database: dict[str, Any] = {"backend": engine.dialect.name}
    try:
        verify_database_file(engine)
    except DatabaseFileChangedError as err:
        database.update(ok=False, code=DATABASE_FILE_CHANGED, error=str(err), path=err.path)
        body = {"status": "degraded", "version": layerforge_version(), "database": database}
        return JSONResponse(body, status_code=503)
    try:
        ping(engine)
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


class _ServiceCollector:
    """The service's gauges, read when ``/metrics`` is scraped: campaigns, candidates and
    evaluations by status from the database (every controller's work, not only this
    process's), the controller's load (evaluations in flight, what waits for it), this
    process's runners and its response cache."""

    def __init__(self, session: Session, request: Request) -> None:
        self.session = session
        self.request = request

    def _by_status(self, table: str, statuses: tuple[str, ...]) -> dict[str, int]:
        return {
            **dict.fromkeys(statuses, 0),
            **repo.counts_by_status(self.session, table=table),
        }

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The families of one scrape (prometheus_client's collector protocol)."""
        campaigns = self._by_status("campaign", CAMPAIGN_STATUSES)
        candidates = self._by_status("candidate", CANDIDATE_STATUSES)
        evaluations = self._by_status("evaluation", EVALUATION_STATUSES)
        for name, help_text, counts in (
            ("layerforge_campaigns", "Campaigns by status.", campaigns),
            ("layerforge_candidates", "Candidates by status.", candidates),
            ("layerforge_evaluations", "Evaluations by status.", evaluations),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["status"])
            for status, count in counts.items():
                family.add_metric([status], count)
            yield family
        yield GaugeMetricFamily(
            "layerforge_evaluations_in_flight",
            "Evaluations dispatched to a worker and not finished (leased, status running).",
            value=evaluations[EvaluationStatus.RUNNING],
        )
        yield GaugeMetricFamily(
            "layerforge_evaluation_queue_depth",
            "Evaluations stored and waiting to be dispatched (status queued: after a "
            "restart or a lost worker).",
            value=evaluations[EvaluationStatus.QUEUED],
        )
        yield GaugeMetricFamily(
            "layerforge_campaign_queue_depth",
            "Campaigns submitted and waiting for a controller slot (status queued).",
            value=campaigns[CampaignStatus.QUEUED],
        )
        manager = getattr(self.request.app.state, "manager", None)
        yield GaugeMetricFamily(
            "layerforge_controller_active_runners",
            "Campaigns the controller in this process is running now.",
            value=len(manager.active()) if manager is not None else 0,
        )
        cache = self.request.app.state.response_cache
        yield GaugeMetricFamily(
            "layerforge_response_cache_entries",
            "Serialised read answers held in memory.",
            value=len(cache),
        )
        yield GaugeMetricFamily(
            "layerforge_response_cache_bytes",
            "Size of the serialised read answers held in memory.",
            value=cache.stored_bytes,
        )
        yield CounterMetricFamily(
            "layerforge_response_cache_served",
            "Repeated reads answered from memory before routing (their data unchanged).",
            value=cache.served_before_routing,
        )


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
def metrics(request: Request, session: SessionDep) -> Response:
    """Prometheus metrics (``prometheus_client``): HTTP requests and latency histograms per
    route (cache-served answers included), campaigns / candidates / evaluations by status,
    evaluations in flight, queue depths, active runners, the response cache."""
    service = CollectorRegistry(auto_describe=False)
    service.register(_ServiceCollector(session, request))
    body = generate_latest(request.app.state.request_metrics.registry) + generate_latest(service)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
