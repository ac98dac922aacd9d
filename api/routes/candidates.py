"""Candidate routes: the paged listing, one candidate, its curve, and code export."""

from __future__ import annotations

import functools
import math
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from layerforge.api.cache import CACHED_RESPONSES
from layerforge.api.deps import CachedReadsDep, SessionDep
from layerforge.api.errors import ApiError, responses
from layerforge.api.routes.campaigns import MAX_ID, CampaignId
from layerforge.api.routes.common import cursor_id, decode_cursor, encode_cursor, finite
from layerforge.api.schemas import (
    CandidateDetail,
    CandidatePage,
    CurvePublic,
    ExportFormat,
)
from layerforge.storage import Candidate, CandidateStatus, decode_float
from layerforge.storage import repository as repo

router = APIRouter(tags=["candidates"])

CandidateId = Annotated[int, Path(ge=1, le=MAX_ID, description="candidate id")]

EXTENSIONS = {
    "pytorch": ".py",
    "numpy": ".py",
    "jax": ".py",
    "sympy": ".py",
    "latex": ".tex",
    "json": ".json",
}
MEDIA_TYPES = {
    ".py": "text/x-python; charset=utf-8",
    ".tex": "application/x-tex; charset=utf-8",
    ".json": "application/json",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_filename(stem: str, fmt: str) -> str:
    """A download name made only of ``[A-Za-z0-9_-]`` plus the format's extension.

    No dots, slashes or other separators survive, so the name can never leave the folder it
    is saved in (no ``..``, no absolute path, no hidden file).
    """
    cleaned = _UNSAFE.sub("_", stem).strip("_-")[:100] or "layer"
    return cleaned + EXTENSIONS[fmt]


def _objectives(candidate: Candidate) -> dict[str, float | None]:
    return {
        row.name: finite(decode_float(row.value, row.value_kind))
        for row in candidate.objective_values
    }


def candidate_summary(candidate: Any, objectives: dict[str, float | None]) -> dict[str, Any]:
    """The fields of :class:`api.schemas.CandidateSummary`, from a stored candidate (an ORM
    object or a row) and its objective values."""
    return {
        "id": candidate.id,
        "campaign_id": candidate.campaign_id,
        "seq": candidate.seq,
        "status": candidate.status,
        "origin": candidate.origin,
        "text": candidate.text,
        "num_nodes": candidate.num_nodes,
        "parent_ids": list(candidate.parent_ids or []),
        "objectives": objectives,
        "created_at": candidate.created_at,
    }


def _graph(candidate: Any):
    from layerforge.grammar import Graph

    return Graph.from_dict(candidate.graph)


def candidate_page(
    session: Session,
    campaign_id: int,
    *,
    status: str | None,
    sort: str | None,
    order: str,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """The fields of :class:`api.schemas.CandidatePage`; 400 for a bad cursor, 422 for a sort
    that is not one of the campaign's objectives."""
    campaign = repo.get_campaign(session, campaign_id=campaign_id)
    names = [str(o.get("name")) for o in campaign.objectives or []]
    if sort is not None and sort not in names:
        raise ApiError(
            422,
            f"query.sort: {sort!r} is not an objective of campaign {campaign_id}"
            f" (one of: {', '.join(names)})",
        )
    descending = order == "desc"
    after: Any = None
    if cursor:
        data = decode_cursor(cursor, "candidates")
        if (data.get("sort"), data.get("order"), data.get("status")) != (
            sort,
            order,
            status,
        ):
            raise ApiError(
                400, "the cursor belongs to another sort, order or status filter", "bad_cursor"
            )
        last_id = cursor_id(data)
        if sort is None:
            after = last_id
        else:
            value = data.get("v")
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
            ):
                raise ApiError(
                    400, "the cursor is damaged: its sort value is not a number", "bad_cursor"
                )
            after = (float(value), last_id)
    rows = repo.list_candidates(
        session,
        campaign_id=campaign_id,
        status=status,
        sort=sort,
        descending=descending,
        after=after,
        limit=limit + 1,
        load_graphs=False,
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = None
    if more:
        last = page[-1]
        data = {"k": "candidates", "id": last.id, "sort": sort, "order": order, "status": status}
        if sort is not None:
            data["v"] = repo.candidate_sort_key(last, sort, descending)[0]
        next_cursor = encode_cursor(data)
    return {
        "items": [candidate_summary(c, _objectives(c)) for c in page],
        "next_cursor": next_cursor,
    }


@functools.lru_cache(maxsize=16384)
def _memoised_latex(graph) -> str | None:
    from layerforge.grammar import formula_latex

    return formula_latex(graph)


def _latex(candidate: Any, evaluations: list[Any]) -> str | None:
    """The candidate's LaTeX: as the evaluation workers stored it with their result, else
    computed here (memoised per graph: SymPy takes milliseconds, and a candidate's graph never
    changes while its detail answer is rebuilt after each write to its campaign). None for a
    graph the target cannot express."""
    for evaluation in evaluations:
        result = evaluation.result
        if isinstance(result, dict) and isinstance(result.get("latex"), str):
            return result["latex"]
    try:
        return _memoised_latex(_graph(candidate))
    except Exception:  # noqa: BLE001 - a graph that cannot be read: no LaTeX
        return None


def candidate_detail(session: Session, candidate_id: int) -> dict[str, Any]:
    """The fields of :class:`api.schemas.CandidateDetail`."""
    record = repo.read_candidate(session, candidate_id=candidate_id)
    candidate, rejection = record.candidate, record.rejection
    return {
        **candidate_summary(
            candidate, {name: finite(value) for name, value in record.objectives.items()}
        ),
        "space": str((candidate.graph or {}).get("space", "")),
        "graph": candidate.graph,
        "latex": _latex(candidate, record.evaluations),
        "fingerprint": candidate.fingerprint,
        "duplicate_of": candidate.duplicate_of,
        "lineage": [a._asdict() for a in repo.lineage(session, candidate_id=candidate_id)],
        "evaluations": [
            {
                "id": e.id,
                "kind": e.kind,
                "seed": e.seed,
                "status": e.status,
                "attempts": e.attempts,
                "started_at": e.started_at,
                "finished_at": e.finished_at,
                "error": e.error,
                "result": e.result,
            }
            for e in record.evaluations
        ],
        "rejection": None
        if rejection is None
        else {
            "stage": rejection.stage,
            "reason": rejection.reason,
            "cost_seconds": float(rejection.cost_seconds or 0.0),
        },
    }


@router.get(
    "/campaigns/{campaign_id}/candidates",
    response_model=CandidatePage,
    responses={**responses(400, 404, 422), **CACHED_RESPONSES},
)
def list_candidates(
    campaign_id: CampaignId,
    reads: CachedReadsDep,
    status: Annotated[CandidateStatus | None, Query()] = None,
    sort: Annotated[
        str | None, Query(max_length=200, description="an objective name; default: by id")
    ] = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """A page of the campaign's candidates, by id or by any objective (served from memory
    while the campaign's data is unchanged; ``ETag`` / ``If-None-Match`` give 304)."""
    return reads.respond(
        key=("candidates", campaign_id, status, sort, order, cursor, limit),
        scope=("campaign", campaign_id),
        model=CandidatePage,
        build=lambda session: candidate_page(
            session, campaign_id, status=status, sort=sort, order=order, cursor=cursor, limit=limit
        ),
    )


@router.get(
    "/candidates/{candidate_id}",
    response_model=CandidateDetail,
    responses={**responses(404, 422), **CACHED_RESPONSES},
)
async def get_candidate(candidate_id: CandidateId, reads: CachedReadsDep) -> Response:
    """Graph, text, LaTeX, lineage, evaluations, rejection stage and reason, objective values
    (served from memory while its campaign's data is unchanged)."""
    return await reads.respond_quick(
        key=("candidate", candidate_id),
        scope=("candidate", candidate_id),
        model=CandidateDetail,
        build=lambda session: candidate_detail(session, candidate_id),
    )


#: The layer every campaign of a space is measured against (candidate 0), drawn beside each
#: candidate's curve.
CURVE_BASELINES = {"activation": "relu", "normact": "bn_relu"}


def _activation_values(graph, x):
    import torch

    from layerforge.grammar import compile_graph

    module = compile_graph(graph).double()
    y = module(x)
    (dy,) = torch.autograd.grad(y.sum(), x, allow_unused=True)
    dy = torch.zeros_like(x) if dy is None else dy
    return [finite(v) for v in y.detach().tolist()], [finite(v) for v in dy.tolist()]


def _normact_values(graph, batch, channels: int, order):
    import torch

    from layerforge.grammar import compile_graph

    module = compile_graph(graph, channels).double()
    module.train()
    with torch.no_grad():
        output = module(batch)
    return [finite(v) for v in output[:, 0].reshape(-1)[order].tolist()]


def _curve(graph, points: int) -> dict[str, Any]:
    import torch

    from layerforge.grammar import get_builtin

    baseline_name = CURVE_BASELINES[graph.space]
    baseline = get_builtin(baseline_name)
    if graph.space == "activation":
        x = torch.linspace(-5.0, 5.0, points, dtype=torch.float64, requires_grad=True)
        y, dy = _activation_values(graph, x)
        base_y, base_dy = _activation_values(baseline, x)
        return {
            "kind": "activation",
            "x": x.detach().tolist(),
            "y": y,
            "dy": dy,
            "description": f"f(x) and df/dx on [-5, 5] at initial parameter values, with "
            f"the baseline {baseline_name}",
            "baseline": baseline_name,
            "baseline_y": base_y,
            "baseline_dy": base_dy,
        }
    channels = 4
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(8, channels, 4, 4, generator=generator, dtype=torch.float64) * 2.0
    x = batch[:, 0].reshape(-1)
    order = torch.argsort(x)[:points]
    return {
        "kind": "normact",
        "x": x[order].tolist(),
        "y": _normact_values(graph, batch, channels, order),
        "dy": None,
        "description": "output vs input of channel 0 on a fixed N(0, 4) batch of shape "
        f"(8, 4, 4, 4), training mode, with the baseline {baseline_name}",
        "baseline": baseline_name,
        "baseline_y": _normact_values(baseline, batch, channels, order),
        "baseline_dy": None,
    }


@router.get(
    "/candidates/{candidate_id}/curve", response_model=CurvePublic, responses=responses(404, 422)
)
def get_curve(
    candidate_id: CandidateId,
    session: SessionDep,
    points: Annotated[int, Query(ge=2, le=2000)] = 200,
) -> dict[str, Any]:
    """Points to plot the function and its derivative, or a norm-act layer's response."""
    candidate = repo.get_candidate(session, candidate_id=candidate_id)
    graph = _graph(candidate)
    try:
        return _curve(graph, points)
    except Exception as err:  # noqa: BLE001 - a graph that cannot run is reported, not a 500
        raise ApiError(
            409,
            f"candidate {candidate_id} cannot be evaluated for plotting: "
            f"{type(err).__name__}: {err}",
            "not_plottable",
        ) from None


def _gain(evaluations: list[Any]) -> float | None:
    """The gain constant gamma_f a search evaluation of the candidate recorded (its result's
    ``gain``: a number, or an object with ``gamma``), None when none did."""
    for evaluation in evaluations:
        result = evaluation.result if isinstance(evaluation.result, dict) else {}
        gain = result.get("gain")
        if isinstance(gain, dict):
            gain = gain.get("gamma")
        value = finite(gain)
        if value is not None:
            return value
    return None


def export_provenance(session: Session, candidate_id: int, fmt: str) -> dict[str, Any]:
    """What an exported file says about where it came from (see
    :func:`grammar.export.with_provenance`), with the warning for a candidate that did not
    complete its evaluation."""
    from layerforge.api import layerforge_version
    from layerforge.grammar import export_warning

    record = repo.read_candidate(session, candidate_id=candidate_id)
    candidate, rejection = record.candidate, record.rejection
    campaign = repo.get_campaign(session, campaign_id=candidate.campaign_id)
    detail = None
    if rejection is not None:
        detail = f"at stage {rejection.stage!r}: {rejection.reason}"
    elif candidate.status == CandidateStatus.FAILED:
        errors = [e.error for e in record.evaluations if e.error]
        detail = errors[0] if errors else None
    elif candidate.status == CandidateStatus.DUPLICATE and candidate.duplicate_of is not None:
        detail = f"of candidate {candidate.duplicate_of}"
    return {
        "layerforge": layerforge_version(),
        "format": fmt,
        "campaign": {"id": campaign.id, "name": campaign.name},
        "candidate": {
            "id": candidate.id,
            "text": candidate.text,
            "origin": candidate.origin,
            "status": candidate.status,
        },
        "objectives": {name: finite(value) for name, value in record.objectives.items()},
        "gain": _gain(record.evaluations),
        "warning": export_warning(candidate.status, detail, candidate.id),
    }


@router.get(
    "/candidates/{candidate_id}/export",
    response_class=Response,
    responses={
        **responses(404, 409, 422),
        200: {
            "description": "The layer as code, as a download (Content-Disposition: attachment), "
            "headed by its provenance; `X-Layerforge-Warning` is set when the candidate was "
            "rejected or failed",
            "content": {
                "text/x-python": {"schema": {"type": "string"}},
                "application/x-tex": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
            "headers": {
                "Content-Disposition": {"schema": {"type": "string"}},
                "X-Layerforge-Warning": {"schema": {"type": "string"}},
            },
        },
    },
)
def export_candidate(
    candidate_id: CandidateId,
    session: SessionDep,
    format: Annotated[ExportFormat, Query(description="target language")] = "pytorch",
) -> Response:
    """Download the candidate as a PyTorch module, NumPy/JAX function, LaTeX, SymPy or JSON,
    with a header saying where it came from (version, campaign, candidate, status, objective
    values, gain constant) and a warning line when it was rejected or failed."""
    from layerforge.grammar import GrammarError, export, with_provenance

    candidate = repo.get_candidate(session, candidate_id=candidate_id)
    campaign = repo.get_campaign(session, campaign_id=candidate.campaign_id)
    provenance = export_provenance(session, candidate_id, format)
    graph = _graph(candidate)
    if provenance["gain"] is not None and graph.space == "activation":
        from layerforge.grammar.gain import gain_normalized_graph

        # the layer exactly as it was evaluated: f(x) times the constant 1 / gamma_f
        graph = gain_normalized_graph(graph, provenance["gain"])
    try:
        text = with_provenance(export(graph, format), format, provenance)
    except GrammarError as err:
        raise ApiError(
            409, f"candidate {candidate_id} cannot be exported as {format}: {err}", "not_exportable"
        ) from None
    filename = safe_filename(f"{campaign.name}_candidate_{candidate.id}", format)
    extension = EXTENSIONS[format]
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if provenance["warning"]:
        # header values are latin-1: the warning's text is the server's, so ASCII-safe
        headers["X-Layerforge-Warning"] = provenance["warning"].encode("ascii", "replace").decode()
    return Response(text, media_type=MEDIA_TYPES[extension], headers=headers)
