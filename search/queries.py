"""Campaigns as the API and the notebook facade read and create them: submission (with
idempotency), the Pareto front, and the transfer stage's confirmation.

These functions open their own sessions on ``database_url``; the run loop itself lives in
:mod:`search.campaign`.
"""

from __future__ import annotations

from typing import Any

from layerforge.search import confirm, fidelity
from layerforge.search.objectives import campaign_objectives, reference_point, to_minimize
from layerforge.search.pareto import pareto_front
from layerforge.search.spec import CampaignSpec
from layerforge.storage import (
    CandidateStatus,
    ConflictError,
    EvaluationKind,
    get_engine,
    session_scope,
)
from layerforge.storage import repository as repo

__all__ = [
    "create_campaign",
    "create_or_find_campaign",
    "pareto_of_campaign",
    "spec_hash",
    "transfer_ranking",
]


def create_campaign(
    database_url: str, spec: CampaignSpec, *, idempotency_key: str | None = None
) -> int:
    """Store a validated spec as a queued campaign; returns its id (see
    :func:`create_or_find_campaign` for what an ``idempotency_key`` does)."""
    return create_or_find_campaign(database_url, spec, idempotency_key=idempotency_key)[0]


def spec_hash(spec: CampaignSpec | dict[str, Any]) -> str:
    """SHA-256 (hex) of the normalized spec (defaults filled in, keys sorted): two bodies that
    mean the same campaign hash alike, whatever their key order or omitted defaults. A dict
    is a spec as stored (already normalized)."""
    import hashlib
    import json

    dumped = spec if isinstance(spec, dict) else spec.model_dump(mode="json")
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_or_find_campaign(
    database_url: str, spec: CampaignSpec, *, idempotency_key: str | None = None
) -> tuple[int, bool]:
    """Store a validated spec as a queued campaign; returns ``(id, created)``.

    With an ``idempotency_key`` the database decides: its unique key lets one submission
    create the campaign, which stores the hash of its normalized spec beside the key. Every
    other submission with that key, concurrent or later, gets that campaign (``created``
    False) when its spec hashes alike, and :class:`IdempotencyConflictError` when not, so
    nobody is handed a campaign that someone else submitted with another body.
    """
    from layerforge.storage import IdempotencyConflictError

    objectives = campaign_objectives(spec)
    engine = get_engine(database_url)
    body_hash = spec_hash(spec) if idempotency_key is not None else None

    def stored_for_key(s: Any) -> int | None:
        assert idempotency_key is not None
        existing = repo.find_campaign_by_idempotency_key(s, key=idempotency_key)
        if existing is None:
            return None
        stored_hash = existing.idempotency_hash
        if stored_hash is None:  # stored before migration 0004: compare the spec itself
            stored_hash = spec_hash(dict(existing.spec or {}))
        if stored_hash != body_hash:
            raise IdempotencyConflictError(
                f"Idempotency-Key {idempotency_key!r} was used for campaign {existing.id} "
                "with a different spec",
                key=idempotency_key,
                campaign_id=existing.id,
            )
        return existing.id

    try:
        with session_scope(engine) as s:
            if idempotency_key is not None:
                existing_id = stored_for_key(s)
                if existing_id is not None:
                    return existing_id, False
            campaign = repo.create_campaign(
                s,
                name=spec.name,
                spec=spec.model_dump(mode="json"),
                space_kind=spec.space.kind,
                strategy=spec.strategy.name,
                objectives=[{"name": o.name, "maximize": o.maximize} for o in objectives],
                seed=spec.seed,
                reference_point=reference_point(objectives),
                idempotency_key=idempotency_key,
            )
            campaign.idempotency_hash = body_hash
            return campaign.id, True
    except IdempotencyConflictError:
        raise
    except ConflictError:
        if idempotency_key is None:
            raise
        # another submission with this key committed between our lookup and our insert
        # (PostgreSQL: the unique index made us wait for it); its stored hash decides
        with session_scope(engine, readonly=True) as s:
            existing_id = stored_for_key(s)
        if existing_id is None:
            raise
        return existing_id, False


def pareto_of_campaign(database_url: str, campaign_id: int) -> dict[str, Any]:
    """The campaign's Pareto front and dominated points, with objective values by name."""
    with session_scope(get_engine(database_url), readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=campaign_id)
        spec = CampaignSpec.model_validate(campaign.spec)
        objectives = campaign_objectives(spec)
        names = [o.name for o in objectives]
        ids, table = repo.objective_table(s, campaign_id=campaign_id, names=names)
        # a duplicate (a seed equal to the baseline, say) shares its original's values: the
        # function is shown once, as its original
        fields = repo.candidate_fields(s, candidate_ids=ids)
        duplicates = {
            cid
            for cid, (status, _text, _origin) in fields.items()
            if status == CandidateStatus.DUPLICATE
        }
        kept = [(cid, row) for cid, row in zip(ids, table) if cid not in duplicates]
        ids, table = [cid for cid, _ in kept], [row for _, row in kept]
        front = set(pareto_front(to_minimize(objectives, table))) if ids else set()
        texts = {cid: fields[cid][1] for cid in ids}
        origins = {cid: fields[cid][2] for cid in ids}
        points = [
            {
                "candidate_id": cid,
                "text": texts.get(cid, ""),
                "origin": origins.get(cid, ""),
                "values": dict(zip(names, row)),
                "on_front": index in front,
            }
            for index, (cid, row) in enumerate(zip(ids, table))
        ]
        return {
            "campaign_id": campaign_id,
            "objectives": [{"name": o.name, "maximize": o.maximize} for o in objectives],
            "reference_point": campaign.reference_point,
            "front": [p for p in points if p["on_front"]],
            "dominated": [p for p in points if not p["on_front"]],
        }


def transfer_ranking(database_url: str, campaign_id: int) -> list[dict[str, Any]]:
    """The transfer stage's confirmation (search/confirm.py), best mean first.

    One row per re-evaluated candidate: ``runs`` (seeds), ``mean`` / ``std`` over seeds of
    the mean held-out accuracy, ``proxies`` (per held-out run: its name, mean, SD and values),
    ``beats_baseline`` (True only when more than 2 pooled SDs above the baseline on every
    held-out run, with 3+ seeds; None when there are too few seeds or no baseline),
    ``margins`` and ``reason``; the baseline's own row has ``origin == "baseline"``. Rows of
    the scale controls (2·relu, 3·relu trained raw) follow with ``control: true``.
    """
    import statistics

    with session_scope(get_engine(database_url), readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=campaign_id)
        spec = CampaignSpec.model_validate(campaign.spec)
        held = confirm.held_out_runs(
            spec.transfer.proxies or spec.proxies, spec.transfer.lr_factors
        )
        evaluations = repo.completed_evaluations(
            s, campaign_id=campaign_id, kind=EvaluationKind.TRANSFER
        )
        runs: dict[int, list[list[float | None]]] = {}
        about: dict[int, tuple[str, str]] = {}
        for evaluation in evaluations:
            proxies = (evaluation.result or {}).get("proxies") or []
            runs.setdefault(evaluation.candidate_id, []).append(
                [fidelity.accuracy_of(p) for p in proxies]
            )
            about[evaluation.candidate_id] = (
                evaluation.candidate.text,
                evaluation.candidate.origin,
            )
        controls: dict[str, list[list[float | None]]] = {}
        for event in repo.list_events(
            s, campaign_id=campaign_id, kind="transfer_control", limit=100_000
        ):
            controls.setdefault(str(event.payload.get("text")), []).append(
                list(event.payload.get("accuracies") or [])
            )
    names = [confirm.run_name(p) for p in held]

    def row(per_run: list[list[float | None]]) -> dict[str, Any]:
        # a run that stopped without an accuracy (diverged, rejected, a proxy never reached)
        # scored nothing: it counts as 0, never as a missing seed that would hide it
        scored = [confirm.scored(r, len(held)) for r in per_run]
        stats = confirm.proxy_stats(scored, len(held))
        means = [statistics.fmean(r) for r in scored]
        return {
            "runs": len(per_run),
            "mean": statistics.fmean(means) if means else None,
            "std": statistics.stdev(means) if len(means) > 1 else 0.0,
            "proxies": [{"name": n, **st} for n, st in zip(names, stats, strict=True)],
        }

    baseline_id = next((cid for cid, (_t, origin) in about.items() if origin == "baseline"), None)
    baseline = row(runs[baseline_id]) if baseline_id is not None else None
    ranking: list[dict[str, Any]] = []
    for cid, per_run in runs.items():
        entry = {
            "candidate_id": cid,
            "text": about[cid][0],
            "origin": about[cid][1],
            **row(per_run),
        }
        verdict: dict[str, Any]
        if baseline is None:
            verdict = {"beats_baseline": None, "margins": [], "reason": "no baseline runs"}
        elif cid == baseline_id:
            verdict = {"beats_baseline": None, "margins": [], "reason": "the baseline"}
        else:
            verdict = confirm.judge(entry["proxies"], baseline["proxies"])
        ranking.append({**entry, **verdict})
    ranking.sort(key=lambda r: (-(r["mean"] if r["mean"] is not None else -1.0), r["std"]))
    for text, per_run in controls.items():
        entry = {"candidate_id": None, "text": text, "origin": "control", "control": True}
        entry.update(row(per_run))
        if baseline is not None:
            entry.update(confirm.judge(entry["proxies"], baseline["proxies"]))
        ranking.append(entry)
    return ranking
