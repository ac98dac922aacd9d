"""The transfer stage: after the search, the best candidates train again on held-out runs.

When a campaign's search ends, :class:`search.campaign.CampaignRunner` re-evaluates its top
``transfer.top_k`` candidates (and the baseline, which the winners are judged against) on
each held-out proxy at each learning-rate factor, with ``transfer.seeds`` seeds; activation
campaigns with ``transfer.controls`` also train the scale controls (2·relu, 3·relu) on the
same runs. This module chooses the candidates, stores their transfer evaluations and
submits the controls; the runner submits the evaluations and waits for them like any other
(:mod:`search.confirm` judges the results).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from layerforge.search import confirm, fidelity
from layerforge.search.evaluators import Evaluator
from layerforge.search.objectives import Objective
from layerforge.search.spec import CampaignSpec, parse_seed, with_gain
from layerforge.search.strategies import Member
from layerforge.storage import CandidateStatus, EvaluationKind, session_scope
from layerforge.storage import repository as repo

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "TransferJob",
    "held_out_runs",
    "queue_transfer",
    "submit_controls",
    "transfer_candidates",
]


class TransferJob(NamedTuple):
    """One stored, leased transfer evaluation the runner is to submit."""

    evaluation_id: int
    graph: dict[str, Any]
    seed: int


def held_out_runs(spec: CampaignSpec) -> list[dict[str, Any]]:
    """The transfer stage's runs: each held-out proxy (default: the search's) at each
    learning-rate factor of the spec (see search/confirm.py)."""
    return confirm.held_out_runs(spec.transfer.proxies or spec.proxies, spec.transfer.lr_factors)


def transfer_candidates(
    spec: CampaignSpec, objectives: list[Objective], members: Iterable[Member]
) -> list[tuple[int, dict[str, Any]]]:
    """The top ``transfer.top_k`` completed candidates among ``members`` by mean search
    accuracy (ties: older first), then the completed baseline when it is not among them."""
    members = list(members)
    accuracy = [i for i, o in enumerate(objectives) if o.proxy_index is not None]
    scored = []
    for member in members:
        if member.values is None or member.status != CandidateStatus.COMPLETED:
            continue
        mean = -sum(member.values[i] for i in accuracy) / max(len(accuracy), 1)
        scored.append((-mean, member.seq, member.id, member.graph.to_dict()))
    scored.sort()
    top = [(cid, graph) for _, _, cid, graph in scored[: spec.transfer.top_k]]
    # the baseline always runs too: winners are judged against it on the same runs
    baseline = next((m for m in members if m.origin == "baseline"), None)
    if baseline is not None and baseline.status == CandidateStatus.COMPLETED:
        if baseline.id not in {cid for cid, _ in top}:
            top.append((baseline.id, baseline.graph.to_dict()))
    return top


def queue_transfer(
    engine: Engine,
    *,
    campaign_id: int,
    spec: CampaignSpec,
    top: list[tuple[int, dict[str, Any]]],
    owner: str,
    lease_seconds: float,
) -> list[TransferJob]:
    """Store and lease, in one transaction, the transfer evaluations of ``top`` (one per
    candidate and seed) that an earlier runner has not stored yet, with a ``transfer``
    event; returns them for the runner to submit. A resumed stage adds only what is missing.
    """
    jobs = []
    with session_scope(engine) as s:
        existing = repo.evaluation_keys(s, campaign_id=campaign_id, kind=EvaluationKind.TRANSFER)
        for candidate_id, graph in top:
            for seed in range(spec.transfer.seeds):
                if (candidate_id, seed) in existing:
                    continue
                evaluation = repo.add_evaluation(
                    s, candidate_id=candidate_id, kind=EvaluationKind.TRANSFER, seed=seed
                )
                repo.lease_evaluation(
                    s, evaluation_id=evaluation.id, owner=owner, lease_seconds=lease_seconds
                )
                jobs.append(TransferJob(evaluation.id, graph, seed))
        if jobs:
            repo.add_event(
                s,
                campaign_id=campaign_id,
                kind="transfer",
                payload={"candidates": [c for c, _ in top], "jobs": len(jobs)},
            )
    return jobs


def submit_controls(
    engine: Engine, evaluator: Evaluator, *, campaign_id: int, spec: CampaignSpec
) -> set[str]:
    """Submit the scale controls (2·relu, 3·relu trained raw) on the held-out runs, each
    seed once per campaign (activation campaigns with ``transfer.controls``: the runs
    already stored as ``transfer_control`` events are not submitted again); returns the
    job ids submitted."""
    pending: set[str] = set()
    if spec.space.kind != "activation" or not spec.transfer.controls:
        return pending
    with session_scope(engine, readonly=True) as s:
        done = {
            (e.payload.get("text"), e.payload.get("seed"))
            for e in repo.list_events(
                s, campaign_id=campaign_id, kind="transfer_control", limit=100_000
            )
        }
    proxies = with_gain(held_out_runs(spec), "raw")
    for index, text in enumerate(confirm.CONTROLS):
        graph = parse_seed(text, spec.space).to_dict()
        for seed in range(spec.transfer.seeds):
            if (text, seed) in done:
                continue
            job_id = f"{confirm.CONTROL_PREFIX}{index}:{seed}"
            pending.add(job_id)
            evaluator.submit(
                job_id,
                {
                    "graph": graph,
                    "proxies": proxies,
                    "rejection": dict(fidelity.PANEL_STAGES),
                    "seed": seed,
                    "kind": "control",
                    "campaign_id": campaign_id,
                },
            )
    return pending
