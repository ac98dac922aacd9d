"""The campaign loop: ask, store, dispatch, store results, tell; crash-safe and resumable.

Beside it: :mod:`search.run_state` (what a run knows and counts, rebuilt from storage),
:mod:`search.transfer` (the transfer stage after the search), :mod:`search.ownership`
(owner ids, dead owners), :mod:`search.queries` (creating campaigns, the Pareto front and
the transfer ranking the API reads), :mod:`search.fidelity` (the proxy-fidelity panel) and
:mod:`search.confirm` (judging the transfer stage's winners against the baseline).

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
* **No loose ends.** A cancelled campaign closes every in-flight evaluation and candidate as
  ``cancelled``. A watcher thread beside the loop notices a cancel (or the campaign's
  deletion) within ``watch_s`` even while the loop is blocked in a long training step or a
  long ask, and interrupts both: the evaluator's jobs are cancelled and the strategy stops
  proposing. Proposals are asked and stored at most :data:`ASK_BATCH` at a time.
* **Promotion.** With ``promotion.rungs`` in the spec, a search job stops at its rung and
  is held (:mod:`search.promotion`) until the rung's decision: continued from its
  checkpoint, or stored as ``stopped``. Its evaluation stays running (and leased) while it
  is held, so a cancel closes it like any in-flight work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from layerforge.grammar import Graph, get_builtin, to_text
from layerforge.search import confirm, fidelity
from layerforge.search.evaluators import Evaluator, Outcome
from layerforge.search.objectives import (
    Objective,
    campaign_objectives,
    reference_point,
    to_minimize,
    values_from_result,
)
from layerforge.search.ownership import new_owner, owner_is_dead, timestamp
from layerforge.search.promotion import Held, Ladder
from layerforge.search.run_state import Claim, Front, RunState
from layerforge.search.spec import CampaignSpec, parse_seed, with_gain
from layerforge.search.strategies import Member, Proposal, create_strategy
from layerforge.search.transfer import (
    held_out_runs,
    queue_transfer,
    submit_controls,
    transfer_candidates,
)
from layerforge.storage import (
    EVALUATION_ENDED,
    CampaignStatus,
    CandidateStatus,
    ConflictError,
    EvaluationKind,
    EvaluationStatus,
    NotFoundError,
    get_engine,
    session_scope,
)
from layerforge.storage import repository as repo
from layerforge.workers.jobs import Delivery, EvaluationJob, Verdict
from layerforge.workers.rejection import Stage

log = logging.getLogger(__name__)

BASELINES = {"activation": "relu", "normact": "bn_relu"}

# Proposals asked of the strategy, and stored, per call: a campaign with a parallelism of
# 100,000 fills its room in batches, and between two batches a cancel or stop is noticed.
ASK_BATCH = 256


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
    waiting: str | None = None  # why queued work is not running (no Ray worker can take it)


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


class CampaignRunner:
    """Runs one campaign to its end (or until paused, cancelled or stopped).

    The runner holds its configuration and, once it has claimed the campaign, one
    :class:`~search.run_state.RunState` (:attr:`state`) rebuilt from storage; the halt
    signals (:meth:`halt`) are the only other things it keeps, since other threads set
    them before and while it runs.
    """

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
        watch_s: float = 0.5,
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
        self.watch_s = watch_s
        self._state: RunState | None = None  # built by _rebuild once the campaign is claimed
        # Set once the runner must leave at the next chance (cancelled, deleted, stopped);
        # the strategy sees it as its interrupt and stops proposing.
        self.halted = threading.Event()
        self.halt_reason: str | None = None
        self._watcher_done = threading.Event()

    # ------------------------------------------------------------------ interrupting
    def halt(self, reason: str) -> None:
        """Make the runner leave as soon as it can; callable from any thread.

        ``reason`` is ``cancelled`` (the campaign was cancelled: the evaluator's jobs are
        cancelled now, and the loop closes the in-flight rows), ``deleted`` (the campaign
        is gone: jobs cancelled, the loop leaves without writing) or ``stopped`` (the
        service stops: jobs keep running until the loop leaves, the campaign resumes later).
        """
        if self.halt_reason in ("cancelled", "deleted") and reason == "stopped":
            return
        self.halt_reason = reason
        self.halted.set()
        if reason in ("cancelled", "deleted"):
            try:
                self.evaluator.cancel()
            except Exception:
                log.exception("campaign %s: cancelling the evaluator failed", self.campaign_id)

    def _watch(self) -> None:
        """Beside the loop: every ``watch_s``, read the campaign's status and halt the
        runner when it was cancelled or deleted (by any process) or ``stop`` is set."""
        while not self._watcher_done.wait(self.watch_s):
            if self.stop.is_set():
                self.halt("stopped")
            try:
                with session_scope(self.engine, readonly=True) as s:
                    status = repo.campaign_status(s, campaign_id=self.campaign_id)
            except Exception as err:  # noqa: BLE001 - the loop meets the same error and handles it
                log.debug(
                    "campaign %s: watcher could not read the status: %s", self.campaign_id, err
                )
                continue
            if status is None:
                self.halt("deleted")
                return
            if status == CampaignStatus.CANCELLED:
                self.halt("cancelled")
                # The loop may be blocked for a while yet (a training step, a cold process's
                # first imports); the rows need not wait for it. Nothing the loop does after
                # a cancel writes a result: it only closes what is still open, if anything.
                try:
                    self._close_in_flight(EvaluationStatus.CANCELLED, "the campaign was cancelled")
                except NotFoundError:
                    pass  # deleted meanwhile
                except Exception:
                    log.exception("campaign %s: closing cancelled work failed", self.campaign_id)
                return

    # ------------------------------------------------------------------ set-up
    @property
    def state(self) -> RunState:
        """The run's state (see :mod:`search.run_state`), built once the campaign is claimed."""
        if self._state is None:
            raise RuntimeError(f"campaign {self.campaign_id}: the runner has not claimed it yet")
        return self._state

    def _claim(self) -> Claim | None:
        """Take ownership; returns what the run needs of the campaign, or None when the
        campaign is not runnable."""
        with session_scope(self.engine) as s:
            campaign = repo.get_campaign(s, campaign_id=self.campaign_id)
            if campaign.status not in (CampaignStatus.QUEUED, CampaignStatus.RUNNING):
                return None
            fresh = (
                campaign.heartbeat_at is not None
                and (time.time() - timestamp(campaign.heartbeat_at)) < self.stale_after_s
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
                    f"{time.time() - timestamp(campaign.heartbeat_at):.0f} s ago)"
                )
            if campaign.status == CampaignStatus.QUEUED:
                repo.set_campaign_status(
                    s,
                    campaign_id=self.campaign_id,
                    status=CampaignStatus.RUNNING,
                    expected=[CampaignStatus.QUEUED],
                )
            repo.touch_campaign(s, campaign_id=self.campaign_id, owner=self.owner)
            requeued = repo.requeue_running(s, campaign_id=self.campaign_id)
            if requeued:
                repo.add_event(
                    s, campaign_id=self.campaign_id, kind="resumed", payload={"requeued": requeued}
                )
            spec = CampaignSpec.model_validate(campaign.spec)
            objectives = campaign_objectives(spec)
            if campaign.reference_point is None:
                reference = reference_point(objectives)
                repo.set_reference_point(s, campaign_id=self.campaign_id, point=reference)
            else:
                reference = list(campaign.reference_point)
            return Claim(spec, objectives, reference, float(campaign.elapsed_seconds or 0.0))

    def _rebuild(self, claim: Claim) -> RunState:
        """The run's state rebuilt from storage: the strategy, the front and the counters."""
        spec, objectives = claim.spec, claim.objectives
        strategy = create_strategy(
            spec.strategy.name, spec.space.build(), spec.strategy, len(objectives), spec.seed
        )
        strategy.gain = spec.gain
        strategy.interrupt = self.halted
        front = Front(claim.reference)
        names = [o.name for o in objectives]
        with session_scope(self.engine, readonly=True) as s:
            candidates = repo.all_candidates(s, campaign_id=self.campaign_id)
            ids, table = repo.objective_table(s, campaign_id=self.campaign_id, names=names)
            evaluations_done = sum(
                n
                for status, n in repo.count_evaluations(s, campaign_id=self.campaign_id).items()
                if status in EVALUATION_ENDED
            )
        values = dict(zip(ids, to_minimize(objectives, table)))
        members = []
        seed_indices: set[int] = set()
        has_baseline = False
        cannot_run = None
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
                has_baseline = True
                if (
                    c.status == CandidateStatus.FAILED
                ):  # stored before a restart, a pause or an upgrade
                    cannot_run = self._stored_baseline_failure(c.id, spec)
            if c.origin == "seed":
                seed_indices.add(int(c.strategy_data.get("seed_index", -1)))
        ladder = self._rebuild_ladder(spec, objectives, members)
        strategy.rebuild(members)
        with session_scope(self.engine, readonly=True) as s:
            counts = repo.count_candidates(s, campaign_id=self.campaign_id)
            funnel = {
                stage: int(v["rejected"])
                for stage, v in repo.rejection_funnel(s, campaign_id=self.campaign_id).items()
            }
        for point in values.values():
            front.add(list(point))
        return RunState(
            spec=spec,
            objectives=objectives,
            elapsed_before=claim.elapsed_before,
            strategy=strategy,
            front=front,
            counts=counts,
            funnel=funnel,
            num_candidates=len(candidates),
            evaluations_done=evaluations_done,
            has_baseline=has_baseline,
            seed_indices=seed_indices,
            cannot_run=cannot_run,
            started=time.monotonic(),
            ladder=ladder,
        )

    def _rebuild_ladder(
        self, spec: CampaignSpec, objectives: list[Objective], members: list[Member]
    ) -> Ladder:
        """The rungs' populations from the stored runs (completed and stopped search
        evaluations list the rungs they reached), and each stopped member's lower-fidelity
        values (its partial accuracies at the rung where it stopped), which the strategy
        sees as it saw them when the candidate stopped."""
        ladder = Ladder.from_settings(spec.promotion)
        if not ladder.enabled:
            return ladder
        with session_scope(self.engine, readonly=True) as s:
            stored = repo.evaluation_results(
                s,
                campaign_id=self.campaign_id,
                kind=EvaluationKind.SEARCH,
                statuses=(EvaluationStatus.COMPLETED, EvaluationStatus.STOPPED),
            )
        by_id = {m.id: m for m in members}
        for candidate_id, status, result in stored:
            ladder.remember(result.get("rungs") or [])
            member = by_id.get(candidate_id)
            if status == EvaluationStatus.STOPPED and member is not None:
                member.values = _stopped_values(objectives, member, result)
        return ladder

    def _stored_baseline_failure(self, candidate_id: int, spec: CampaignSpec) -> str | None:
        """The campaign's error when the stored baseline ``candidate_id`` has the workers'
        verdict ``failed`` (see :func:`_baseline_reason`), else None."""
        with session_scope(self.engine, readonly=True) as s:
            evaluation = repo.latest_evaluation(
                s, candidate_id=candidate_id, kind=EvaluationKind.SEARCH
            )
            result = (evaluation.result if evaluation is not None else None) or {}
        if result.get("status") != Verdict.FAILED:
            return None
        return _baseline_reason(spec, str(result.get("reason") or "failed"))

    def _initial_proposals(self) -> list[Proposal]:
        """The baseline and the seeds not stored yet, in order."""
        spec = self.state.spec
        proposals = []
        if not self.state.has_baseline:
            graph = get_builtin(BASELINES[spec.space.kind])
            proposals.append(
                Proposal(graph, "baseline", (), {"builtin": BASELINES[spec.space.kind]})
            )
        for index, text in enumerate(spec.seeds):
            if index not in self.state.seed_indices:
                proposals.append(
                    Proposal(
                        parse_seed(text, spec.space),
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
        set while it was still running, ``deleted`` if the campaign was deleted under it).
        """
        claim = self._claim()
        if claim is None:
            with session_scope(self.engine, readonly=True) as s:
                return repo.get_campaign(s, campaign_id=self.campaign_id).status
        watcher = threading.Thread(
            target=self._watch, name=f"campaign-{self.campaign_id}-watch", daemon=True
        )
        watcher.start()
        try:
            return self._loop(claim)
        except NotFoundError:
            if self._exists():
                raise
            log.info("campaign %s was deleted; its runner leaves", self.campaign_id)
            return "deleted"
        finally:
            self._watcher_done.set()
            watcher.join()
            self._release()

    def _loop(self, claim: Claim) -> str:
        """The body of :meth:`run`, once the campaign is claimed."""
        self._state = self._rebuild(claim)
        self._redispatch_unfinished()
        pending_initial = self._initial_proposals()
        self._start_fidelity()
        if self.state.cannot_run is not None:
            return self._fail(self.state.cannot_run)
        while True:
            status, ended = self._read_control()
            if ended is not None:
                return ended
            searching = (
                status == CampaignStatus.RUNNING
                and self.state.num_candidates < self.state.spec.budget.max_candidates
                and self.elapsed() < self.state.spec.budget.max_seconds
            )
            if searching:
                pending_initial = self._fill(pending_initial)
                if self.halted.is_set():
                    continue
            if self.evaluator.in_flight() == 0 and self.state.ladder.held:
                # nothing running could reach a held candidate's rung: decide with what is
                # known (the continuations are in flight again, or the rows are finished)
                self._promote(force=True)
                continue
            if self.evaluator.in_flight() == 0:
                if status == CampaignStatus.PAUSED:
                    return CampaignStatus.PAUSED
                if not searching or not self._can_ask():
                    return self._finish()
            outcomes = self._collect()
            if outcomes:
                self._store(outcomes)
                if self.state.cannot_run is not None:
                    return self._fail(self.state.cannot_run)

    def _read_control(self) -> tuple[str, str | None]:
        """The requested status, and how the runner must leave now (``deleted``,
        ``cancelled`` with its in-flight work closed, ``stopped``) or None to go on.

        Cancel comes before stop: a campaign cancelled while the service stops must still
        close its in-flight work, or it would be left running for ever."""
        if self.halt_reason == "deleted":
            return "deleted", "deleted"
        status = self._control(force=self.halted.is_set())
        if status == CampaignStatus.CANCELLED or self.halt_reason == "cancelled":
            self._abandon_in_flight(EvaluationStatus.CANCELLED, "the campaign was cancelled")
            return status, CampaignStatus.CANCELLED
        if self.stop.is_set():
            return status, "stopped"
        return status, None

    def _exists(self) -> bool:
        """Whether the campaign's row is still stored."""
        with session_scope(self.engine, readonly=True) as s:
            return repo.campaign_exists(s, campaign_id=self.campaign_id)

    # ------------------------------------------------------------------ proxy fidelity
    def _start_fidelity(self) -> None:
        """Submit the fidelity panel's runs (search/fidelity.py), unless the campaign has its
        report already or an earlier campaign's report with the same key can be reused."""
        self.state.fidelity_runs.clear()
        self.state.fidelity_pending.clear()
        settings = self.state.spec.fidelity
        if not settings.enabled:
            return
        panel = list(settings.panel or fidelity.PANELS[self.state.spec.space.kind])
        seeds = list(range(settings.seeds))
        search = with_gain(self.state.spec.proxies, self.state.spec.gain)
        transfer = with_gain(self.state.spec.transfer.proxies, self.state.spec.gain)
        key = fidelity.report_key(
            self.state.spec.space.kind, panel, seeds, search, transfer, self.state.spec.gain
        )
        self.state.fidelity_plan = {
            "panel": panel,
            "seeds": seeds,
            "search": search,
            "transfer": transfer,
            "key": key,
        }
        with session_scope(self.engine) as s:
            if repo.latest_event(s, campaign_id=self.campaign_id, kind="fidelity") is not None:
                return
            earlier = repo.find_event_by_key(s, kind="fidelity", key=key)
            if earlier is not None:
                repo.add_event(
                    s,
                    campaign_id=self.campaign_id,
                    kind="fidelity",
                    payload={**earlier.payload, "reused_from": earlier.campaign_id},
                )
                return
        for job_id, payload in fidelity.panel_jobs(
            panel, seeds, search + transfer, self.campaign_id
        ):
            self.state.fidelity_pending.add(job_id)
            self.evaluator.submit(job_id, payload)

    def _search_in_flight(self) -> int:
        """The search's own jobs in flight: the fidelity panel and the scale controls run
        beside them and do not take from ``parallelism``."""
        side = len(self.state.fidelity_pending) + len(self.state.controls_pending)
        return max(0, self.evaluator.in_flight() - side)

    def _store_fidelity(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Take the panel's outcomes out of ``outcomes``; store the report once the last
        arrives. Returns the other outcomes."""
        rest = []
        for outcome in outcomes:
            if outcome.job_id.startswith(confirm.CONTROL_PREFIX):
                self._store_control(outcome)
                continue
            if not outcome.job_id.startswith(fidelity.JOB_PREFIX):
                rest.append(outcome)
                continue
            if outcome.job_id not in self.state.fidelity_pending:
                continue  # a duplicate delivery, or a job of an earlier runner
            self.state.fidelity_pending.discard(outcome.job_id)
            result = outcome.result or {}
            completed = outcome.status == Delivery.OK and result.get("status") == Verdict.COMPLETED
            plan = self.state.fidelity_plan
            count = len(plan["search"]) + len(plan["transfer"])
            proxies = list(result.get("proxies") or []) if completed else []
            self.state.fidelity_runs[fidelity.parse_job_id(outcome.job_id)] = [
                fidelity.accuracy_of(proxies[i]) if i < len(proxies) else None for i in range(count)
            ]
            if not self.state.fidelity_pending:
                report = fidelity.build_report(
                    panel=plan["panel"],
                    seeds=plan["seeds"],
                    search=plan["search"],
                    transfer=plan["transfer"],
                    accuracies=self.state.fidelity_runs,
                    key=plan["key"],
                )
                with session_scope(self.engine) as s:
                    repo.add_event(s, campaign_id=self.campaign_id, kind="fidelity", payload=report)
        return rest

    def _store_control(self, outcome: Outcome) -> None:
        """Store one scale control's run as a ``transfer_control`` event."""
        if outcome.job_id not in self.state.controls_pending:
            return
        self.state.controls_pending.discard(outcome.job_id)
        index, seed = outcome.job_id.removeprefix(confirm.CONTROL_PREFIX).split(":")
        result = outcome.result or {}
        completed = outcome.status == Delivery.OK and result.get("status") == Verdict.COMPLETED
        proxies = list(result.get("proxies") or []) if completed else []
        with session_scope(self.engine) as s:
            repo.add_event(
                s,
                campaign_id=self.campaign_id,
                kind="transfer_control",
                payload={
                    "text": confirm.CONTROLS[int(index)],
                    "seed": int(seed),
                    "accuracies": [fidelity.accuracy_of(p) for p in proxies],
                },
            )

    def _collect(self) -> list[Outcome]:
        """Outcomes from the evaluator: wait up to ``poll_s`` for the first, then keep
        collecting for ``batch_window_s`` while jobs are still in flight.

        On a cluster results trickle in one at a time; storing and refilling for each alone
        would cost the controller two write transactions per candidate, so a short window
        stores them in batches at a small added latency on long evaluations (figures:
        docs/measurements.md). An evaluator that runs its jobs inside ``poll``
        (``synchronous``) is never lingered on.
        """
        self._report_waiting()
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

    def _report_waiting(self) -> None:
        """Publish (as a progress event) when the evaluator cannot run queued work, e.g. no
        Ray node has a free CPU, and when that ends; checked at the heartbeat's pace."""
        now = time.monotonic()
        if now - self.state.last_waiting_check < self.heartbeat_s:
            return
        self.state.last_waiting_check = now
        probe = getattr(self.evaluator, "waiting", None)
        reason = probe() if callable(probe) else None
        if reason == self.state.waiting:
            return
        self.state.waiting = reason
        if reason:
            log.warning("campaign %s: %s", self.campaign_id, reason)
        progress = self._progress()
        with session_scope(self.engine) as s:
            repo.add_events(s, campaign_id=self.campaign_id, rows=[("progress", progress.__dict__)])
        if self.on_progress:
            self.on_progress(progress)

    def _can_ask(self) -> bool:
        return bool(self.state.strategy.ask(1)) if self.evaluator.in_flight() == 0 else True

    def elapsed(self) -> float:
        """Seconds the campaign has run, over all the runners that ran it."""
        return self.state.elapsed()

    def _control(self, force: bool = False) -> str:
        """Read the requested status (pause/cancel come from the API) and heart-beat; at
        most every ``control_s`` unless ``force``."""
        now = time.monotonic()
        if (
            not force
            and now - self.state.last_control < self.control_s
            and self.state.status is not None
        ):
            return self.state.status
        self.state.last_control = now
        with session_scope(self.engine) as s:
            campaign = repo.get_campaign(s, campaign_id=self.campaign_id)
            if (
                campaign.owner not in (None, self.owner)
                and campaign.status == CampaignStatus.RUNNING
            ):
                raise ConflictError(
                    f"campaign {self.campaign_id} was taken over by {campaign.owner}"
                )
            status = self.state.status = campaign.status
            if now - self.state.last_heartbeat >= self.heartbeat_s:
                self.state.last_heartbeat = now
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
        """Ask for and dispatch proposals until ``parallelism`` jobs are in flight.

        At most :data:`ASK_BATCH` proposals per ask and per transaction, so that a huge
        parallelism neither holds one ask for minutes nor one write transaction for
        100,000 rows; between batches a cancel, pause or stop ends the fill. Leaves early
        when the strategy proposes fewer than asked (it waits for results).
        """
        while not self.halted.is_set():
            room = min(
                self.state.spec.parallelism - self._search_in_flight(),
                self.state.spec.budget.max_candidates - self.state.num_candidates,
                ASK_BATCH,
            )
            if room <= 0:
                break
            proposals = pending_initial[:room]
            pending_initial = pending_initial[room:]
            if len(proposals) < room:
                proposals += self.state.strategy.ask(room - len(proposals))
            if self.halt_reason == "deleted":
                break
            if proposals:
                self._dispatch(proposals)
            if (
                len(proposals) < room
                or self._control() != CampaignStatus.RUNNING
                or self.stop.is_set()
            ):
                break
        return pending_initial

    def _payload(
        self,
        graph_dict: dict[str, Any],
        kind: str = EvaluationKind.SEARCH,
        seed: int = 0,
        proxies: list[dict[str, Any]] | None = None,
    ) -> EvaluationJob:
        """The job of one evaluation; a search job stops at the first rung when the
        campaign promotes by rungs (search/promotion.py)."""
        rejection = worker_rejection_config(
            self.state.spec, transfer=kind == EvaluationKind.TRANSFER
        )
        return EvaluationJob(
            graph=graph_dict,
            proxies=with_gain(proxies or self.state.spec.proxies, self.state.spec.gain),
            rejection=rejection,
            seed=seed,
            kind=str(kind),
            campaign_id=self.campaign_id,
            rung=self.state.ladder.first_rung() if kind == EvaluationKind.SEARCH else None,
        )

    def _dispatch(self, proposals: list[Proposal]) -> None:
        """Store proposals and their leased evaluations in one transaction, then submit.

        A proposal whose function is already in the campaign (a seed equal to the baseline,
        say) is stored as a duplicate of the first one and reuses its result; it is not
        evaluated again.
        """
        proposals = [p.with_fingerprint(self.state.spec.gain) for p in proposals]
        first_in_batch: dict[str, int] = {}
        rows = []
        with session_scope(self.engine) as s:
            originals: list[int | None] = []
            for index, proposal in enumerate(proposals):
                original = None
                if proposal.fingerprint in first_in_batch:
                    original = -1 - first_in_batch[proposal.fingerprint]  # resolved below
                elif proposal.fingerprint in self.state.strategy.seen:
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
                        "status": CandidateStatus.RUNNING
                        if original is None
                        else CandidateStatus.DUPLICATE,
                    }
                )
            ids = repo.add_candidates(s, campaign_id=self.campaign_id, rows=rows)
            duplicates = {}
            for index, original in enumerate(originals):
                if original is not None:
                    duplicates[ids[index]] = ids[-1 - original] if original < 0 else original
            repo.set_duplicates(s, campaign_id=self.campaign_id, duplicates=duplicates)
            fresh = [cid for cid in ids if cid not in duplicates]
            evaluation_ids = repo.add_running_evaluations(
                s,
                campaign_id=self.campaign_id,
                candidate_ids=fresh,
                owner=self.owner,
                lease_seconds=self.lease_seconds,
            )
            copied = self._copy_known_results(s, duplicates)
            repo.add_events(
                s, campaign_id=self.campaign_id, rows=self.state.strategy.drain_events()
            )
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
            self.state.strategy.observe(member)
            self.state.counts[member.status] = self.state.counts.get(member.status, 0) + 1
        self.state.num_candidates += len(ids)
        for cid, evaluation_id in zip(fresh, evaluation_ids):
            self.state.dispatched[str(evaluation_id)] = cid
            self.evaluator.submit(str(evaluation_id), self._payload(graph_by_id[cid]))

    def _copy_known_results(self, s, duplicates: dict[int, int]) -> dict[int, tuple[float, ...]]:
        """Give duplicates the objective values their originals already have."""
        copied: dict[int, tuple[float, ...]] = {}
        values = {}
        for duplicate, original in duplicates.items():
            known = repo.get_objective_values(s, candidate_id=original)
            if len(known) == len(self.state.objectives):
                values[duplicate] = known
                copied[duplicate] = self._minimized(known)
        repo.add_objective_values(s, campaign_id=self.campaign_id, values=values)
        return copied

    def _minimized(self, values: dict[str, float]) -> tuple[float, ...]:
        return tuple(
            to_minimize(self.state.objectives, [[values[o.name] for o in self.state.objectives]])[0]
        )

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
                    held_out_runs(self.state.spec)
                    if evaluation.kind == EvaluationKind.TRANSFER
                    else None
                )
                jobs.append(
                    (
                        str(evaluation.id),
                        self._payload(candidate.graph, evaluation.kind, evaluation.seed, proxies),
                    )
                )
                self.state.dispatched[str(evaluation.id)] = candidate.id
        for job_id, payload in jobs:
            self.evaluator.submit(job_id, payload)

    def _store(self, outcomes: list[Outcome]) -> None:
        """Store a batch of outcomes in one transaction, then tell the strategy.

        Outcomes of evaluations that already finished (a result delivered twice, a job of a
        deleted campaign) are dropped: the evaluations are locked and checked first.
        """
        outcomes = self._store_fidelity(outcomes)
        if not outcomes:
            return
        tells: list[tuple[int, tuple[float, ...] | None, str | None, str]] = []
        held_now = False
        with session_scope(self.engine) as s:
            open_evaluations = repo.lock_unfinished_evaluations(
                s, evaluation_ids=[int(o.job_id) for o in outcomes]
            )
            batch = _Batch()
            for outcome in outcomes:
                self.state.dispatched.pop(outcome.job_id, None)
                found = open_evaluations.pop(int(outcome.job_id), None)
                if found is None:
                    continue
                candidate_id, kind = found
                if kind == EvaluationKind.SEARCH and outcome.at_rung and self.state.ladder.enabled:
                    self._hold(outcome, candidate_id)
                    held_now = True
                    continue
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
            if candidate_id in self.state.strategy.members:
                self.state.strategy.tell(candidate_id, values, error=error, status=status)
        if self.on_progress:
            self.on_progress(progress)
        if held_now:
            self._promote(force=False)

    # ------------------------------------------------------------------ successive halving
    def _hold(self, outcome: Outcome, candidate_id: int) -> None:
        """Keep a search job that reached its rung (its evaluation stays running, leased)
        until the rung's decision; the job is rebuilt to be continued later."""
        member = self.state.strategy.members.get(candidate_id)
        graph = member.graph.to_dict() if member else {}
        self.state.ladder.arrive(outcome.job_id, candidate_id, self._payload(graph), outcome)

    def _promote(self, *, force: bool) -> None:
        """Apply the ladder's decisions: a promoted candidate's run continues (the same
        job with its checkpoint, to the next rung or the end); a stopped one is stored as
        ``stopped`` with its rung and partial accuracies, and the strategy is told those
        lower-fidelity values."""
        ladder = self.state.ladder
        decisions = ladder.decide(force=force)
        if not decisions:
            return
        stopped = [held for held, continues in decisions if not continues]
        if stopped:
            self._store_stopped(stopped)
        for held, continues in decisions:
            if not continues:
                continue
            job = held.job.continuation(held.outcome.checkpoint or b"", ladder.next_rung(held.rung))
            self.state.dispatched[held.job_id] = held.candidate_id
            self.evaluator.submit(held.job_id, job)

    def _store_stopped(self, stopped: list[Held]) -> None:
        """Finish the evaluations and candidates stopped at their rungs in one transaction,
        then tell the strategy their partial (lower-fidelity) values."""
        strategy = self.state.strategy
        tells = []
        with session_scope(self.engine) as s:
            still_open = repo.lock_unfinished_evaluations(
                s, evaluation_ids=[int(h.job_id) for h in stopped]
            )
            batch = _Batch()
            for held in stopped:
                if int(held.job_id) not in still_open:
                    continue  # closed meanwhile (a cancel)
                result = dict(held.outcome.result or {})
                member = strategy.members.get(held.candidate_id)
                values = _stopped_values(self.state.objectives, member, result)
                accuracy = [p.get("val_accuracy") for p in result.get("proxies") or []]
                batch.evaluations.append(
                    {"id": int(held.job_id), "status": EvaluationStatus.STOPPED, "result": result}
                )
                self._finished(
                    batch,
                    held.candidate_id,
                    CandidateStatus.STOPPED,
                    to_text(member.graph) if member else "",
                    rung=held.rung,
                    accuracy=accuracy,
                )
                tells.append((held.candidate_id, values))
            repo.finish_evaluations(s, rows=batch.evaluations)
            repo.set_candidate_statuses(s, statuses=batch.statuses)
            repo.add_hypervolume_points(s, campaign_id=self.campaign_id, rows=batch.hypervolume)
            progress = self._progress()
            repo.add_events(
                s,
                campaign_id=self.campaign_id,
                rows=[*batch.events, ("progress", progress.__dict__)],
            )
        for candidate_id, values in tells:
            if candidate_id in strategy.members:
                strategy.tell(candidate_id, values, status=CandidateStatus.STOPPED)
        if self.on_progress:
            self.on_progress(progress)

    def _classify(
        self, batch: _Batch, evaluation_id: int, candidate_id: int, kind: str, outcome: Outcome
    ):
        """Turn one outcome into the rows to write; returns what to tell the strategy."""
        result = outcome.result or {}
        if kind == EvaluationKind.TRANSFER:
            delivered: dict[str, EvaluationStatus] = {
                Delivery.OK: EvaluationStatus.COMPLETED,
                Delivery.TIMEOUT: EvaluationStatus.TIMEOUT,
            }
            status = delivered.get(outcome.status, EvaluationStatus.FAILED)
            batch.evaluations.append(
                {
                    "id": evaluation_id,
                    "status": status,
                    "result": result or None,
                    "error": outcome.error,
                }
            )
            return None
        member = self.state.strategy.members.get(candidate_id)
        text = to_text(member.graph) if member else ""
        if outcome.status != Delivery.OK:
            status = (
                EvaluationStatus.TIMEOUT
                if outcome.status == Delivery.TIMEOUT
                else EvaluationStatus.FAILED
            )
            error = outcome.error or status
            batch.evaluations.append({"id": evaluation_id, "status": status, "error": error})
            self._finished(batch, candidate_id, CandidateStatus.FAILED, text, reason=error)
            return candidate_id, None, error, CandidateStatus.FAILED
        batch.evaluations.append(
            {"id": evaluation_id, "status": EvaluationStatus.COMPLETED, "result": result}
        )
        verdict = result.get("status")
        if verdict == Verdict.COMPLETED:
            num_nodes = member.graph.num_nodes if member else 0
            values = values_from_result(self.state.objectives, result, num_nodes)
            batch.objectives[candidate_id] = values
            batch.completed.append(candidate_id)
            point = self._minimized(values)
            self.state.front.add(list(point))
            self._finished(batch, candidate_id, CandidateStatus.COMPLETED, text, values=values)
            return candidate_id, point, None, CandidateStatus.COMPLETED
        if verdict == Verdict.REJECTED:
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
            self.state.funnel[stage] = self.state.funnel.get(stage, 0) + 1
            self._finished(
                batch, candidate_id, CandidateStatus.REJECTED, text, stage=stage, reason=reason
            )
            return candidate_id, None, reason, CandidateStatus.REJECTED
        reason = str(result.get("reason") or "failed")
        if member is not None and member.origin == "baseline":
            self.state.cannot_run = _baseline_reason(self.state.spec, reason)
        self._finished(batch, candidate_id, CandidateStatus.FAILED, text, reason=reason)
        return candidate_id, None, reason, CandidateStatus.FAILED

    def _finished(
        self, batch: _Batch, candidate_id: int, status: str, text: str, **extra: Any
    ) -> None:
        """Book-keeping shared by every finished search evaluation."""
        batch.statuses[candidate_id] = status
        self.state.counts[CandidateStatus.RUNNING] = max(
            0, self.state.counts.get(CandidateStatus.RUNNING, 0) - 1
        )
        self.state.counts[status] = self.state.counts.get(status, 0) + 1
        self.state.evaluations_done += 1
        batch.hypervolume.append(
            {
                "evaluations": self.state.evaluations_done,
                "hypervolume": self.state.front.value,
                "elapsed_seconds": self.elapsed(),
            }
        )
        batch.events.append(
            ("candidate", {"id": candidate_id, "text": text, "status": status, **extra})
        )

    def _progress(self, phase: str = "search") -> Progress:
        best: dict[str, float] = {}
        for index, objective in enumerate(self.state.objectives):
            column = [p[index] for p in self.state.front.points]
            if column:
                best[objective.name] = objective.minimized(min(column))
        return Progress(
            self.campaign_id,
            self.state.status or CampaignStatus.RUNNING,
            self.state.num_candidates,
            self.state.spec.budget.max_candidates,
            dict(self.state.counts),
            dict(self.state.funnel),
            best,
            self.state.front.value,
            self.evaluator.in_flight(),
            self.elapsed(),
            phase,
            self.state.waiting,
        )

    # ------------------------------------------------------------------ ending
    def _abandon_in_flight(self, status: str, reason: str) -> None:
        """Stop the evaluator's jobs, then close every in-flight evaluation and candidate
        of the campaign as ``status`` (``cancelled`` or ``failed``) in one transaction."""
        self.evaluator.cancel()
        self.state.ladder.drop_held()
        self._close_in_flight(status, reason)
        self.state.dispatched.clear()

    def _fail(self, reason: str) -> str:
        """End a campaign that cannot run: close its in-flight work and mark it ``failed``
        with ``reason`` (the campaign's ``error``, and the payload of its status event)."""
        log.warning("campaign %s cannot run: %s", self.campaign_id, reason)
        self._abandon_in_flight(EvaluationStatus.FAILED, reason)
        with session_scope(self.engine) as s:
            try:
                repo.set_campaign_status(
                    s,
                    campaign_id=self.campaign_id,
                    status=CampaignStatus.FAILED,
                    expected=[CampaignStatus.RUNNING],
                    error=reason,
                )
            except ConflictError:  # cancelled or paused meanwhile: that stands
                return repo.get_campaign(s, campaign_id=self.campaign_id).status
            repo.touch_campaign(
                s, campaign_id=self.campaign_id, owner=self.owner, elapsed_seconds=self.elapsed()
            )
        if self.on_progress:
            self.state.status = CampaignStatus.FAILED
            self.on_progress(self._progress())
        return CampaignStatus.FAILED

    def _close_in_flight(self, status: str, reason: str) -> None:
        """Close the campaign's in-flight evaluations and candidates as ``status`` in one
        transaction (and, for a cancel, make sure the campaign itself says cancelled); a
        ``closed`` event records how many. Called by the loop and by the watcher: whichever
        comes first closes the rows, the other finds nothing left."""
        with session_scope(self.engine) as s:
            if status == EvaluationStatus.CANCELLED:
                try:  # halted by a cancel whose status change this loop has not read yet
                    repo.set_campaign_status(
                        s,
                        campaign_id=self.campaign_id,
                        status=CampaignStatus.CANCELLED,
                        expected=[
                            CampaignStatus.QUEUED,
                            CampaignStatus.RUNNING,
                            CampaignStatus.PAUSED,
                        ],
                    )
                except ConflictError:
                    pass  # already cancelled (or finished otherwise)
            closed = repo.close_in_flight(
                s, campaign_id=self.campaign_id, status=status, reason=reason
            )
            if closed.evaluations or closed.candidates:
                repo.add_event(
                    s,
                    campaign_id=self.campaign_id,
                    kind="closed",
                    payload={"status": status, "reason": reason, **closed._asdict()},
                )

    def _finish(self) -> str:
        """Run the transfer stage (if configured), then mark the campaign completed."""
        if self.state.spec.transfer.top_k > 0 and not self.stop.is_set():
            outcome = self._transfer()
            if outcome != "done":
                return outcome
        with session_scope(self.engine) as s:
            try:
                repo.set_campaign_status(
                    s,
                    campaign_id=self.campaign_id,
                    status=CampaignStatus.COMPLETED,
                    expected=[CampaignStatus.RUNNING],
                )
            except ConflictError:
                status = repo.get_campaign(s, campaign_id=self.campaign_id).status
                if status == CampaignStatus.CANCELLED:  # cancelled just now, between two checks
                    repo.close_in_flight(
                        s,
                        campaign_id=self.campaign_id,
                        status=EvaluationStatus.CANCELLED,
                        reason="the campaign was cancelled",
                    )
                return status
            repo.touch_campaign(
                s, campaign_id=self.campaign_id, owner=self.owner, elapsed_seconds=self.elapsed()
            )
            if self.on_progress:
                self.state.status = CampaignStatus.COMPLETED
                self.on_progress(self._progress())
        return CampaignStatus.COMPLETED

    def _transfer(self) -> str:
        """Run the transfer stage (see :mod:`search.transfer`): store and submit the top
        candidates' held-out evaluations and the scale controls, then store their outcomes
        until none is in flight; returns how it ended (``done`` or how the runner left)."""
        state = self.state
        top = transfer_candidates(state.spec, state.objectives, state.strategy.members.values())
        jobs = queue_transfer(
            self.engine,
            campaign_id=self.campaign_id,
            spec=state.spec,
            top=top,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
        )
        held_out = held_out_runs(state.spec)
        for job in jobs:
            self.evaluator.submit(
                str(job.evaluation_id),
                self._payload(job.graph, EvaluationKind.TRANSFER, job.seed, held_out),
            )
        state.controls_pending = submit_controls(
            self.engine, self.evaluator, campaign_id=self.campaign_id, spec=state.spec
        )
        while self.evaluator.in_flight():
            _status, ended = self._read_control()
            if ended is not None:
                return ended
            outcomes = self.evaluator.poll(self.poll_s)
            if outcomes:
                self._store(outcomes)
        return "done"

    def _release(self) -> None:
        """Give up ownership so that another runner may continue without waiting."""
        try:
            with session_scope(self.engine) as s:
                campaign = repo.get_campaign(s, campaign_id=self.campaign_id)
                if campaign.owner == self.owner:
                    campaign.owner = None
                    if self._state is not None:  # None: the run failed before its rebuild
                        campaign.elapsed_seconds = self._state.elapsed()
        except NotFoundError:
            pass  # deleted: nothing left to release
        except Exception:
            log.exception("could not release campaign %s", self.campaign_id)


def _stopped_values(
    objectives: list[Objective], member: Member | None, result: dict[str, Any]
) -> tuple[float, ...]:
    """The minimized objective values of a run stopped at a rung (its partial result)."""
    num_nodes = member.graph.num_nodes if member else 0
    values = values_from_result(objectives, result, num_nodes)
    return tuple(to_minimize(objectives, [[values[o.name] for o in objectives]])[0])


def _baseline_reason(spec: CampaignSpec, error: str | None) -> str:
    """The campaign's error when the worker reported its baseline's evaluation failed.

    The baseline is a known-good layer (ReLU, BN-ReLU): when the workers' protocol says
    its evaluation failed (not rejected: the proxy could not be set up, its dataset is
    missing or damaged, the network could not be built), every candidate would fail the
    same way and the campaign would end ``completed`` with nothing to show. A lost
    worker or a timeout is not such a verdict: those are retried or counted as usual.
    """
    return (
        f"the baseline {BASELINES[spec.space.kind]} could not be evaluated, so no "
        f"candidate can be: {error or 'its evaluation failed'}"
    )


def worker_rejection_config(spec: CampaignSpec, *, transfer: bool = False) -> dict[str, Any]:
    """The workers' rejection config for a campaign: its stages, then the full evaluation.

    Strategies only propose graphs within the campaign's limits, while seeds may exceed
    them; so the worker's ``static`` stage checks the rules every layer must meet
    (depends on x, a known op) with the kind's full op set and generous limits. Transfer
    evaluations skip every stage and train fully.
    """
    if transfer:
        return {"stages": [Stage.FULL], "measure_costs": False}
    rejection = spec.rejection
    return {
        "stages": [*rejection.stages, Stage.FULL],
        **rejection.model_dump(exclude={"stages"}),  # every threshold, named as the workers name it
        "space": {"ops": "full", "max_nodes": 64, "max_depth": 64},
        "measure_costs": "runtime" in spec.objectives or "params" in spec.objectives,
    }
