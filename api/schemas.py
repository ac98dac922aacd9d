"""Pydantic schemas of the HTTP API: what clients send (Create) and what they get (Public).

The body of ``POST /campaigns`` is :class:`search.spec.CampaignSpec` itself (re-exported
here as :data:`CampaignCreate`), so the HTTP API and ``layerforge run`` accept exactly the
same documents. Non-finite numbers (NaN, ±inf) are sent as ``null``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from layerforge.search.spec import CampaignSpec
from layerforge.storage import CampaignStatus, CandidateStatus

CampaignCreate = CampaignSpec


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes that are UTC; say so explicitly."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


Timestamp = Annotated[dt.datetime, AfterValidator(_utc)]

ExportFormat = Literal["pytorch", "numpy", "jax", "latex", "sympy", "json"]


class ObjectivePublic(BaseModel):
    name: str
    maximize: bool


class ProgressPublic(BaseModel):
    candidates: int = Field(description="candidates proposed so far")
    budget: int = Field(description="the campaign's max_candidates")
    fraction: float = Field(description="candidates / budget, in [0, 1]")


class CampaignPublic(BaseModel):
    """A campaign as listed."""

    id: int
    name: str
    status: CampaignStatus
    space_kind: str
    strategy: str
    objectives: list[ObjectivePublic]
    progress: ProgressPublic
    error: str | None = None
    created_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class FunnelStage(BaseModel):
    rejected: int
    cost_seconds: float
    mean_cost_seconds: float


class EstimatePublic(BaseModel):
    """What is left, from the rate so far and the budget (null while unknown)."""

    remaining_candidates: int
    remaining_seconds: float | None = None
    rate_per_second: float | None = None
    limited_by: Literal["candidates", "seconds"] | None = None


class HypervolumeBox(BaseModel):
    """The box the hypervolume is measured in: from the reference point (the worst value
    that still counts, fixed when the campaign starts) to the ideal point (accuracy 1, costs
    0), by objective name on the objectives' own scale."""

    reference: dict[str, float]
    ideal: dict[str, float]
    volume: float


class CampaignDetail(CampaignPublic):
    """A campaign with its progress: counts, funnel, best values, hypervolume, estimate."""

    spec: dict[str, Any]
    waiting: str | None = Field(
        None,
        description="while running: why queued evaluations are not running, e.g. "
        "'waiting for Ray workers: 0 CPUs available ...' (the campaign waits, it does not fail)",
    )
    counts: dict[str, int] = Field(description="candidates per status")
    evaluations: dict[str, int] = Field(description="evaluations per status")
    funnel: dict[str, FunnelStage] = Field(description="rejections per stage")
    best: dict[str, float | None] = Field(description="best value per objective")
    hypervolume: float | None = Field(None, description="latest hypervolume")
    hypervolume_normalized: float | None = Field(
        None, description="latest hypervolume as a fraction of hypervolume_box, in [0, 1]"
    )
    hypervolume_box: HypervolumeBox | None = None
    elapsed_seconds: float
    estimate: EstimatePublic
    fidelity: dict[str, Any] | None = Field(
        None,
        description="the proxy-fidelity report (a panel of built-ins on every proxy: "
        "discrimination ratio per proxy, Kendall tau against the held-out proxies, warnings); "
        "null until the panel has run, or when the spec turns it off",
    )


class CampaignPage(BaseModel):
    items: list[CampaignPublic]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class CandidateSummary(BaseModel):
    id: int
    campaign_id: int
    seq: int
    status: CandidateStatus
    origin: str
    text: str
    num_nodes: int
    parent_ids: list[int]
    objectives: dict[str, float | None]
    created_at: Timestamp


class CandidatePage(BaseModel):
    items: list[CandidateSummary]
    next_cursor: str | None = None


class LineageEntry(BaseModel):
    id: int
    text: str
    origin: str
    status: CandidateStatus


class EvaluationPublic(BaseModel):
    id: int
    kind: str
    seed: int
    status: str
    attempts: int
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    error: str | None = None
    result: dict[str, Any] | None = None


class RejectionPublic(BaseModel):
    stage: str
    reason: str
    cost_seconds: float


class CandidateDetail(CandidateSummary):
    """One candidate with everything known about it."""

    space: str
    graph: dict[str, Any]
    latex: str | None = None
    fingerprint: str
    duplicate_of: int | None = None
    lineage: list[LineageEntry]
    evaluations: list[EvaluationPublic]
    rejection: RejectionPublic | None = None


class CurvePublic(BaseModel):
    """Points to plot: an activation's y and dy/dx, or a norm-act layer's response."""

    kind: Literal["activation", "normact"]
    x: list[float]
    y: list[float | None]
    dy: list[float | None] | None = Field(None, description="derivative (activation only)")
    description: str
    baseline: str | None = Field(None, description="the baseline layer drawn beside it")
    baseline_y: list[float | None] | None = Field(None, description="the baseline at x")
    baseline_dy: list[float | None] | None = Field(
        None, description="the baseline's derivative at x (activation only)"
    )


class ParetoPoint(BaseModel):
    candidate_id: int
    text: str
    origin: str
    values: dict[str, float | None]
    on_front: bool


class ParetoPublic(BaseModel):
    campaign_id: int
    objectives: list[ObjectivePublic]
    reference_point: list[float | None] | None = None
    front: list[ParetoPoint]
    dominated: list[ParetoPoint]


class HypervolumePointPublic(BaseModel):
    evaluations: int
    hypervolume: float | None
    hypervolume_normalized: float | None = Field(
        None, description="hypervolume as a fraction of the campaign's hypervolume_box"
    )
    elapsed_seconds: float
    created_at: Timestamp


class HypervolumeHistory(BaseModel):
    campaign_id: int
    box: HypervolumeBox | None = None
    points: list[HypervolumePointPublic]


class OpPublic(BaseModel):
    name: str
    arity: int
    kinds: list[str]


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: dict[str, Any]


class OptunaTrialPublic(BaseModel):
    """One evaluated candidate as an Optuna trial (see :mod:`search.optuna_export`)."""

    state: Literal["COMPLETE", "PRUNED", "FAIL"]
    values: list[float] | None = Field(None, description="objective values, as measured")
    params: dict[str, Any] = Field(description="text, origin, nodes and op counts")
    user_attrs: dict[str, Any] = Field(description="text, latex, fingerprint, status, ...")
    datetime_start: str | None = None
    datetime_complete: str | None = None


class OptunaStudyPublic(BaseModel):
    """A campaign as a multi-objective Optuna study: what ``layerforge export-optuna``
    writes into an Optuna storage (``?format=sqlite`` downloads it written in SQLite)."""

    campaign_id: int
    study_name: str
    objectives: list[str]
    directions: list[Literal["maximize", "minimize"]]
    distributions: dict[str, Any] = Field(description="Optuna distributions, as JSON")
    text_param: bool = Field(description="whether the text is a parameter (small campaigns)")
    trials: list[OptunaTrialPublic]
