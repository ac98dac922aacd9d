"""The FastAPI application: routes under /api/v1, the dashboard at /, /healthz and /metrics.

``create_app(settings)`` wires everything; the lifespan upgrades the database, starts the
campaign controller (when ``settings.run_controller``) and, for ``layerforge serve --demo``,
submits a small demo campaign when the database holds none.
"""

from __future__ import annotations

import copy
import functools
import gc
import logging
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from layerforge.api import API_PREFIX, errors, layerforge_version
from layerforge.api.cache import CachedAnswers, ResponseCache
from layerforge.api.deps import reject_nul_text, require_token
from layerforge.api.middleware import BodyLimitMiddleware, MetricsMiddleware, RequestMetrics
from layerforge.api.settings import Settings, get_settings
from layerforge.storage import get_engine, session_scope, upgrade_database
from layerforge.storage import repository as repo

log = logging.getLogger(__name__)

# Sized for a newcomer to watch the front grow: 2-4 minutes on a 2-core CPU (two evaluator
# actors of one thread each). Measured on a quiet machine on 2026-12-07, from start to the
# end of the transfer stage: 200 candidates 82 s, 400 161 s, 500 197 s (about 0.33 s per
# candidate, most of them rejected after their 30-step quality check, plus about 30 s for
# start-up and the transfer stage). The demo had 200 candidates until then, sized when
# mnist1d's generation was slower. The seeds leave out relu: it is the baseline.
# The transfer stage then re-trains the top 3, the baseline and the scale controls on a
# deeper MLP (3x128, 600 steps) with 3 seeds (18 runs of about 0.7 CPU-seconds), and the
# fidelity panel runs there too (rank agreement with the search proxy): the shallow search
# proxy rates some functions far above ReLU (asinh(x) - x: 80.8% against 70.3%) that
# diverge on deeper networks, and the dashboard's "Confirmed on held-out runs" table says
# which winners held. Since the depth stage (a 6x128 MLP trained 100 steps, about 0.3 s for
# each candidate that passes the quality check) the demo takes an estimated 20 s longer,
# about 180 s on the machine above (measured: 406 s on a machine 2.5x slower, 2026-12-07).
DEMO_CANDIDATES = 400
DEMO_SPEC: dict[str, Any] = {
    "name": "demo-swish",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 6},
    "seeds": ["x * sigmoid(x)", "max(x, tanh(x))"],
    "strategy": {"name": "evolution", "population": 16, "tournament": 4},
    "proxies": [{"arch": "mlp", "dataset": "mnist1d", "steps": 1000}],
    "objectives": ["accuracy", "nodes"],
    "rejection": {"quality_steps": 30},
    "budget": {"max_candidates": DEMO_CANDIDATES, "max_seconds": 1800},
    "transfer": {
        "top_k": 3,
        "seeds": 3,
        "lr_factors": [1.0],
        "proxies": [{"arch": "mlp", "dataset": "mnist1d", "steps": 600, "scale": 0.25}],
    },
    "parallelism": 2,
    "seed": 0,
}


def make_evaluator_factory(settings: Settings):
    """The evaluator the controller gives each campaign, from ``settings.evaluator``."""
    from layerforge.search.evaluators import LocalEvaluator, RayEvaluator, SimulatedEvaluator

    if settings.evaluator == "simulated":
        return functools.partial(SimulatedEvaluator, seconds=settings.simulated_seconds)
    if settings.evaluator == "local":
        return LocalEvaluator
    return lambda: RayEvaluator(
        num_actors=settings.workers,
        num_cpus=settings.worker_cpus,
        num_gpus=settings.worker_gpus,
        task_timeout_s=settings.task_timeout_s,
        ray_address=settings.ray_address,
    )


def connect_evaluator_backend(settings: Settings) -> None:
    """Connect the process to Ray once, at start-up, when campaigns are evaluated on Ray.

    The connection is held by :mod:`layerforge.workers.ray_session`'s owner thread for the
    life of the process and shared by every campaign; a campaign's own thread never starts
    Ray (Ray's processes die with the thread that started them).
    """
    if settings.evaluator != "ray":
        return
    from layerforge.workers.pool import ray_connect

    ray_connect(settings.ray_address)


def mlflow_observer(settings: Settings):
    """The MLflow mirror of the campaigns this process runs, when
    ``LAYERFORGE_MLFLOW_TRACKING_URI`` is set (see :mod:`layerforge.integrations.mlflow`);
    None otherwise. Its ``on_progress`` goes to each campaign runner, ``close`` at shutdown."""
    if not settings.mlflow_tracking_uri:
        return None
    from layerforge.integrations.mlflow import MlflowLogger

    return MlflowLogger(settings.database_url, settings.mlflow_tracking_uri)


def disconnect_evaluator_backend() -> None:
    """Shut down the Ray connection made by :func:`connect_evaluator_backend` (if any)."""
    from layerforge.workers import ray_session

    ray_session.shutdown()


#: The bounds of ``layerforge serve --demo --demo-candidates N``: at least a population's
#: worth (16) of candidates, at most what the demo's time budget can train.
DEMO_CANDIDATES_RANGE = (16, 1000)


def demo_spec(candidates: int | None = None) -> dict[str, Any]:
    """The demo campaign's spec: :data:`DEMO_SPEC`, with ``candidates`` proposals instead of
    its :data:`DEMO_CANDIDATES` when given (a shorter or longer demo: the same search, proxies
    and transfer check)."""
    spec = copy.deepcopy(DEMO_SPEC)
    if candidates is not None:
        low, high = DEMO_CANDIDATES_RANGE
        if not low <= candidates <= high:
            raise ValueError(f"must be between {low} and {high}, not {candidates}")
        spec["budget"]["max_candidates"] = candidates
    return spec


def submit_demo_campaign(database_url: str, candidates: int | None = None) -> int | None:
    """Queue the demo campaign (``candidates`` proposals, default :data:`DEMO_CANDIDATES`)
    unless a campaign exists; returns its id (or None)."""
    from layerforge.search.queries import create_campaign
    from layerforge.search.spec import validate_spec

    with session_scope(get_engine(database_url), readonly=True) as s:
        if repo.list_campaigns(s, limit=1):
            return None
    spec = validate_spec(demo_spec(candidates))
    return create_campaign(database_url, spec, idempotency_key="demo")


def install_openapi(app: FastAPI) -> None:
    """Document the bearer token on every mutating operation (optional: only a server with
    LAYERFORGE_API_TOKEN requires it) together with its 401 answer, and the links from the
    answers that give an id to the operations that take it (api/openapi_links.py)."""
    from fastapi.openapi.utils import get_openapi

    from layerforge.api.deps import MUTATING_METHODS
    from layerforge.api.errors import ErrorResponse
    from layerforge.api.openapi_links import add_links

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "LAYERFORGE_API_TOKEN; required only when the server sets one",
        }
        schemas = components.setdefault("schemas", {})
        if "ErrorResponse" not in schemas:
            schemas.update(
                ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}").pop(
                    "$defs", {}
                )
            )
            schemas["ErrorResponse"] = ErrorResponse.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                if method.upper() in MUTATING_METHODS:
                    operation["security"] = [{"bearerAuth": []}, {}]
                    operation.setdefault("responses", {}).setdefault(
                        "401",
                        {
                            "description": "Missing or wrong bearer token",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                                }
                            },
                        },
                    )
        app.openapi_schema = add_links(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to replace the OpenAPI document


class LayerforgeAPI(FastAPI):
    """The FastAPI application, which first offers every request to its
    :class:`api.cache.CachedAnswers`: a dashboard's repeated read of unchanged data is sent from
    memory before the middleware stack and the router run at all."""

    cached_answers: CachedAnswers | None = None

    async def __call__(self, scope, receive, send) -> None:
        answers = self.cached_answers
        if answers is not None and scope["type"] == "http" and await answers.serve(scope, send):
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; on start it upgrades the database to the newest schema."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await anyio.to_thread.run_sync(upgrade_database, settings.database_url)
        manager = None
        observer = None
        if settings.run_controller:
            from layerforge.search.manager import ControllerManager

            await anyio.to_thread.run_sync(connect_evaluator_backend, settings)
            observer = mlflow_observer(settings)
            manager = ControllerManager(
                settings.database_url,
                make_evaluator_factory(settings),
                max_concurrent=settings.max_campaigns,
                runner_options={"on_progress": observer.on_progress} if observer else None,
            )
            manager.start()
        app.state.manager = manager
        if getattr(app.state, "demo", False):
            demo_id = await anyio.to_thread.run_sync(
                submit_demo_campaign, settings.database_url, app.state.demo_candidates
            )
            if demo_id is not None:
                log.info(
                    "demo campaign %s submitted; open http://%s:%s/",
                    demo_id,
                    settings.host,
                    settings.port,
                )
                if manager is not None:
                    manager.wake()
        # Start-up's objects (modules, routes, schemas: most of the heap) leave the cyclic
        # collector's view, so that its full collections while serving scan what serving
        # made; they took 75-150 ms each here, pauses every reader felt.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if isinstance(app, LayerforgeAPI) and app.cached_answers is not None:
                app.cached_answers.close()
            app.state.manager = None
            if manager is not None:
                await anyio.to_thread.run_sync(manager.stop)
            if observer is not None:
                await anyio.to_thread.run_sync(observer.close)
            await anyio.to_thread.run_sync(disconnect_evaluator_backend)

    app = LayerforgeAPI(
        title="layerforge",
        version=layerforge_version(),
        description="Discover activation functions and normalization-activation layers by "
        "evolution. Mutating calls need `Authorization: Bearer <token>` when the "
        "server sets LAYERFORGE_API_TOKEN.",
        lifespan=lifespan,
        # /docs and /redoc are the dashboard router's, with assets served from here
        docs_url=None,
        redoc_url=None,
        # Every route of the app passes the token check; it only acts on mutating methods,
        # so a route added later cannot forget it.
        dependencies=[Depends(require_token), Depends(reject_nul_text)],
    )
    app.state.settings = settings
    app.state.manager = None
    app.state.demo = False
    app.state.demo_candidates = None
    app.state.request_metrics = RequestMetrics()
    app.state.response_cache = ResponseCache()
    app.cached_answers = CachedAnswers(
        app.state.response_cache, settings.database_url, count=app.state.request_metrics.add
    )
    errors.install(app)

    from layerforge.api.routes import campaigns, candidates, dashboard, events, figures, meta

    for module in (campaigns, events, candidates, figures):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(meta.router, prefix=API_PREFIX)
    app.include_router(meta.service_router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")

    install_openapi(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.request_metrics, prefixes=(API_PREFIX,))
    return app
