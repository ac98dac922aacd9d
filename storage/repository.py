"""The storage contract: keyword-only functions taking a session.

Every function here works identically on SQLite and PostgreSQL; ``tests/storage`` runs one
contract suite on both. Rules the callers rely on:

* Functions never commit; :func:`storage.session_scope` does, so a caller groups writes
  into one transaction ("write before you act": a candidate and its evaluation row are
  stored in the same transaction, before dispatch).
* A missing id raises :class:`NotFoundError`; a write that would break a uniqueness rule
  or act on a row in the wrong state raises :class:`ConflictError`.
* An evaluation is unique per (candidate, kind, seed), and :func:`finish_evaluation` only
  finishes a running or queued one, so a result can never be stored twice.
* Objective values keep +inf, -inf and NaN (see :mod:`storage.encoding`); JSON payloads are
  passed through :func:`storage.encoding.json_safe`.
* Listing functions use keyset pagination: they return rows and take the last row's cursor
  back (``after``), so pages stay stable while a campaign grows.
* Every write to a campaign's candidates, evaluations, objective values, rejections or
  reference point raises the campaign's data version in the same transaction, so a reader
  that sees an unchanged :func:`storage.read_data_version` may serve what it derived from
  that data before.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Float,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.orm import Session, defer, joinedload, selectinload

from layerforge.storage.encoding import decode_float, encode_float, json_safe
from layerforge.storage.errors import ConflictError, NotFoundError
from layerforge.storage.models import (
    Campaign,
    Candidate,
    Evaluation,
    Event,
    HypervolumePoint,
    ObjectiveValue,
    Rejection,
    utcnow,
)
from layerforge.storage.statuses import (
    CAMPAIGN_FINISHED,
    CAMPAIGN_STATUSES,
    CANDIDATE_IN_FLIGHT,
    CANDIDATE_STATUSES,
    EVALUATION_ENDED,
    EVALUATION_IN_FLIGHT,
    EVALUATION_KINDS,
    CampaignStatus,
    CandidateStatus,
    EvaluationKind,
    EvaluationStatus,
)

# ---------------------------------------------------------------- campaigns


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (``execute`` is typed as returning a plain Result)."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


def create_campaign(
    session: Session,
    *,
    name: str,
    spec: Mapping[str, Any],
    space_kind: str,
    strategy: str,
    objectives: Sequence[Any],
    seed: int = 0,
    reference_point: Sequence[float] | None = None,
    idempotency_key: str | None = None,
    status: str = CampaignStatus.QUEUED,
) -> Campaign:
    """Store a new campaign; a repeated ``idempotency_key`` raises :class:`ConflictError`."""
    _check_status(status, CAMPAIGN_STATUSES, "campaign")
    if idempotency_key is not None and find_campaign_by_idempotency_key(
        session, key=idempotency_key
    ):
        raise ConflictError(f"a campaign with idempotency key {idempotency_key!r} exists")
    campaign = Campaign(
        name=name,
        spec=json_safe(dict(spec)),
        space_kind=space_kind,
        strategy=strategy,
        objectives=json_safe(list(objectives)),
        seed=seed,
        reference_point=None if reference_point is None else [float(v) for v in reference_point],
        idempotency_key=idempotency_key,
        status=status,
    )
    session.add(campaign)
    session.flush()
    add_event(session, campaign_id=campaign.id, kind="created", payload={"status": status})
    return campaign


def get_campaign(session: Session, *, campaign_id: int) -> Campaign:
    """The campaign with this id, or :class:`NotFoundError`."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"campaign {campaign_id} does not exist")
    return campaign


def find_campaign_by_idempotency_key(session: Session, *, key: str) -> Campaign | None:
    """The campaign created with this idempotency key, if any."""
    return session.scalars(select(Campaign).where(Campaign.idempotency_key == key)).first()


def list_campaigns(
    session: Session,
    *,
    status: str | Sequence[str] | None = None,
    after: int | None = None,
    limit: int = 50,
) -> list[Campaign]:
    """Campaigns, newest first; ``after`` is the id of the last campaign of the previous page."""
    query = select(Campaign).order_by(Campaign.id.desc()).limit(limit)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        query = query.where(Campaign.status.in_(statuses))
    if after is not None:
        query = query.where(Campaign.id < after)
    return list(session.scalars(query))


def set_campaign_status(
    session: Session,
    *,
    campaign_id: int,
    status: str,
    expected: Iterable[str] | None = None,
    error: str | None = None,
) -> Campaign:
    """Move a campaign to ``status``; with ``expected``, only from one of those statuses.

    The change is made by a conditional UPDATE, so two writers racing on the same campaign
    cannot both succeed. Records an event and the start/finish times.
    """
    _check_status(status, CAMPAIGN_STATUSES, "campaign")
    campaign = get_campaign(session, campaign_id=campaign_id)
    previous = campaign.status
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if error is not None:
        values["error"] = error
    if status == CampaignStatus.RUNNING and campaign.started_at is None:
        values["started_at"] = utcnow()
    if status in CAMPAIGN_FINISHED:
        values["finished_at"] = utcnow()
    stmt = update(Campaign).where(Campaign.id == campaign_id)
    if expected is not None:
        allowed = list(expected)
        stmt = stmt.where(Campaign.status.in_(allowed))
    result = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
    if _rowcount(result) == 0:
        raise ConflictError(f"campaign {campaign_id} is {previous!r}; cannot move it to {status!r}")
    session.refresh(campaign)
    if previous != status:
        add_event(
            session,
            campaign_id=campaign_id,
            kind="status",
            payload={"from": previous, "to": status, "error": error},
        )
    return campaign


def touch_campaign(
    session: Session, *, campaign_id: int, owner: str, elapsed_seconds: float | None = None
) -> None:
    """Record that ``owner`` (a controller) is alive and how long the campaign has run."""
    values: dict[str, Any] = {"owner": owner, "heartbeat_at": utcnow()}
    if elapsed_seconds is not None:
        values["elapsed_seconds"] = float(elapsed_seconds)
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(**values))


def set_reference_point(session: Session, *, campaign_id: int, point: Sequence[float]) -> None:
    """Fix the hypervolume reference point; it may be set once and never changes after."""
    campaign = get_campaign(session, campaign_id=campaign_id)
    if campaign.reference_point is not None:
        raise ConflictError(f"campaign {campaign_id} already has a reference point")
    campaign.reference_point = [float(v) for v in point]
    _mark_data_changed(session, campaign_id)


def delete_campaign(session: Session, *, campaign_id: int) -> None:
    """Delete a campaign and, by cascade, everything stored under it."""
    campaign = get_campaign(session, campaign_id=campaign_id)
    session.delete(campaign)
    session.flush()


# ---------------------------------------------------------------- data versions


def _mark_data_changed(session: Session, campaigns: int | Select) -> None:
    """Raise the data version of one campaign, or of every campaign id ``campaigns`` selects."""
    which = (
        Campaign.id.in_(campaigns) if isinstance(campaigns, Select) else Campaign.id == campaigns
    )
    session.execute(
        update(Campaign)
        .where(which)
        .values(data_version=Campaign.data_version + 1)
        .execution_options(synchronize_session=False)
    )


def _campaigns_of_candidates(candidate_ids: Iterable[int]) -> Select:
    return select(Candidate.campaign_id).where(Candidate.id.in_(list(candidate_ids)))


def _campaigns_of_evaluations(evaluation_ids: Iterable[int]) -> Select:
    return select(Evaluation.campaign_id).where(Evaluation.id.in_(list(evaluation_ids)))


# ---------------------------------------------------------------- candidates


def add_candidate(
    session: Session,
    *,
    campaign_id: int,
    graph: Mapping[str, Any],
    text: str,
    fingerprint: str,
    origin: str,
    canonical_key: str | None = None,
    parent_ids: Sequence[int] = (),
    num_nodes: int = 0,
    strategy_data: Mapping[str, Any] | None = None,
    status: str = CandidateStatus.PROPOSED,
    duplicate_of: int | None = None,
) -> Candidate:
    """Store a candidate with the next sequence number of its campaign."""
    _check_status(status, CANDIDATE_STATUSES, "candidate")
    seq = session.scalar(
        select(func.coalesce(func.max(Candidate.seq), -1) + 1).where(
            Candidate.campaign_id == campaign_id
        )
    )
    candidate = Candidate(
        campaign_id=campaign_id,
        seq=int(seq or 0),
        graph=json_safe(dict(graph)),
        text=text,
        fingerprint=fingerprint,
        canonical_key=canonical_key,
        origin=origin,
        parent_ids=[int(p) for p in parent_ids],
        num_nodes=num_nodes,
        strategy_data=json_safe(dict(strategy_data or {})),
        status=status,
        duplicate_of=duplicate_of,
    )
    session.add(candidate)
    session.flush()
    _mark_data_changed(session, campaign_id)
    return candidate


def get_candidate(session: Session, *, candidate_id: int, full: bool = False) -> Candidate:
    """The candidate with this id (``full`` also loads evaluations, objectives, rejection)."""
    # One query: a candidate has a handful of evaluations and objective values at most.
    options = (
        [
            joinedload(Candidate.evaluations),
            joinedload(Candidate.objective_values),
            joinedload(Candidate.rejection),
        ]
        if full
        else []
    )
    candidate = session.get(Candidate, candidate_id, options=options)
    if candidate is None:
        raise NotFoundError(f"candidate {candidate_id} does not exist")
    return candidate


class CandidateRecord(NamedTuple):
    """Everything stored about one candidate, as plain rows (see :func:`read_candidate`).

    ``candidate`` has the candidate table's columns as attributes; ``objectives`` maps each
    objective name to its value (non-finite values decoded); ``evaluations`` are in id order;
    ``rejection`` is None unless the candidate was rejected.
    """

    candidate: Any
    objectives: dict[str, float]
    evaluations: list[Any]
    rejection: Any | None


class _RecordQueries(NamedTuple):
    candidate: Select
    objectives: Select
    evaluations: Select
    rejection: Select


@functools.cache
def _candidate_record_queries() -> _RecordQueries:
    """Built once: constructing a statement costs more than running it on SQLite."""
    candidate_id: Any = bindparam("candidate_id")
    return _RecordQueries(
        select(Candidate.__table__).where(Candidate.id == candidate_id),
        select(ObjectiveValue.name, ObjectiveValue.value, ObjectiveValue.value_kind)
        .where(ObjectiveValue.candidate_id == candidate_id)
        .order_by(ObjectiveValue.name),
        select(Evaluation.__table__)
        .where(Evaluation.candidate_id == candidate_id)
        .order_by(Evaluation.id),
        select(Rejection.__table__).where(Rejection.candidate_id == candidate_id),
    )


def read_candidate(session: Session, *, candidate_id: int) -> CandidateRecord:
    """The candidate with its objective values, evaluations and rejection, or
    :class:`NotFoundError`.

    The same data as :func:`get_candidate` with ``full=True``, read with four plain queries on
    the session's connection instead of ORM entities: the detail endpoint builds one of these
    for every candidate a reader opens, and the ORM's identity map and relationship loading
    took most of that time (figures: docs/measurements.md).
    """
    q = _candidate_record_queries()
    connection = session.connection()
    params = {"candidate_id": candidate_id}
    candidate = connection.execute(q.candidate, params).first()
    if candidate is None:
        raise NotFoundError(f"candidate {candidate_id} does not exist")
    objectives = {
        name: decode_float(value, kind)
        for name, value, kind in connection.execute(q.objectives, params)
    }
    evaluations = connection.execute(q.evaluations, params).all()
    rejection = connection.execute(q.rejection, params).first()
    return CandidateRecord(candidate, objectives, list(evaluations), rejection)


def set_candidate_status(
    session: Session,
    *,
    candidate_id: int,
    status: str,
    duplicate_of: int | None = None,
) -> None:
    """Move a candidate to ``status`` (and link the original for a duplicate)."""
    _check_status(status, CANDIDATE_STATUSES, "candidate")
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if duplicate_of is not None:
        values["duplicate_of"] = duplicate_of
    result = session.execute(update(Candidate).where(Candidate.id == candidate_id).values(**values))
    if _rowcount(result) == 0:
        raise NotFoundError(f"candidate {candidate_id} does not exist")
    _mark_data_changed(session, _campaigns_of_candidates([candidate_id]))


def find_candidate_by_fingerprint(
    session: Session, *, campaign_id: int, fingerprint: str
) -> Candidate | None:
    """The first candidate of the campaign with this functional fingerprint, if any."""
    return session.scalars(
        select(Candidate)
        .where(Candidate.campaign_id == campaign_id, Candidate.fingerprint == fingerprint)
        .order_by(Candidate.id)
        .limit(1)
    ).first()


def campaign_fingerprints(session: Session, *, campaign_id: int) -> set[str]:
    """Every fingerprint already proposed in the campaign (the strategies' novelty check)."""
    return set(
        session.scalars(select(Candidate.fingerprint).where(Candidate.campaign_id == campaign_id))
    )


def list_candidates(
    session: Session,
    *,
    campaign_id: int,
    status: str | Sequence[str] | None = None,
    sort: str | None = None,
    descending: bool = True,
    after: tuple[float, int] | int | None = None,
    limit: int = 50,
    load_objectives: bool = True,
    load_graphs: bool = True,
) -> list[Candidate]:
    """A page of a campaign's candidates (``load_graphs=False`` leaves the large ``graph`` and
    ``strategy_data`` columns unloaded: reading them afterwards queries once per row).

    Without ``sort`` the order is by id (oldest first) and ``after`` is the last id seen.
    With ``sort=NAME`` the order is by that objective (missing and NaN last) then id, and
    ``after`` is ``candidate_sort_key(last_row, NAME, descending)`` of the previous page.
    """
    query = select(Candidate).where(Candidate.campaign_id == campaign_id).limit(limit)
    if load_objectives:
        query = query.options(selectinload(Candidate.objective_values))
    if not load_graphs:
        query = query.options(defer(Candidate.graph), defer(Candidate.strategy_data))
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        query = query.where(Candidate.status.in_(statuses))
    if sort is None:
        query = query.order_by(Candidate.id)
        if after is not None:
            query = query.where(Candidate.id > int(after))  # type: ignore[arg-type]  # unsorted pages: an id cursor
        return list(session.scalars(query))
    objective = (
        select(ObjectiveValue.candidate_id, ObjectiveValue.value, ObjectiveValue.value_kind)
        .where(ObjectiveValue.campaign_id == campaign_id, ObjectiveValue.name == sort)
        .subquery()
    )
    worst = -_SORT_LIMIT if descending else _SORT_LIMIT
    sort_value = case(
        (objective.c.value_kind == "finite", objective.c.value),
        (objective.c.value_kind == "+inf", literal(_SORT_INF, Float)),
        (objective.c.value_kind == "-inf", literal(-_SORT_INF, Float)),
        else_=literal(worst, Float),
    )
    query = query.outerjoin(objective, objective.c.candidate_id == Candidate.id)
    if descending:
        query = query.order_by(sort_value.desc(), Candidate.id)
    else:
        query = query.order_by(sort_value.asc(), Candidate.id)
    if after is not None:
        value, last_id = after  # type: ignore[misc]  # sorted pages: a (value, id) cursor
        if descending:
            query = query.where(
                or_(sort_value < value, and_(sort_value == value, Candidate.id > last_id))
            )
        else:
            query = query.where(
                or_(sort_value > value, and_(sort_value == value, Candidate.id > last_id))
            )
    return list(session.scalars(query))


_SORT_INF = 1e300
_SORT_LIMIT = 1.5e300


def candidate_sort_key(
    candidate: Candidate, sort: str, descending: bool = True
) -> tuple[float, int]:
    """The keyset cursor of ``candidate`` in a listing sorted by objective ``sort``."""
    for row in candidate.objective_values:
        if row.name == sort:
            value = decode_float(row.value, row.value_kind)
            if value != value:  # NaN sorts with the missing ones
                break
            if value in (float("inf"), float("-inf")):
                return (_SORT_INF if value > 0 else -_SORT_INF, candidate.id)
            return (value, candidate.id)
    return (-_SORT_LIMIT if descending else _SORT_LIMIT, candidate.id)


def count_candidates(session: Session, *, campaign_id: int) -> dict[str, int]:
    """Number of candidates of the campaign per status (every status present, zeros too)."""
    counts = dict.fromkeys(CANDIDATE_STATUSES, 0)
    rows = session.execute(
        select(Candidate.status, func.count())
        .where(Candidate.campaign_id == campaign_id)
        .group_by(Candidate.status)
    )
    for status, count in rows:
        counts[status] = int(count)
    return counts


class Ancestor(NamedTuple):
    """One step of a candidate's lineage: what the detail view shows of an ancestor."""

    id: int
    text: str
    origin: str
    status: str


@functools.cache
def _lineage_query() -> Select:
    first_parent = Candidate.parent_ids[0].as_integer()
    chain = (
        select(Candidate.id.label("id"), first_parent.label("parent"), literal(0).label("depth"))
        .where(Candidate.id == bindparam("candidate_id"))
        .cte("chain", recursive=True)
    )
    chain = chain.union_all(
        select(Candidate.id, first_parent, chain.c.depth + 1)
        .join(chain, Candidate.id == chain.c.parent)
        .where(chain.c.depth < bindparam("max_depth"))
    )
    return (
        select(Candidate.id, Candidate.text, Candidate.origin, Candidate.status, chain.c.depth)
        .join(chain, Candidate.id == chain.c.id)
        .order_by(chain.c.depth)
    )


def lineage(session: Session, *, candidate_id: int, max_depth: int = 50) -> list[Ancestor]:
    """The candidate's ancestors, nearest first, following the first parent of each (at most
    ``max_depth``; a chain that loops back stops before the repeat).

    One recursive query walks the chain on either backend, so a deep lineage (an evolved
    candidate of a long campaign has dozens of ancestors) costs one round trip, not one per
    ancestor.
    """
    rows = (
        session.connection()
        .execute(_lineage_query(), {"candidate_id": candidate_id, "max_depth": max_depth})
        .all()
    )
    if not rows or rows[0].depth != 0:
        raise NotFoundError(f"candidate {candidate_id} does not exist")
    ancestors: list[Ancestor] = []
    seen = {candidate_id}
    for row in rows[1:]:
        if row.id in seen:
            break
        seen.add(row.id)
        ancestors.append(Ancestor(row.id, row.text, row.origin, row.status))
    return ancestors


# ---------------------------------------------------------------- evaluations


def add_evaluation(
    session: Session, *, candidate_id: int, kind: str = EvaluationKind.SEARCH, seed: int = 0
) -> Evaluation:
    """Queue an evaluation; a second one for the same (candidate, kind, seed) is a conflict."""
    if kind not in EVALUATION_KINDS:
        raise ValueError(f"evaluation kind {kind!r} is not one of {EVALUATION_KINDS}")
    candidate = get_candidate(session, candidate_id=candidate_id)
    exists = session.scalar(
        select(Evaluation.id).where(
            Evaluation.candidate_id == candidate_id,
            Evaluation.kind == kind,
            Evaluation.seed == seed,
        )
    )
    if exists is not None:
        raise ConflictError(
            f"candidate {candidate_id} already has a {kind} evaluation with seed {seed}"
        )
    evaluation = Evaluation(
        candidate_id=candidate_id, campaign_id=candidate.campaign_id, kind=kind, seed=seed
    )
    session.add(evaluation)
    session.flush()
    _mark_data_changed(session, candidate.campaign_id)
    return evaluation


def lease_evaluation(
    session: Session, *, evaluation_id: int, owner: str, lease_seconds: float
) -> Evaluation:
    """Mark a queued (or lease-expired) evaluation running under ``owner`` until the lease ends."""
    now = utcnow()
    result = session.execute(
        update(Evaluation)
        .where(
            Evaluation.id == evaluation_id,
            or_(
                Evaluation.status == EvaluationStatus.QUEUED,
                and_(
                    Evaluation.status == EvaluationStatus.RUNNING, Evaluation.lease_expires_at < now
                ),
            ),
        )
        .values(
            status=EvaluationStatus.RUNNING,
            lease_owner=owner,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
            started_at=now,
            attempts=Evaluation.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 0:
        raise ConflictError(f"evaluation {evaluation_id} is not queued or its lease is live")
    _mark_data_changed(session, _campaigns_of_evaluations([evaluation_id]))
    evaluation = session.get(Evaluation, evaluation_id)
    assert evaluation is not None
    session.refresh(evaluation)
    return evaluation


def renew_leases(session: Session, *, campaign_id: int, owner: str, lease_seconds: float) -> int:
    """Extend the leases ``owner`` holds in the campaign; returns how many were extended."""
    result = session.execute(
        update(Evaluation)
        .where(
            Evaluation.campaign_id == campaign_id,
            Evaluation.status == EvaluationStatus.RUNNING,
            Evaluation.lease_owner == owner,
        )
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
    )
    return _rowcount(result)


def finish_evaluation(
    session: Session,
    *,
    evaluation_id: int,
    status: str,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> Evaluation:
    """Store an evaluation's outcome exactly once.

    Raises :class:`ConflictError` when the evaluation has already finished, which is how a
    result delivered twice (a retried task, a resumed controller) is kept from counting twice.
    """
    if status not in EVALUATION_ENDED:
        raise ValueError(f"an evaluation finishes as {', '.join(EVALUATION_ENDED)}, not {status!r}")
    updated = session.execute(
        update(Evaluation)
        .where(Evaluation.id == evaluation_id, Evaluation.status.in_(EVALUATION_IN_FLIGHT))
        .values(
            status=status,
            result=None if result is None else json_safe(dict(result)),
            error=error,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(updated) == 0:
        existing = session.get(Evaluation, evaluation_id)
        if existing is None:
            raise NotFoundError(f"evaluation {evaluation_id} does not exist")
        raise ConflictError(f"evaluation {evaluation_id} has already finished ({existing.status})")
    _mark_data_changed(session, _campaigns_of_evaluations([evaluation_id]))
    evaluation = session.get(Evaluation, evaluation_id)
    assert evaluation is not None
    session.refresh(evaluation)
    return evaluation


def unfinished_evaluations(
    session: Session, *, campaign_id: int, kind: str | None = None
) -> list[Evaluation]:
    """Queued and running evaluations of a campaign, oldest first (what resume re-dispatches)."""
    query = (
        select(Evaluation)
        .where(Evaluation.campaign_id == campaign_id, Evaluation.status.in_(EVALUATION_IN_FLIGHT))
        .order_by(Evaluation.id)
    )
    if kind is not None:
        query = query.where(Evaluation.kind == kind)
    return list(session.scalars(query))


def requeue_expired(session: Session, *, campaign_id: int | None = None) -> int:
    """Put running evaluations whose lease has expired back in the queue; returns the count."""
    expired = and_(
        Evaluation.status == EvaluationStatus.RUNNING, Evaluation.lease_expires_at < utcnow()
    )
    if campaign_id is not None:
        expired = and_(expired, Evaluation.campaign_id == campaign_id)
    _mark_data_changed(session, select(Evaluation.campaign_id).where(expired))
    result = session.execute(
        update(Evaluation)
        .where(expired)
        .values(status=EvaluationStatus.QUEUED, lease_owner=None, lease_expires_at=None)
    )
    return _rowcount(result)


def count_evaluations(
    session: Session, *, campaign_id: int, kind: str = EvaluationKind.SEARCH
) -> dict[str, int]:
    """Number of evaluations of the campaign per status."""
    rows = session.execute(
        select(Evaluation.status, func.count())
        .where(Evaluation.campaign_id == campaign_id, Evaluation.kind == kind)
        .group_by(Evaluation.status)
    )
    return {status: int(count) for status, count in rows}


# ---------------------------------------------------------------- objectives


def set_objective_values(
    session: Session, *, candidate_id: int, values: Mapping[str, float]
) -> None:
    """Store (or replace) the candidate's objective values, non-finite ones included."""
    candidate = get_candidate(session, candidate_id=candidate_id)
    session.execute(
        delete(ObjectiveValue).where(
            ObjectiveValue.candidate_id == candidate_id, ObjectiveValue.name.in_(list(values))
        )
    )
    for name, raw in values.items():
        value, kind = encode_float(raw)
        session.add(
            ObjectiveValue(
                candidate_id=candidate_id,
                campaign_id=candidate.campaign_id,
                name=name,
                value=value,
                value_kind=kind,
            )
        )
    session.flush()
    _mark_data_changed(session, candidate.campaign_id)


def get_objective_values(session: Session, *, candidate_id: int) -> dict[str, float]:
    """The candidate's objective values by name."""
    rows = session.scalars(
        select(ObjectiveValue).where(ObjectiveValue.candidate_id == candidate_id)
    )
    return {row.name: decode_float(row.value, row.value_kind) for row in rows}


def objective_table(
    session: Session, *, campaign_id: int, names: Sequence[str]
) -> tuple[list[int], list[list[float]]]:
    """Candidates that have every named objective, and their values in ``names`` order.

    This is what Pareto fronts and hypervolume are computed from.
    """
    rows = session.execute(
        select(
            ObjectiveValue.candidate_id,
            ObjectiveValue.name,
            ObjectiveValue.value,
            ObjectiveValue.value_kind,
        )
        .where(ObjectiveValue.campaign_id == campaign_id, ObjectiveValue.name.in_(list(names)))
        .order_by(ObjectiveValue.candidate_id)
    )
    by_candidate: dict[int, dict[str, float]] = {}
    for candidate_id, name, value, kind in rows:
        by_candidate.setdefault(candidate_id, {})[name] = decode_float(value, kind)
    ids, table = [], []
    for candidate_id, values in by_candidate.items():
        if len(values) == len(names):
            ids.append(candidate_id)
            table.append([values[name] for name in names])
    return ids, table


# ---------------------------------------------------------------- rejections


def record_rejection(
    session: Session, *, candidate_id: int, stage: str, reason: str, cost_seconds: float = 0.0
) -> Rejection:
    """Record why the candidate was rejected, and mark it rejected."""
    candidate = get_candidate(session, candidate_id=candidate_id)
    if candidate.rejection is not None:
        raise ConflictError(f"candidate {candidate_id} was already rejected")
    rejection = Rejection(
        candidate_id=candidate_id,
        campaign_id=candidate.campaign_id,
        stage=stage,
        reason=reason,
        cost_seconds=float(cost_seconds),
    )
    session.add(rejection)
    candidate.status = CandidateStatus.REJECTED
    session.flush()
    _mark_data_changed(session, candidate.campaign_id)
    return rejection


def rejection_funnel(session: Session, *, campaign_id: int) -> dict[str, dict[str, float]]:
    """Per stage: how many candidates it rejected and their total and mean cost in seconds."""
    rows = session.execute(
        select(Rejection.stage, func.count(), func.coalesce(func.sum(Rejection.cost_seconds), 0.0))
        .where(Rejection.campaign_id == campaign_id)
        .group_by(Rejection.stage)
    )
    return {
        stage: {
            "rejected": int(count),
            "cost_seconds": float(cost),
            "mean_cost_seconds": float(cost) / max(int(count), 1),
        }
        for stage, count, cost in rows
    }


# ---------------------------------------------------------------- hypervolume and events


def add_hypervolume_point(
    session: Session,
    *,
    campaign_id: int,
    evaluations: int,
    hypervolume: float,
    elapsed_seconds: float = 0.0,
) -> HypervolumePoint:
    """Append a point to the campaign's hypervolume history."""
    point = HypervolumePoint(
        campaign_id=campaign_id,
        evaluations=evaluations,
        hypervolume=float(hypervolume),
        elapsed_seconds=float(elapsed_seconds),
    )
    session.add(point)
    session.flush()
    return point


def list_hypervolume(session: Session, *, campaign_id: int) -> list[HypervolumePoint]:
    """The campaign's hypervolume history in the order it was recorded."""
    return list(
        session.scalars(
            select(HypervolumePoint)
            .where(HypervolumePoint.campaign_id == campaign_id)
            .order_by(HypervolumePoint.id)
        )
    )


def add_event(
    session: Session, *, campaign_id: int, kind: str, payload: Mapping[str, Any] | None = None
) -> Event:
    """Append a progress event (the server-sent event stream reads these by id)."""
    event = Event(campaign_id=campaign_id, kind=kind, payload=json_safe(dict(payload or {})))
    session.add(event)
    session.flush()
    return event


def list_events(
    session: Session,
    *,
    campaign_id: int,
    after: int = 0,
    limit: int = 200,
    kind: str | None = None,
) -> list[Event]:
    """Events of the campaign with an id above ``after`` (only those of ``kind`` when
    given), oldest first."""
    query = select(Event).where(Event.campaign_id == campaign_id, Event.id > after)
    if kind is not None:
        query = query.where(Event.kind == kind)
    return list(session.scalars(query.order_by(Event.id).limit(limit)))


def latest_event(session: Session, *, campaign_id: int, kind: str) -> Event | None:
    """The campaign's newest event of ``kind`` (None when it has none)."""
    return session.scalars(
        select(Event)
        .where(Event.campaign_id == campaign_id, Event.kind == kind)
        .order_by(Event.id.desc())
        .limit(1)
    ).first()


def find_event_by_key(session: Session, *, kind: str, key: str, scan: int = 200) -> Event | None:
    """The newest event of ``kind`` in any campaign whose payload's ``key`` is ``key``,
    looking through the newest ``scan`` such events (reports worth reusing are recent)."""
    for event in session.scalars(
        select(Event).where(Event.kind == kind).order_by(Event.id.desc()).limit(scan)
    ):
        if isinstance(event.payload, dict) and event.payload.get("key") == key:
            return event
    return None


def _check_status(status: str, allowed: tuple[str, ...], what: str) -> None:
    if status not in allowed:
        raise ValueError(f"{what} status {status!r} is not one of {', '.join(allowed)}")


# ---------------------------------------------------------------- batch writes (the controller's hot path)
#
# The campaign loop stores a whole batch of proposals, and a whole batch of results, per
# transaction. These functions do the same as their one-row twins above with one statement
# per table, so a controller keeps up with thousands of workers.


def next_candidate_seq(session: Session, *, campaign_id: int) -> int:
    """The sequence number the campaign's next candidate gets."""
    return int(
        session.scalar(
            select(func.coalesce(func.max(Candidate.seq), -1) + 1).where(
                Candidate.campaign_id == campaign_id
            )
        )
        or 0
    )


def add_candidates(
    session: Session, *, campaign_id: int, rows: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Insert candidates (the keyword arguments of :func:`add_candidate` per row) in one go.

    Sequence numbers continue the campaign's; returns the new ids in ``rows`` order.
    """
    if not rows:
        return []
    seq = next_candidate_seq(session, campaign_id=campaign_id)
    now = utcnow()
    values = []
    for offset, row in enumerate(rows):
        status = row.get("status", CandidateStatus.PROPOSED)
        _check_status(status, CANDIDATE_STATUSES, "candidate")
        values.append(
            {
                "campaign_id": campaign_id,
                "seq": seq + offset,
                "graph": json_safe(dict(row["graph"])),
                "text": row["text"],
                "fingerprint": row["fingerprint"],
                "origin": row["origin"],
                "canonical_key": row.get("canonical_key"),
                "parent_ids": [int(p) for p in row.get("parent_ids", ())],
                "num_nodes": int(row.get("num_nodes", 0)),
                "strategy_data": json_safe(dict(row.get("strategy_data") or {})),
                "status": status,
                "duplicate_of": row.get("duplicate_of"),
                "created_at": now,
                "updated_at": now,
            }
        )
    result = session.execute(
        insert(Candidate).returning(Candidate.id, sort_by_parameter_order=True), values
    )
    _mark_data_changed(session, campaign_id)
    return [int(row_id) for row_id in result.scalars()]


def add_running_evaluations(
    session: Session,
    *,
    campaign_id: int,
    candidate_ids: Sequence[int],
    owner: str,
    lease_seconds: float,
    kind: str = EvaluationKind.SEARCH,
    seeds: Sequence[int] | None = None,
) -> list[int]:
    """Insert evaluations already leased to ``owner`` (one per candidate); returns their ids.

    The (candidate, kind, seed) uniqueness rule holds here too: a second evaluation of the
    same candidate raises :class:`ConflictError` and the whole batch is rolled back.
    """
    if not candidate_ids:
        return []
    now = utcnow()
    expires = now + dt.timedelta(seconds=lease_seconds)
    seeds = list(seeds) if seeds is not None else [0] * len(candidate_ids)
    values = [
        {
            "candidate_id": cid,
            "campaign_id": campaign_id,
            "kind": kind,
            "seed": seed,
            "status": EvaluationStatus.RUNNING,
            "attempts": 1,
            "lease_owner": owner,
            "lease_expires_at": expires,
            "started_at": now,
        }
        for cid, seed in zip(candidate_ids, seeds)
    ]
    result = session.execute(
        insert(Evaluation).returning(Evaluation.id, sort_by_parameter_order=True), values
    )
    _mark_data_changed(session, campaign_id)
    return [int(row_id) for row_id in result.scalars()]


def lock_unfinished_evaluations(
    session: Session, *, evaluation_ids: Sequence[int]
) -> dict[int, tuple[int, str]]:
    """Of these evaluations, the ones still queued or running: id -> (candidate id, kind).

    The rows are locked until the transaction ends (``FOR UPDATE`` on PostgreSQL; SQLite's
    write transactions hold the database lock), so results finished by
    :func:`finish_evaluations` in the same transaction are stored exactly once.
    """
    if not evaluation_ids:
        return {}
    query = select(Evaluation.id, Evaluation.candidate_id, Evaluation.kind).where(
        Evaluation.id.in_(list(evaluation_ids)), Evaluation.status.in_(EVALUATION_IN_FLIGHT)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return {int(i): (int(c), k) for i, c, k in session.execute(query)}


def finish_evaluations(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store outcomes ``{id, status, result, error}`` of evaluations locked by
    :func:`lock_unfinished_evaluations` in this transaction."""
    if not rows:
        return
    now = utcnow()
    values = []
    for row in rows:
        if row["status"] not in EVALUATION_ENDED:
            raise ValueError(
                "an evaluation finishes as completed, failed, timeout or stopped (at a "
                f"rung), not {row['status']!r}"
            )
        values.append(
            {
                "id": row["id"],
                "status": row["status"],
                "result": None if row.get("result") is None else json_safe(dict(row["result"])),
                "error": row.get("error"),
                "finished_at": now,
                "lease_expires_at": None,
            }
        )
    session.execute(update(Evaluation), values)
    _mark_data_changed(session, _campaigns_of_evaluations(row["id"] for row in rows))


def set_candidate_statuses(session: Session, *, statuses: Mapping[int, str]) -> None:
    """Move many candidates to new statuses in one statement."""
    if not statuses:
        return
    now = utcnow()
    for status in set(statuses.values()):
        _check_status(status, CANDIDATE_STATUSES, "candidate")
    session.execute(
        update(Candidate),
        [{"id": cid, "status": status, "updated_at": now} for cid, status in statuses.items()],
    )
    _mark_data_changed(session, _campaigns_of_candidates(statuses))


def add_objective_values(
    session: Session, *, campaign_id: int, values: Mapping[int, Mapping[str, float]]
) -> None:
    """Insert objective values of candidates that have none yet: {candidate id: {name: value}}."""
    rows = []
    for cid, named in values.items():
        for name, raw in named.items():
            value, kind = encode_float(raw)
            rows.append(
                {
                    "candidate_id": cid,
                    "campaign_id": campaign_id,
                    "name": name,
                    "value": value,
                    "value_kind": kind,
                }
            )
    if rows:
        session.execute(insert(ObjectiveValue), rows)
        _mark_data_changed(session, campaign_id)


def add_rejections(
    session: Session, *, campaign_id: int, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert rejections ``{candidate_id, stage, reason, cost_seconds}`` (statuses are set
    separately with :func:`set_candidate_statuses`)."""
    if rows:
        now = utcnow()
        session.execute(
            insert(Rejection),
            [
                {
                    "campaign_id": campaign_id,
                    "candidate_id": r["candidate_id"],
                    "stage": r["stage"],
                    "reason": r["reason"],
                    "cost_seconds": float(r.get("cost_seconds", 0.0)),
                    "created_at": now,
                }
                for r in rows
            ],
        )
        _mark_data_changed(session, campaign_id)


def add_hypervolume_points(
    session: Session, *, campaign_id: int, rows: Sequence[Mapping[str, float]]
) -> None:
    """Append ``{evaluations, hypervolume, elapsed_seconds}`` points to the history."""
    if rows:
        now = utcnow()
        session.execute(
            insert(HypervolumePoint),
            [
                {
                    "campaign_id": campaign_id,
                    "evaluations": int(r["evaluations"]),
                    "hypervolume": float(r["hypervolume"]),
                    "elapsed_seconds": float(r.get("elapsed_seconds", 0.0)),
                    "created_at": now,
                }
                for r in rows
            ],
        )


def add_events(
    session: Session, *, campaign_id: int, rows: Sequence[tuple[str, Mapping[str, Any]]]
) -> None:
    """Append ``(kind, payload)`` events in order."""
    if rows:
        now = utcnow()
        session.execute(
            insert(Event),
            [
                {
                    "campaign_id": campaign_id,
                    "kind": kind,
                    "payload": json_safe(dict(payload)),
                    "created_at": now,
                }
                for kind, payload in rows
            ],
        )


def duplicates_of(session: Session, *, candidate_ids: Sequence[int]) -> dict[int, list[int]]:
    """Candidates stored as duplicates of these ones: original id -> duplicate ids."""
    found: dict[int, list[int]] = {}
    if candidate_ids:
        rows = session.execute(
            select(Candidate.duplicate_of, Candidate.id).where(
                Candidate.duplicate_of.in_(list(candidate_ids))
            )
        )
        for original, duplicate in rows:
            found.setdefault(int(original or 0), []).append(int(duplicate))
    return found


# ---------------------------------------------------------------- closing in-flight work


class Closed(NamedTuple):
    """How many in-flight rows a close moved to its final status."""

    evaluations: int
    candidates: int


def close_in_flight(
    session: Session, *, campaign_id: int, status: str, reason: str | None = None
) -> Closed:
    """Close every queued or running evaluation and every proposed or running candidate of
    the campaign as ``status`` (``cancelled`` or ``failed``), with ``reason`` on the
    evaluations.

    This is what ending a campaign does to the work it still had in flight, so that no row
    of a finished campaign stays ``running`` (nothing would ever finish it). Candidates that
    already have an outcome keep it, and so do their finished evaluations.
    """
    if status not in (EvaluationStatus.CANCELLED, EvaluationStatus.FAILED):
        raise ValueError(f"in-flight work closes as cancelled or failed, not {status!r}")
    now = utcnow()
    evaluations = session.execute(
        update(Evaluation)
        .where(
            Evaluation.campaign_id == campaign_id,
            Evaluation.status.in_(EVALUATION_IN_FLIGHT),
        )
        .values(status=status, error=reason, finished_at=now, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    candidates = session.execute(
        update(Candidate)
        .where(Candidate.campaign_id == campaign_id, Candidate.status.in_(CANDIDATE_IN_FLIGHT))
        .values(status=status, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    closed = Closed(_rowcount(evaluations), _rowcount(candidates))
    if closed.evaluations or closed.candidates:
        _mark_data_changed(session, campaign_id)
    return closed


def repair_finished_campaigns(session: Session) -> dict[int, Closed]:
    """Close the in-flight work that finished campaigns still hold; returns what was closed
    per campaign.

    Older versions ended a campaign without closing all of its evaluations and candidates
    (a cancel, a failure, a crash at the wrong moment), so some completed, cancelled or
    failed campaigns hold rows that say ``running`` forever. Cancelled campaigns' rows close
    as ``cancelled``, the others' as ``failed``. Each repaired campaign gets a ``repaired``
    event. Safe to run at every start: a clean database is left as it is.
    """
    in_flight_evaluations = select(Evaluation.campaign_id).where(
        Evaluation.status.in_(EVALUATION_IN_FLIGHT)
    )
    in_flight_candidates = select(Candidate.campaign_id).where(
        Candidate.status.in_(CANDIDATE_IN_FLIGHT)
    )
    rows = session.execute(
        select(Campaign.id, Campaign.status)
        .where(
            Campaign.status.in_(CAMPAIGN_FINISHED),
            or_(Campaign.id.in_(in_flight_evaluations), Campaign.id.in_(in_flight_candidates)),
        )
        .order_by(Campaign.id)
    ).all()
    repaired: dict[int, Closed] = {}
    for campaign_id, campaign_status in rows:
        status = (
            EvaluationStatus.CANCELLED
            if campaign_status == CampaignStatus.CANCELLED
            else EvaluationStatus.FAILED
        )
        closed = close_in_flight(
            session,
            campaign_id=campaign_id,
            status=status,
            reason=f"closed at start-up: the campaign was already {campaign_status}",
        )
        repaired[int(campaign_id)] = closed
        add_event(
            session,
            campaign_id=campaign_id,
            kind="repaired",
            payload={"closed_as": status, **closed._asdict()},
        )
    return repaired


# ---------------------------------------------------------------- reads and writes the
# controller and the API used to make with their own queries (nothing outside storage/
# builds a query: tests/test_layering.py checks it)


def campaign_status(session: Session, *, campaign_id: int) -> str | None:
    """The campaign's status, or None when it was deleted (a watcher's cheap read)."""
    return session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))


def campaign_exists(session: Session, *, campaign_id: int) -> bool:
    """Whether the campaign's row is still stored."""
    return campaign_status(session, campaign_id=campaign_id) is not None


def requeue_running(session: Session, *, campaign_id: int) -> int:
    """Put the campaign's running evaluations back in the queue, leases cleared (a runner
    taking a campaign over re-dispatches them); returns how many, and raises the campaign's
    data version when there were any."""
    result = session.execute(
        update(Evaluation)
        .where(Evaluation.campaign_id == campaign_id, Evaluation.status == EvaluationStatus.RUNNING)
        .values(status=EvaluationStatus.QUEUED, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    count = _rowcount(result)
    if count:
        _mark_data_changed(session, campaign_id)
    return count


def latest_evaluation(session: Session, *, candidate_id: int, kind: str) -> Evaluation | None:
    """The candidate's newest evaluation of ``kind`` (None when it has none)."""
    return session.scalars(
        select(Evaluation)
        .where(Evaluation.candidate_id == candidate_id, Evaluation.kind == kind)
        .order_by(Evaluation.id.desc())
        .limit(1)
    ).first()


def set_duplicates(session: Session, *, campaign_id: int, duplicates: Mapping[int, int]) -> None:
    """Record ``duplicate candidate id -> original id`` for candidates of the campaign."""
    if not duplicates:
        return
    session.execute(
        update(Candidate),
        [{"id": int(d), "duplicate_of": int(o)} for d, o in duplicates.items()],
    )
    _mark_data_changed(session, campaign_id)


def evaluation_keys(session: Session, *, campaign_id: int, kind: str) -> set[tuple[int, int]]:
    """``(candidate id, seed)`` of every evaluation of ``kind`` in the campaign."""
    return {
        (int(cid), int(seed))
        for cid, seed in session.execute(
            select(Evaluation.candidate_id, Evaluation.seed).where(
                Evaluation.campaign_id == campaign_id, Evaluation.kind == kind
            )
        )
    }


def completed_evaluations(session: Session, *, campaign_id: int, kind: str) -> list[Evaluation]:
    """The campaign's completed evaluations of ``kind``, with their candidates loaded."""
    return list(
        session.scalars(
            select(Evaluation)
            .options(joinedload(Evaluation.candidate))
            .where(
                Evaluation.campaign_id == campaign_id,
                Evaluation.kind == kind,
                Evaluation.status == EvaluationStatus.COMPLETED,
            )
            .order_by(Evaluation.id)
        )
    )


def evaluation_results(
    session: Session, *, campaign_id: int, kind: str, statuses: Sequence[str]
) -> list[tuple[int, str, dict[str, Any]]]:
    """``(candidate id, status, result)`` of the campaign's evaluations of ``kind`` that
    ended with one of ``statuses``, oldest first (what a rebuilt controller reads back of
    its successive-halving rungs)."""
    rows = session.execute(
        select(Evaluation.candidate_id, Evaluation.status, Evaluation.result)
        .where(
            Evaluation.campaign_id == campaign_id,
            Evaluation.kind == kind,
            Evaluation.status.in_(list(statuses)),
        )
        .order_by(Evaluation.id)
    )
    return [(int(cid), str(status), dict(result or {})) for cid, status, result in rows]


def all_candidates(session: Session, *, campaign_id: int) -> list[Candidate]:
    """Every candidate of the campaign in sequence order (a runner's rebuild)."""
    return list(
        session.scalars(
            select(Candidate).where(Candidate.campaign_id == campaign_id).order_by(Candidate.seq)
        )
    )


def candidate_fields(
    session: Session, *, candidate_ids: Sequence[int]
) -> dict[int, tuple[str, str, str]]:
    """``id -> (status, text, origin)`` of the given candidates."""
    if not candidate_ids:
        return {}
    return {
        int(cid): (status, text, origin)
        for cid, status, text, origin in session.execute(
            select(Candidate.id, Candidate.status, Candidate.text, Candidate.origin).where(
                Candidate.id.in_(list(candidate_ids))
            )
        )
    }


def candidate_totals(session: Session, *, campaign_ids: Sequence[int]) -> dict[int, int]:
    """``campaign id -> number of candidates`` for the given campaigns."""
    if not campaign_ids:
        return {}
    rows = session.execute(
        select(Candidate.campaign_id, func.count())
        .where(Candidate.campaign_id.in_(list(campaign_ids)))
        .group_by(Candidate.campaign_id)
    )
    return {int(cid): int(count) for cid, count in rows}


def objective_extremes(
    session: Session, *, campaign_id: int
) -> dict[str, tuple[float | None, float | None]]:
    """``objective name -> (max, min)`` over the campaign's finite values."""
    rows = session.execute(
        select(ObjectiveValue.name, func.max(ObjectiveValue.value), func.min(ObjectiveValue.value))
        .where(ObjectiveValue.campaign_id == campaign_id, ObjectiveValue.value_kind == "finite")
        .group_by(ObjectiveValue.name)
    )
    return {name: (high, low) for name, high, low in rows}


def latest_hypervolume(session: Session, *, campaign_id: int) -> HypervolumePoint | None:
    """The campaign's newest hypervolume point (None before the first)."""
    return session.scalars(
        select(HypervolumePoint)
        .where(HypervolumePoint.campaign_id == campaign_id)
        .order_by(HypervolumePoint.id.desc())
        .limit(1)
    ).first()


def counts_by_status(session: Session, *, table: str) -> dict[str, int]:
    """Rows per status of ``table`` (``campaign``, ``candidate`` or ``evaluation``) over
    every campaign (the service's metrics)."""
    column = {
        "campaign": Campaign.status,
        "candidate": Candidate.status,
        "evaluation": Evaluation.status,
    }[table]
    return {
        str(status): int(count)
        for status, count in session.execute(select(column, func.count()).group_by(column))
    }
