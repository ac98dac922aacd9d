"""SQLAlchemy 2.x typed ORM models: the whole persistent state of layerforge.

A campaign owns candidates; a candidate owns its evaluations, objective values and its
rejection (if any). Deleting a campaign deletes everything under it (``ON DELETE CASCADE``
in the database and ``cascade="all, delete-orphan"`` in the ORM). Status columns are plain
strings checked against :mod:`storage.statuses` so that adding a status needs no enum migration.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from layerforge.storage.encoding import VALUE_KINDS
from layerforge.storage.statuses import (
    CAMPAIGN_STATUSES,
    CANDIDATE_STATUSES,
    EVALUATION_KINDS,
    EVALUATION_STATUSES,
    CampaignStatus,
    CandidateStatus,
    EvaluationKind,
    EvaluationStatus,
)

# On SQLite an integer primary key is AUTOINCREMENT, so a deleted row's id is never handed
# out again (migration 0003); PostgreSQL sequences never reuse ids anyway.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    """Timezone-aware now, the only clock the models use."""
    return dt.datetime.now(dt.UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    """Declarative base shared by every model (and by Alembic's autogenerate)."""


class Campaign(Base):
    """One search campaign: its spec, its state and the fixed hypervolume reference point."""

    __tablename__ = "campaign"
    __table_args__ = (
        CheckConstraint(_in("status", CAMPAIGN_STATUSES), name="ck_campaign_status"),
        Index("ix_campaign_status_id", "status", "id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.QUEUED.value)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    space_kind: Mapped[str] = mapped_column(String(16))
    strategy: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    objectives: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    reference_point: Mapped[list[float] | None] = mapped_column(JSONType, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    # SHA-256 (hex) of the normalized spec submitted with ``idempotency_key``; deferred: only
    # the idempotency check reads it, so campaign reads do not select it (and work on a
    # database not yet at migration 0004)
    idempotency_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, deferred=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    elapsed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    # Raised by every repository write to the campaign's candidates, evaluations, objective
    # values, rejections or reference point, in the writer's transaction; readers cache what
    # they derive from that data under it (see ``repository.data_version``).
    data_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    candidates: Mapped[list[Candidate]] = relationship(
        back_populates="campaign", cascade="all, delete-orphan", passive_deletes=True
    )


class Candidate(Base):
    """A proposed layer: its graph, where it came from, and what became of it."""

    __tablename__ = "candidate"
    __table_args__ = (
        CheckConstraint(_in("status", CANDIDATE_STATUSES), name="ck_candidate_status"),
        UniqueConstraint("campaign_id", "seq", name="uq_candidate_campaign_seq"),
        Index("ix_candidate_campaign_status", "campaign_id", "status", "id"),
        Index("ix_candidate_campaign_fingerprint", "campaign_id", "fingerprint"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    graph: Mapped[dict[str, Any]] = mapped_column(JSONType)
    text: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    canonical_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    origin: Mapped[str] = mapped_column(String(16))
    parent_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(16), default=CandidateStatus.PROPOSED.value)
    duplicate_of: Mapped[int | None] = mapped_column(
        ForeignKey("candidate.id", ondelete="SET NULL"), nullable=True
    )
    strategy_data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    num_nodes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    campaign: Mapped[Campaign] = relationship(back_populates="candidates")
    evaluations: Mapped[list[Evaluation]] = relationship(
        back_populates="candidate",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Evaluation.id",
    )
    objective_values: Mapped[list[ObjectiveValue]] = relationship(
        back_populates="candidate",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ObjectiveValue.name",
    )
    rejection: Mapped[Rejection | None] = relationship(
        back_populates="candidate",
        cascade="all, delete-orphan",
        passive_deletes=True,
        uselist=False,
    )


class Evaluation(Base):
    """One dispatch of a candidate to a worker; unique per (candidate, kind, seed).

    The uniqueness rule is what guarantees that no evaluation is stored twice, even when a
    crashed controller re-queues work whose lease expired.
    """

    __tablename__ = "evaluation"
    __table_args__ = (
        CheckConstraint(_in("status", EVALUATION_STATUSES), name="ck_evaluation_status"),
        CheckConstraint(_in("kind", EVALUATION_KINDS), name="ck_evaluation_kind"),
        UniqueConstraint("candidate_id", "kind", "seed", name="uq_evaluation_candidate_kind_seed"),
        Index("ix_evaluation_campaign_status", "campaign_id", "status"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default=EvaluationKind.SEARCH.value)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=EvaluationStatus.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    candidate: Mapped[Candidate] = relationship(back_populates="evaluations")


class ObjectiveValue(Base):
    """One objective of one candidate; non-finite values are encoded in ``value_kind``."""

    __tablename__ = "objective_value"
    __table_args__ = (
        CheckConstraint(_in("value_kind", VALUE_KINDS), name="ck_objective_value_kind"),
        Index("ix_objective_campaign_name_value", "campaign_id", "name", "value"),
    )

    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("candidate.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    value_kind: Mapped[str] = mapped_column(String(8), default="finite")

    candidate: Mapped[Candidate] = relationship(back_populates="objective_values")


class Rejection(Base):
    """Why and where the rejection protocol threw a candidate away, and what that cost."""

    __tablename__ = "rejection"
    __table_args__ = (
        Index("ix_rejection_campaign_stage", "campaign_id", "stage"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("candidate.id", ondelete="CASCADE"), unique=True
    )
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    cost_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    candidate: Mapped[Candidate] = relationship(back_populates="rejection")


class HypervolumePoint(Base):
    """The campaign's hypervolume after a number of completed evaluations."""

    __tablename__ = "hypervolume_point"
    __table_args__ = (
        Index("ix_hypervolume_campaign_evals", "campaign_id", "evaluations"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    evaluations: Mapped[int] = mapped_column(Integer)
    hypervolume: Mapped[float] = mapped_column(Float)
    elapsed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Event(Base):
    """An append-only progress event; its id is the cursor of the server-sent event stream."""

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_campaign_id", "campaign_id", "id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
