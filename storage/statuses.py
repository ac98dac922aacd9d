"""The statuses a campaign, a candidate and an evaluation can have, and the evaluation kinds.

Each vocabulary is defined once, here, as a :class:`~enum.StrEnum`: its members are the
strings the database stores and the API returns (``CampaignStatus.RUNNING == "running"``),
so code compares and writes members while storage and JSON keep plain strings. The status
columns are plain strings checked against these values, so that adding a status needs no
enum migration (see :mod:`storage.models`).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CAMPAIGN_FINISHED",
    "CAMPAIGN_STATUSES",
    "CANDIDATE_IN_FLIGHT",
    "CANDIDATE_STATUSES",
    "EVALUATION_ENDED",
    "EVALUATION_IN_FLIGHT",
    "EVALUATION_KINDS",
    "EVALUATION_STATUSES",
    "CampaignStatus",
    "CandidateStatus",
    "EvaluationKind",
    "EvaluationStatus",
]


class CampaignStatus(StrEnum):
    """Where a campaign is: waiting for a runner, running, paused, or finished."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class CandidateStatus(StrEnum):
    """What became of a proposed layer."""

    PROPOSED = "proposed"
    RUNNING = "running"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    CANCELLED = "cancelled"
    STOPPED = "stopped"  # successive halving stopped it at a rung (migration 0005)


class EvaluationStatus(StrEnum):
    """Where one evaluation (a job for the workers) is."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    STOPPED = "stopped"  # ended at a rung, its partial result stored (migration 0005)


class EvaluationKind(StrEnum):
    """Why a candidate is evaluated: by the search, or by the transfer stage after it."""

    SEARCH = "search"
    TRANSFER = "transfer"


# The same vocabularies as tuples of plain strings, for CHECK constraints, counts keyed by
# status and messages listing what is allowed.
CAMPAIGN_STATUSES: tuple[str, ...] = tuple(s.value for s in CampaignStatus)
CAMPAIGN_FINISHED: tuple[str, ...] = (
    CampaignStatus.COMPLETED.value,
    CampaignStatus.CANCELLED.value,
    CampaignStatus.FAILED.value,
)
CANDIDATE_STATUSES: tuple[str, ...] = tuple(s.value for s in CandidateStatus)
EVALUATION_STATUSES: tuple[str, ...] = tuple(s.value for s in EvaluationStatus)
EVALUATION_KINDS: tuple[str, ...] = tuple(k.value for k in EvaluationKind)
# Work not finished yet: what a campaign that ends must close (as cancelled or failed).
CANDIDATE_IN_FLIGHT: tuple[str, ...] = (
    CandidateStatus.PROPOSED.value,
    CandidateStatus.RUNNING.value,
)
EVALUATION_IN_FLIGHT: tuple[str, ...] = (
    EvaluationStatus.QUEUED.value,
    EvaluationStatus.RUNNING.value,
)
# How an evaluation that ran can end (a result is stored with one of these).
EVALUATION_ENDED: tuple[str, ...] = (
    EvaluationStatus.COMPLETED.value,
    EvaluationStatus.FAILED.value,
    EvaluationStatus.TIMEOUT.value,
    EvaluationStatus.STOPPED.value,
)
