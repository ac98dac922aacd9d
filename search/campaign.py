"""The campaign loop: ask, store, dispatch, store results, tell; crash-safe and resumable.

Rules this module keeps:

* **Write before acting.** A candidate and its evaluation row are committed before the job
  is submitted; a result is committed before the strategy is told. A crash therefore loses
  at most in-flight work, which resume re-dispatches.
* **Exactly once.** An evaluation is unique per (candidate, kind, seed) and a result is
  stored only on a queued or running evaluation, so a result delivered twice counts once.
* **Owned.** One runner at a time owns a campaign (``owner`` + ``heartbeat_at``). A runner
  takes over a campaign whose owner stopped heart-beating, or whose owner is a dead process
  on this host, and re-queues the evaluations that owner had in flight.
* **Baseline first.** The baseline layer (ReLU or BN-ReLU) is candidate 0, then the seeds,
  then whatever the strategy proposes.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update

from layerforge.grammar import Graph, get_builtin, to_text
from layerforge.search.evaluators import Evaluator, Outcome
from layerforge.search.objectives import (
    Objective,
    campaign_objectives,
    reference_point,
    to_minimize,
    values_from_result,
)
from layerforge.search.pareto import hypervolume, pareto_front
from layerforge.search.spec import CampaignSpec, parse_seed
from layerforge.search.strategies import Member, Proposal, Strategy, create_strategy
from layerforge.storage import ConflictError, get_engine, session_scope
from layerforge.storage import repository as repo
from layerforge.storage.models import Candidate, Evaluation

log = logging.getLogger(__name__)

BASELINES = {"activation": "relu", "normact": "bn_relu"}


def new_owner() -> str:
    """An owner id unique to this runner: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` names a process on this host that no longer runs."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid_text) != os.getpid() and _is_zombie(int(pid_text))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


@dataclass
class Progress:
    """What a progress callback (CLI bar, API events) is told after each batch."""

    campaign_id: int
    status: str
    candidates: int
    budget: int
    counts: dict[str, int]
    funnel: dict[str, int]
    best: dict[str, float]
    hypervolume: float
    in_flight: int
    elapsed_seconds: float
    phase: str = "search"


@dataclass
class _Batch:
    """Rows one batch of outcomes writes, table by table."""

    evaluations: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[int, str] = field(default_factory=dict)
    objectives: dict[int, dict[str, float]] = field(default_factory=dict)
    completed: list[int] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    hypervolume: list[dict[str, float]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class _Front:
    """The non-dominated set on the minimizing scale, kept incrementally."""

    reference: list[float]
    points: list[list[float]] = field(default_factory=list)
    value: float = 0.0

    def add(self, point: list[float]) -> bool:
        if any(math.isnan(v) for v in point):
            return False
        for p in self.points:
            if all(a <= b for a, b in zip(p, point)):
                return False
        self.points = [p for p in self.points if not all(a <= b for a, b in zip(point, p))]
        self.points.append(point)
        self.value = hypervolume(self.points, self.reference)
        return True


class CampaignRunner:
    """Runs one campaign to its end (or until paused, cancelled or stopped)."""

    def __init__(
        self,
        database_url: str,
        campaign_id: int,
        evaluator: Evaluator,
        *,
        owner: str | None = None,
        stale_after_s: float = 30.0,
        lease_seconds: float = 3600.0,
        heartbeat_s: float = 2.0,
        poll_s: float = 0.2,
        control_s: float = 0.25,
        batch_window_s: float = 0.05,
        stop: threading.Event | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        takeover: bool = False,
    ):
        self.url = database_url
        self.engine = get_engine(database_url)
        self.campaign_id = campaign_id
        self.evaluator = evaluator
        self.owner = owner or new_owner()
        self.stale_after_s = stale_after_s
        self.lease_seconds = lease_seconds
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.control_s = control_s
        self.batch_window_s = batch_window_s
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.takeover = takeover
        self.dispatched: dict[str, int] = {}  # job id -> candidate id
        self._last_control = 0.0
        self._status: str | None = None  # last status read by _control
        self._last_heartbeat = 0.0

    # ------------------------------------------------------------------ set-up
    def _claim(self) -> bool:
        """Take ownership; returns False when the campaign is not runnable."""
        with session_scope(self.engine) as s:
            campaign = repo.get_campaign(s, campaign_id=self.campaign_id)
            if campaign.status not in ("queued", "running"):
                return False
            fresh = (
                campaign.heartbeat_at is not None
                and (time.time() - _timestamp(campaign.heartbeat_at)) < self.stale_after_s
            )
            if (
                campaign.owner
                and campaign.owner != self.owner
                and fresh
                and not self.takeover
                and not owner_is_dead(campaign.owner)
            ):
                raise ConflictError(
                    f"campaign {self.campaign_id} is run by {campaign.owner} (heartbeat "
                    f"{time.time() - _timestamp(campaign.heartbeat_at):.0f} s ago)"
                )
            if campaign.status == "queued":
                repo.set_campaign_status(
                    s, campaign_id=self.campaign_id, status="running", expected=["queued"]
                )
            repo.touch_campaign(s, campaign_id=self.campaign_id, owner=self.owner)
            requeued = (
                s.query(Evaluation)
                .filter(
                    Evaluation.campaign_id == self.campaign_id,
                    Evaluation.status == "running",
                )
                .update({"status": "queued", "lease_owner": None, "lease_expires_at": None})
            )
            if requeued:
                repo.add_event(
                    s, campaign_id=self.campaign_id, kind="resumed", payload={"requeued": requeued}
                )
            self.spec = CampaignSpec.model_validate(campaign.spec)
            self.elapsed_before = float(campaign.elapsed_seconds or 0.0)
            self.objectives: list[Objective] = campaign_objectives(self.spec)
            if campaign.reference_point is None:
                repo.set_reference_point(
                    s, campaign_id=self.campaign_id, point=reference_point(self.objectives)
                )
                self.reference = reference_point(self.objectives)
            else:
                self.reference = list(campaign.reference_point)
        return True

    def _rebuild(self) -> None:
        """Rebuild the strategy, the front and the counters from storage."""
        self.space = self.spec.space.build()
        self.strategy: Strategy = create_strategy(
            self.spec.strategy.name,
            self.space,
            self.spec.strategy,
            len(self.objectives),
            self.spec.seed,
        )
        self.front = _Front(self.reference)
        names = [o.name for o in self.objectives]
        with session_scope(self.engine, readonly=True) as s:
            candidates = _all_candidates(s, self.campaign_id)
            ids, table = repo.objective_table(s, campaign_id=self.campaign_id, names=names)
            self.evaluations_done = sum(
                n
                for status, n in repo.count_evaluations(s, campaign_id=self.campaign_id).items()
                if status in ("completed", "failed", "timeout")
            )
        values = dict(zip(ids, to_minimize(self.objectives, table)))
        members = []
        self.seed_indices: set[int] = set()
        self.has_baseline = False
        for c in candidates:
            member = Member(
                id=c.id,
                seq=c.seq,
                graph=Graph.from_dict(c.graph),
                fingerprint=c.fingerprint,
                origin=c.origin,
                status=c.status,
                values=tuple(values[c.id]) if c.id in values else None,
                parent_ids=tuple(c.parent_ids or ()),
                data=dict(c.strategy_data or {}),
            )
            members.append(member)
            if c.origin == "baseline":
                self.has_baseline = True
            if c.origin == "seed":
                self.seed_indices.add(int(c.strategy_data.get("seed_index", -1)))
        self.strategy.rebuild(members)
        with session_scope(self.engine, readonly=True) as s:
            self.counts = repo.count_candidates(s, campaign_id=self.campaign_id)
            self.funnel = {
                stage: int(v["rejected"])
                for stage, v in repo.rejection_funnel(s, campaign_id=self.campaign_id).items()
            }
        for point in values.values():
            self.front.add(list(point))
        self.num_candidates = len(candidates)

    def _initial_proposals(self) -> list[Proposal]:
        """The baseline and the seeds not stored yet, in order."""
        proposals = []
        if not self.has_baseline:
            graph = get_builtin(BASELINES[self.spec.space.kind])
            proposals.append(
                Proposal(graph, "baseline", (), {"builtin": BASELINES[self.spec.space.kind]})
            )
        for index, text in enumerate(self.spec.seeds):
            if index not in self.seed_indices:
                proposals.append(
                    Proposal(
                        parse_seed(text, self.spec.space),
                        "seed",
                        (),
                        {"seed_index": index, "seed_text": text},
                    )
                )
        return proposals

    # ------------------------------------------------------------------ main loop
    def run(self) -> str:
        """Run until the campaign ends, pauses, is cancelled or ``stop`` is set.

        Returns the campaign's status when the runner leaves (``stopped`` if ``stop`` was
        set while it was still running).
        """
        if not self._claim():
            with session_scope(self.engine, readonly=True) as s:
                return repo.get_campaign(s, campaign_id=self.campaign_id).status
        self._rebuild()
        self.started = time.monotonic()
        self._redispatch_unfinished()
        pending_initial = self._initial_proposals()
        try:
            while True:
                status = self._control()
                if self.stop.is_set():
                    return "stopped"
                if status == "cancelled":
                    self._abandon_in_flight("cancelled")
                    return "cancelled"
                searching = (
                    status == "running"
                    and self.num_candidates < self.spec.budget.max_candidates
                    and self.elapsed() < self.spec.budget.max_seconds
                )
                if searching:
                    pending_initial = self._fill(pending_initial)
                if self.evaluator.in_flight() == 0:
                    if status == "paused":
                        return "paused"
                    if not searching or not self._can_ask():
                        return self._finish()
                outcomes = self._collect()
                if outcomes:
                    self._store(outcomes)
        finally:
            self._release()

    def _collect(self) -> list[Outcome]:
        """Outcomes from the evaluator: wait up to ``poll_s`` for the first, then keep
        collecting for ``batch_window_s`` while jobs are still in flight.

        On a cluster results trickle in one at a time (10,000 workers at a minute each: one
        every 6 ms). Storing and refilling for each alone cost the controller two write
        transactions per candidate, about 8 ms of CPU; a 50 ms window stores them in
        batches of several at a few ms of added latency on minute-long evaluations. An
        evaluator that runs its jobs inside ``poll`` (``synchronous``) is never lingered on.
        """
        outcomes = self.evaluator.poll(self.poll_s)
        if (
            not outcomes
            or self.batch_window_s <= 0
            or getattr(self.evaluator, "synchronous", False)
        ):
            return outcomes
        deadline = time.monotonic() + self.batch_window_s
        while self.evaluator.in_flight() and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            outcomes += self.evaluator.poll(left)
        return outcomes

    def _can_ask(self) -> bool:
        return bool(self.strategy.ask(1)) if self.evaluator.in_flight() == 0 else True

    def elapsed(self) -> float:
        """Seconds the campaign has run, over all the runners that ran it."""
        return self.elapsed_before + (time.monotonic() - self.started)

    def _control(self) -> str:
        """Read the requested status (pause/cancel come from the API) and heart-beat."""
        now = time.monotonic()
        if now - self._last_control < self.control_s and self._status is not None:
            return self._status
        self._last_control = now
        with session_scope(self.engine) as s:
            campaign = repo.get_campaign(s, campaign_id=self.campaign_id)
            if campaign.owner not in (None, self.owner) and campaign.status == "running":
                raise ConflictError(
                    f"campaign {self.campaign_id} was taken over by {campaign.owner}"
                )
            status = self._status = campaign.status
            if now - self._last_heartbeat >= self.heartbeat_s:
                self._last_heartbeat = now
                repo.touch_campaign(
                    s,
                    campaign_id=self.campaign_id,
                    owner=self.owner,
                    elapsed_seconds=self.elapsed(),
                )
                repo.renew_leases(
                    s,
                    campaign_id=self.campaign_id,
                    owner=self.owner,
                    lease_seconds=self.lease_seconds,
                )
        return status

    def _fill(self, pending_initial: list[Proposal]) -> list[Proposal]:
        """Ask for and dispatch proposals until ``parallelism`` jobs are in flight."""
        room = min(
            self.spec.parallelism - self.evaluator.in_flight(),
            self.spec.budget.max_candidates - self.num_candidates,
        )
        if room <= 0:
            return pending_initial
        proposals = pending_initial[:room]
        rest = pending_initial[room:]
        if len(proposals) < room:
            proposals += self.strategy.ask(room - len(proposals))
        if proposals:
            self._dispatch(proposals)
        return rest

    def _payload(
        self,
        graph_dict: dict[str, Any],
        kind: str = "search",
        seed: int = 0,
        proxies: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        rejection = worker_rejection_config(self.spec, transfer=kind == "transfer")
        return {
            "graph": graph_dict,
            "proxies": proxies or self.spec.proxies,
            "rejection": rejection,
            "seed": seed,
            "kind": kind,
            "campaign_id": self.campaign_id,
        }

    def _dispatch(self, proposals: list[Proposal]) -> None:
        """Store proposals and their leased evaluations in one transaction, then submit.

        A proposal whose function is already in the campaign (a seed equal to the baseline,
        say) is stored as a duplicate of the first one and reuses its result; it is not
        evaluated again.
        """
        proposals = [p.with_fingerprint() for p in proposals]
        first_in_batch: dict[str, int] = {}
        rows = []
        with session_scope(self.engine) as s:
            originals: list[int | None] = []
            for index, proposal in enumerate(proposals):
                original = None
                if proposal.fingerprint in first_in_batch:
                    original = -1 - first_in_batch[proposal.fingerprint]  # resolved below
                elif proposal.fingerprint in self.strategy.seen:
                    found = repo.find_candidate_by_fingerprint(
                        s, campaign_id=self.campaign_id, fingerprint=proposal.fingerprint
                    )
                    original = found.id if found else None
                first_in_batch.setdefault(proposal.fingerprint, index)
                originals.append(original)
                rows.append(
                    {
                        "graph": proposal.graph.to_dict(),
                        "text": to_text(proposal.graph),
                        "fingerprint": proposal.fingerprint,
                        "origin": proposal.origin,
                        "parent_ids": proposal.parent_ids,
                        "num_nodes": proposal.graph.num_nodes,
                        "strategy_data": proposal.data,
                        "status": "running" if original is None else "duplicate",
                    }
                )
            ids = repo.add_candidates(s, campaign_id=self.campaign_id, rows=rows)
            duplicates = {}
            for index, original in enumerate(originals):
                if original is not None:
                    duplicates[ids[index]] = ids[-1 - original] if original < 0 else original
            if duplicates:
                s.execute(
                    update(Candidate), [{"id": d, "duplicate_of": o} for d, o in duplicates.items()]
                )
            fresh = [cid for cid in ids if cid not in duplicates]
            evaluation_ids = repo.add_running_evaluations(
                s,
                campaign_id=self.campaign_id,
                candidate_ids=fresh,
                owner=self.owner,
                lease_seconds=self.lease_seconds,
            )
            copied = self._copy_known_results(s, duplicates)
        graph_by_id = {cid: row["graph"] for cid, row in zip(ids, rows)}
        for index, (proposal, cid) in enumerate(zip(proposals, ids)):
            member = Member(
                cid,
                0,
                proposal.graph,
                proposal.fingerprint,
                proposal.origin,
                rows[index]["status"],
                copied.get(cid),
                proposal.parent_ids,
                dict(proposal.data),
            )
            self.strategy.observe(member)
            self.counts[member.status] = self.counts.get(member.status, 0) + 1
        self.num_candidates += len(ids)
        for cid, evaluation_id in zip(fresh, evaluation_ids):
            self.dispatched[str(evaluation_id)] = cid
            self.evaluator.submit(str(evaluation_id), self._payload(graph_by_id[cid]))

    def _copy_known_results(self, s, duplicates: dict[int, int]) -> dict[int, tuple[float, ...]]:
        """Give duplicates the objective values their originals already have."""
        copied: dict[int, tuple[float, ...]] = {}
        values = {}
        for duplicate, original in duplicates.items():
            known = repo.get_objective_values(s, candidate_id=original)
            if len(known) == len(self.objectives):
                values[duplicate] = known
                copied[duplicate] = self._minimized(known)
        repo.add_objective_values(s, campaign_id=self.campaign_id, values=values)
        return copied

    def _minimized(self, values: dict[str, float]) -> tuple[float, ...]:
        return tuple(to_minimize(self.objectives, [[values[o.name] for o in self.objectives]])[0])

    def _redispatch_unfinished(self) -> None:
        """Resume: submit again every evaluation that was queued when the last runner left."""
        with session_scope(self.engine) as s:
            jobs = []
            for evaluation in repo.unfinished_evaluations(s, campaign_id=self.campaign_id):
                candidate = repo.get_candidate(s, candidate_id=evaluation.candidate_id)
                repo.lease_evaluation(
                    s,
                    evaluation_id=evaluation.id,
                    owner=self.owner,
                    lease_seconds=self.lease_seconds,
                )
                proxies = (
                    (self.spec.transfer.proxies or None) if evaluation.kind == "transfer" else None
                )
                jobs.append(
                    (
                        str(evaluation.id),
                        self._payload(candidate.graph, evaluation.kind, evaluation.seed, proxies),
                    )
                )
                self.dispatched[str(evaluation.id)] = candidate.id
        for job_id, payload in jobs:
            self.evaluator.submit(job_id, payload)

    def _store(self, outcomes: list[Outcome]) -> None:
        """Store a batch of outcomes in one transaction, then tell the strategy.

        Outcomes of evaluations that already finished (a result delivered twice, a job of a
        deleted campaign) are dropped: the evaluations are locked and checked first.
        """
        tells: list[tuple[int, tuple[float, ...] | None, str | None, str]] = []
        with session_scope(self.engine) as s:
            open_evaluations = repo.lock_unfinished_evaluations(
                s, evaluation_ids=[int(o.job_id) for o in outcomes]
            )
            batch = _Batch()
            for outcome in outcomes:
                self.dispatched.pop(outcome.job_id, None)
                found = open_evaluations.pop(int(outcome.job_id), None)
                if found is None:
                    continue
                candidate_id, kind = found
                told = self._classify(batch, int(outcome.job_id), candidate_id, kind, outcome)
                if told is not None:
                    tells.append(told)
            if batch.completed:
                for original, copies in repo.duplicates_of(
                    s, candidate_ids=list(batch.completed)
                ).items():
                    for duplicate in copies:
                        batch.objectives[duplicate] = batch.objectives[original]
            repo.finish_evaluations(s, rows=batch.evaluations)
            repo.set_candidate_statuses(s, statuses=batch.statuses)
            repo.add_objective_values(s, campaign_id=self.campaign_id, values=batch.objectives)
            repo.add_rejections(s, campaign_id=self.campaign_id, rows=batch.rejections)
            repo.add_hypervolume_points(s, campaign_id=self.campaign_id, rows=batch.hypervolume)
            progress = self._progress()
            repo.add_events(
                s,
                campaign_id=self.campaign_id,
                rows=[*batch.events, ("progress", progress.__dict__)],
            )
        for candidate_id, values, error, status in tells:
            if candidate_id in self.strategy.members:
                self.strategy.tell(candidate_id, values, error=error, status=status)
        if self.on_progress:
            self.on_progress(progress)

    def _classify(
        self, batch: _Batch, evaluation_id: int, candidate_id: int, kind: str, outcome: Outcome
    ):
        """Turn one outcome into the rows to write; returns what to tell the strategy."""
        result = outcome.result or {}
        if kind == "transfer":
            status = {"ok": "completed", "timeout": "timeout"}.get(outcome.status, "failed")
            batch.evaluations.append(
                {
                    "id": evaluation_id,
                    "status": status,
                    "result": result or None,
                    "error": outcome.error,
                }
            )
            return None
        member = self.strategy.members.get(candidate_id)
        text = to_text(member.graph) if member else ""
        if outcome.status != "ok":
            status = "timeout" if outcome.status == "timeout" else "failed"
            error = outcome.error or status
            batch.evaluations.append({"id": evaluation_id, "status": status, "error": error})
            self._finished(batch, candidate_id, "failed", text, reason=error)
            return candidate_id, None, error, "failed"
        batch.evaluations.append({"id": evaluation_id, "status": "completed", "result": result})
        verdict = result.get("status")
        if verdict == "completed":
            num_nodes = member.graph.num_nodes if member else 0
            values = values_from_result(self.objectives, result, num_nodes)
            batch.objectives[candidate_id] = values
            batch.completed.append(candidate_id)
            point = self._minimized(values)
            self.front.add(list(point))
            self._finished(batch, candidate_id, "completed", text, values=values)
            return candidate_id, point, None, "completed"
        if verdict == "rejected":
            stage = str(result.get("stage"))
            reason = str(result.get("reason") or "")
            cost = sum(float(st.get("seconds") or 0.0) for st in result.get("stages") or [])
            batch.rejections.append(
                {
                    "candidate_id": candidate_id,
                    "stage": stage,
                    "reason": reason,
                    "cost_seconds": cost,
                }
            )
            self.funnel[stage] = self.funnel.get(stage, 0) + 1
            self._finished(batch, candidate_id, "rejected", text, stage=stage, reason=reason)
            return candidate_id, None, reason, "rejected"
        reason = str(result.get("reason") or "failed")
        self._finished(batch, candidate_id, "failed", text, reason=reason)
        return candidate_id, None, reason, "failed"

    def _finished(
        self, batch: _Batch, candidate_id: int, status: str, text: str, **extra: Any
    ) -> None:
        """Book-keeping shared by every finished search evaluation."""
        batch.statuses[candidate_id] = status
        self.counts["running"] = max(0, self.counts.get("running", 0) - 1)
        self.counts[status] = self.counts.get(status, 0) + 1
        self.evaluations_done += 1
        batch.hypervolume.append(
            {
                "evaluations": self.evaluations_done,
                "hypervolume": self.front.value,
                "elapsed_seconds": self.elapsed(),
            }
        )
        batch.events.append(
            ("candidate", {"id": candidate_id, "text": text, "status": status, **extra})
        )

    def _progress(self, phase: str = "search") -> Progress:
        best: dict[str, float] = {}
        for index, objective in enumerate(self.objectives):
            column = [p[index] for p in self.front.points]
            if column:
                best[objective.name] = objective.minimized(min(column))
        return Progress(
            self.campaign_id,
            self._status or "running",
            self.num_candidates,
            self.spec.budget.max_candidates,
            dict(self.counts),
            dict(self.funnel),
            best,
            self.front.value,
            self.evaluator.in_flight(),
            self.elapsed(),
            phase,
        )

    # ------------------------------------------------------------------ ending
    def _abandon_in_flight(self, reason: str) -> None:
        with session_scope(self.engine) as s:
            for evaluation in repo.unfinished_evaluations(s, campaign_id=self.campaign_id):
                repo.finish_evaluation(
                    s, evaluation_id=evaluation.id, status="failed", error=reason
                )
                candidate = repo.get_candidate(s, candidate_id=evaluation.candidate_id)
                if candidate.status in ("proposed", "running"):
                    repo.set_candidate_status(s, candidate_id=candidate.id, status="failed")
        self.dispatched.clear()

    def _finish(self) -> str:
        """Run the transfer stage (if configured), then mark the campaign completed."""
        if self.spec.transfer.top_k > 0 and not self.stop.is_set():
            outcome = self._transfer()
            if outcome != "done":
                return outcome
        with session_scope(self.engine) as s:
            try:
                repo.set_campaign_status(
                    s, campaign_id=self.campaign_id, status="completed", expected=["running"]
                )
            except ConflictError:
                return repo.get_campaign(s, campaign_id=self.campaign_id).status
            repo.touch_campaign(
                s, campaign_id=self.campaign_id, owner=self.owner, elapsed_seconds=self.elapsed()
            )
            if self.on_progress:
                self._status = "completed"
                self.on_progress(self._progress())
        return "completed"

    def _transfer(self) -> str:
        """Re-evaluate the top K on held-out proxies with several seeds; returns how it ended."""
        top = self.transfer_candidates()
        with session_scope(self.engine) as s:
            existing = {
                (e.candidate_id, e.seed)
                for e in s.query(Evaluation).filter(
                    Evaluation.campaign_id == self.campaign_id, Evaluation.kind == "transfer"
                )
            }
            jobs = []
            for candidate_id, graph_dict in top:
                for seed in range(self.spec.transfer.seeds):
                    if (candidate_id, seed) in existing:
                        continue
                    evaluation = repo.add_evaluation(
                        s, candidate_id=candidate_id, kind="transfer", seed=seed
                    )
                    repo.lease_evaluation(
                        s,
                        evaluation_id=evaluation.id,
                        owner=self.owner,
                        lease_seconds=self.lease_seconds,
                    )
                    jobs.append(
                        (
                            str(evaluation.id),
                            self._payload(
                                graph_dict, "transfer", seed, self.spec.transfer.proxies or None
                            ),
                        )
                    )
            if jobs:
                repo.add_event(
                    s,
                    campaign_id=self.campaign_id,
                    kind="transfer",
                    payload={"candidates": [c for c, _ in top], "jobs": len(jobs)},
                )
        for job_id, payload in jobs:
            self.evaluator.submit(job_id, payload)
        while self.evaluator.in_flight():
            status = self._control()
            if self.stop.is_set():
                return "stopped"
            if status == "cancelled":
                self._abandon_in_flight("cancelled")
                return "cancelled"
            outcomes = self.evaluator.poll(self.poll_s)
            if outcomes:
                self._store(outcomes)
        return "done"

    def transfer_candidates(self) -> list[tuple[int, dict[str, Any]]]:
        """The top K completed candidates by mean search accuracy (ties: older first)."""
        accuracy = [i for i, o in enumerate(self.objectives) if o.proxy_index is not None]
        scored = []
        for member in self.strategy.members.values():
            if member.values is None or member.status != "completed":
                continue
            mean = -sum(member.values[i] for i in accuracy) / max(len(accuracy), 1)
            scored.append((-mean, member.seq, member.id, member.graph.to_dict()))
        scored.sort()
        return [(cid, graph) for _, _, cid, graph in scored[: self.spec.transfer.top_k]]

    def _release(self) -> None:
        """Give up ownership so that another runner may continue without waiting."""
        try:
            with session_scope(self.engine) as s:
                campaign = repo.get_campaign(s, campaign_id=self.campaign_id)
                if campaign.owner == self.owner:
                    campaign.owner = None
                    campaign.elapsed_seconds = self.elapsed()
        except Exception:
            log.exception("could not release campaign %s", self.campaign_id)


def worker_rejection_config(spec: CampaignSpec, *, transfer: bool = False) -> dict[str, Any]:
    """The workers' rejection config for a campaign: its stages, then the full evaluation.

    Strategies only propose graphs within the campaign's limits, while seeds may exceed
    them; so the worker's ``static`` stage checks the rules every layer must meet
    (depends on x, a known op) with the kind's full op set and generous limits. Transfer
    evaluations skip every stage and train fully.
    """
    if transfer:
        return {"stages": ["full"], "measure_costs": False}
    rejection = spec.rejection
    return {
        "stages": [*rejection.stages, "full"],
        **rejection.model_dump(exclude={"stages"}),  # every threshold, named as the workers name it
        "space": {"ops": "full", "max_nodes": 64, "max_depth": 64},
        "measure_costs": "runtime" in spec.objectives or "params" in spec.objectives,
    }


def _all_candidates(session, campaign_id: int) -> list[Candidate]:
    from sqlalchemy import select

    return list(
        session.scalars(
            select(Candidate).where(Candidate.campaign_id == campaign_id).order_by(Candidate.seq)
        )
    )


def _timestamp(value) -> float:
    import datetime as dt

    if value.tzinfo is None:  # SQLite returns naive datetimes in UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def create_campaign(
    database_url: str, spec: CampaignSpec, *, idempotency_key: str | None = None
) -> int:
    """Store a validated spec as a queued campaign; returns its id."""
    objectives = campaign_objectives(spec)
    with session_scope(get_engine(database_url)) as s:
        if idempotency_key is not None:
            existing = repo.find_campaign_by_idempotency_key(s, key=idempotency_key)
            if existing is not None:
                return existing.id
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
        return campaign.id


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
        duplicates = (
            {
                cid
                for (cid,) in s.query(Candidate.id).filter(
                    Candidate.id.in_(ids), Candidate.status == "duplicate"
                )
            }
            if ids
            else set()
        )
        kept = [(cid, row) for cid, row in zip(ids, table) if cid not in duplicates]
        ids, table = [cid for cid, _ in kept], [row for _, row in kept]
        front = set(pareto_front(to_minimize(objectives, table))) if ids else set()
        texts = (
            dict(s.query(Candidate.id, Candidate.text).filter(Candidate.id.in_(ids)).all())
            if ids
            else {}
        )
        origins = (
            dict(s.query(Candidate.id, Candidate.origin).filter(Candidate.id.in_(ids)).all())
            if ids
            else {}
        )
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
    """Transfer-stage results per candidate: mean and standard deviation of accuracy."""
    import statistics

    rows: dict[int, list[float]] = {}
    with session_scope(get_engine(database_url), readonly=True) as s:
        evaluations = (
            s.query(Evaluation)
            .filter(
                Evaluation.campaign_id == campaign_id,
                Evaluation.kind == "transfer",
                Evaluation.status == "completed",
            )
            .all()
        )
        texts = {}
        for evaluation in evaluations:
            result = evaluation.result or {}
            accs = [
                float(p.get("val_accuracy"))
                for p in result.get("proxies") or []
                if isinstance(p.get("val_accuracy"), (int, float))
            ]
            if accs:
                rows.setdefault(evaluation.candidate_id, []).append(sum(accs) / len(accs))
                texts[evaluation.candidate_id] = evaluation.candidate.text
    ranking: list[dict[str, Any]] = [
        {
            "candidate_id": cid,
            "text": texts[cid],
            "runs": len(v),
            "mean": statistics.fmean(v),
            "std": statistics.stdev(v) if len(v) > 1 else 0.0,
        }
        for cid, v in rows.items()
    ]
    ranking.sort(key=lambda r: (-r["mean"], r["std"]))
    return ranking
