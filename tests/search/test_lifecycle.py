"""A campaign ends without loose ends: cancelled work closes as ``cancelled``, a failed
runner closes its work as ``failed``, start-up repairs what older versions left open, and a
deleted campaign's runner stops. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import select

from layerforge.search.campaign import CampaignRunner
from layerforge.search.evaluators import LocalEvaluator, SimulatedEvaluator
from layerforge.search.manager import ControllerManager
from layerforge.search.queries import create_campaign
from layerforge.search.spec import validate_spec
from layerforge.storage import get_engine, session_scope, upgrade_database
from layerforge.storage import repository as repo
from layerforge.storage.models import Candidate, Evaluation, Event
from tests.reliability.test_cancel_latency import LONG_STEPS_SPEC, warm_up_training

SPEC = {
    "name": "lifecycle",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4},
    "seeds": ["x * sigmoid(x)"],
    "strategy": {"name": "evolution", "population": 8, "tournament": 2},
    "proxies": [{"arch": "mlp", "dataset": "mnist1d", "steps": 30}],
    "budget": {"max_candidates": 40},
    "parallelism": 6,
    "seed": 2,
}


@pytest.fixture
def db(database_url):
    upgrade_database(database_url)
    return database_url


def statuses(url: str, campaign_id: int) -> tuple[Counter, Counter]:
    """(candidate statuses, evaluation statuses) of the campaign. Duplicates are left out:
    they are never dispatched (a random graph may repeat the baseline's function, say
    min(x, 0), which gain-fair evaluation cannot tell from relu), so nothing of theirs is
    ever in flight."""
    with session_scope(get_engine(url), readonly=True) as s:
        candidates = s.scalars(
            select(Candidate.status).where(
                Candidate.campaign_id == campaign_id, Candidate.status != "duplicate"
            )
        ).all()
        evaluations = s.scalars(
            select(Evaluation.status).where(Evaluation.campaign_id == campaign_id)
        ).all()
    return Counter(candidates), Counter(evaluations)


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.02)


def set_status(url: str, campaign_id: int, status: str) -> None:
    with session_scope(get_engine(url)) as s:
        repo.set_campaign_status(s, campaign_id=campaign_id, status=status)


def test_cancel_closes_every_in_flight_evaluation_and_candidate_as_cancelled(db):
    campaign_id = create_campaign(db, validate_spec(SPEC))
    evaluator = SimulatedEvaluator(seconds=3600)  # nothing ever finishes on its own
    runner = CampaignRunner(db, campaign_id, evaluator, poll_s=0.05, control_s=0.05)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(runner.run()), daemon=True)
    thread.start()
    wait_until(lambda: statuses(db, campaign_id)[1]["running"] == 6, what="6 running")

    set_status(db, campaign_id, "cancelled")
    thread.join(30)

    assert result == ["cancelled"]
    candidates, evaluations = statuses(db, campaign_id)
    assert evaluations == {"cancelled": 6}
    assert candidates == {"cancelled": 6}
    assert evaluator.in_flight() == 0
    with session_scope(get_engine(db), readonly=True) as s:
        closed = [e.payload for e in repo.list_events(s, campaign_id=campaign_id, limit=100)]
        assert {"status": "cancelled", "reason": "the campaign was cancelled"}.items() <= next(
            p for p in closed if p.get("status") == "cancelled" and "evaluations" in p
        ).items()
        assert repo.get_campaign(s, campaign_id=campaign_id).owner is None


def test_the_cancel_check_comes_before_the_stop_check(db):
    campaign_id = create_campaign(db, validate_spec(SPEC))
    stop = threading.Event()
    runner = CampaignRunner(
        db, campaign_id, SimulatedEvaluator(seconds=3600), poll_s=0.05, control_s=0.0, stop=stop
    )
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(runner.run()), daemon=True)
    thread.start()
    wait_until(lambda: statuses(db, campaign_id)[1]["running"] == 6, what="6 running")

    set_status(db, campaign_id, "cancelled")
    stop.set()  # the service stops at the same moment
    thread.join(30)

    assert result == ["cancelled"]
    candidates, evaluations = statuses(db, campaign_id)
    assert set(evaluations) == {"cancelled"} and set(candidates) == {"cancelled"}


@pytest.mark.slow
def test_a_cancel_made_by_another_process_stops_local_training_within_5_s(db, capsys):
    """No manager to tell the runner: its watcher reads the cancel from the database while
    the loop is blocked in a training step, and stops the training."""
    warm_up_training()
    campaign_id = create_campaign(db, validate_spec(LONG_STEPS_SPEC))
    runner = CampaignRunner(db, campaign_id, LocalEvaluator(), watch_s=0.5)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(runner.run()), daemon=True)
    thread.start()
    try:
        wait_until(lambda: statuses(db, campaign_id)[1]["running"] >= 1, what="training")
        time.sleep(3.0)  # into the baseline's 5000 steps of about 0.4 s
        assert statuses(db, campaign_id)[1]["completed"] == 0

        started = time.monotonic()
        set_status(db, campaign_id, "cancelled")  # as the API of another process does
        thread.join(30)
        seconds = time.monotonic() - started
    finally:
        runner.halt("cancelled")  # a failed assertion must not leave training behind

    assert result == ["cancelled"]
    assert seconds < 5.0, seconds
    candidates, evaluations = statuses(db, campaign_id)
    assert set(candidates) == {"cancelled"} and set(evaluations) == {"cancelled"}
    with capsys.disabled():
        print(f"\n[cancel] from another process, local evaluator mid-training: {seconds:.2f} s")


class BreaksAfterDispatch(SimulatedEvaluator):
    """Accepts jobs, then fails at its first poll: a bug in the evaluator mid-campaign."""

    def poll(self, timeout_s):
        if self.pending:
            raise RuntimeError("evaluator exploded")
        return []


def test_a_failed_runner_closes_its_in_flight_work_as_failed_with_the_reason(db):
    campaign_id = create_campaign(db, validate_spec(SPEC))
    manager = ControllerManager(
        db,
        lambda: BreaksAfterDispatch(seconds=3600),
        scan_s=0.05,
        runner_options={"poll_s": 0.05, "control_s": 0.05},
    )
    manager.start()
    try:
        wait_until(lambda: statuses(db, campaign_id)[1]["failed"] > 0, what="failed work")
        wait_until(lambda: not manager.active(), what="the runner to leave")
    finally:
        manager.stop()
    candidates, evaluations = statuses(db, campaign_id)
    assert candidates == {"failed": 6} and evaluations == {"failed": 6}
    with session_scope(get_engine(db), readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=campaign_id)
        assert campaign.status == "failed"
        assert "evaluator exploded" in (campaign.error or "")
        errors = s.scalars(select(Evaluation.error).where(Evaluation.campaign_id == campaign_id))
        assert all("RuntimeError: evaluator exploded" in (e or "") for e in errors)


def make_left_open(url: str, status: str) -> int:
    """A campaign that ended ``status`` but, as older versions left them, still holds a
    proposed and a running candidate, a queued and a running evaluation, and finished ones."""
    with session_scope(get_engine(url)) as s:
        campaign = repo.create_campaign(
            s,
            name=status,
            spec={},
            space_kind="activation",
            strategy="random",
            objectives=["acc"],
            status="running",
        )
        done = repo.add_candidate(
            s, campaign_id=campaign.id, graph={}, text="a", fingerprint="a", origin="seed"
        )
        evaluation = repo.add_evaluation(s, candidate_id=done.id)
        repo.finish_evaluation(s, evaluation_id=evaluation.id, status="completed", result={})
        repo.set_candidate_status(s, candidate_id=done.id, status="completed")
        proposed = repo.add_candidate(
            s, campaign_id=campaign.id, graph={}, text="b", fingerprint="b", origin="random"
        )
        repo.add_evaluation(s, candidate_id=proposed.id)
        running = repo.add_candidate(
            s,
            campaign_id=campaign.id,
            graph={},
            text="c",
            fingerprint="c",
            origin="random",
            status="running",
        )
        leased = repo.add_evaluation(s, candidate_id=running.id)
        repo.lease_evaluation(s, evaluation_id=leased.id, owner="gone:1:x", lease_seconds=60)
        repo.set_campaign_status(s, campaign_id=campaign.id, status=status)
        return campaign.id


def test_start_up_closes_what_older_versions_left_in_flight_in_finished_campaigns(db):
    left = {status: make_left_open(db, status) for status in ("completed", "cancelled", "failed")}
    with session_scope(get_engine(db)) as s:
        active = repo.create_campaign(
            s,
            name="paused",
            spec={},
            space_kind="activation",
            strategy="random",
            objectives=["acc"],
            status="paused",
        ).id
        waiting = repo.add_candidate(
            s, campaign_id=active, graph={}, text="d", fingerprint="d", origin="random"
        )
        repo.add_evaluation(s, candidate_id=waiting.id)

    # max_concurrent=0: the manager only starts (and repairs); it runs no campaign
    manager = ControllerManager(db, SimulatedEvaluator, max_concurrent=0, scan_s=0.05)
    manager.start()
    manager.stop()

    for status, campaign_id in left.items():
        closing = "cancelled" if status == "cancelled" else "failed"
        candidates, evaluations = statuses(db, campaign_id)
        assert candidates == {"completed": 1, closing: 2}, status
        assert evaluations == {"completed": 1, closing: 2}, status
        with session_scope(get_engine(db), readonly=True) as s:
            assert repo.get_campaign(s, campaign_id=campaign_id).status == status
            repaired = s.scalars(
                select(Event.payload).where(
                    Event.campaign_id == campaign_id, Event.kind == "repaired"
                )
            ).all()
            assert repaired == [{"closed_as": closing, "evaluations": 2, "candidates": 2}]
    assert statuses(db, active) == (Counter({"proposed": 1}), Counter({"queued": 1}))
    with session_scope(get_engine(db)) as s:
        assert repo.repair_finished_campaigns(s) == {}  # a second start finds nothing


def test_stop_campaign_stops_a_runner_before_its_campaign_is_deleted(db):
    campaign_id = create_campaign(db, validate_spec(SPEC))
    evaluators: list[SimulatedEvaluator] = []

    def factory():
        evaluators.append(SimulatedEvaluator(seconds=3600))
        return evaluators[-1]

    manager = ControllerManager(
        db, factory, scan_s=0.05, runner_options={"poll_s": 0.05, "control_s": 0.05}
    )
    manager.start()
    try:
        wait_until(lambda: statuses(db, campaign_id)[1]["running"] == 6, what="6 running")
        assert manager.active() == [campaign_id]
        assert manager.stop_campaign(campaign_id, timeout_s=10)
        assert manager.active() == []
        # a transient database error before the stop makes the runner retry with a new
        # evaluator (seen on a loaded PostgreSQL); none may run or start after the stop
        started = len(evaluators)
        assert all(e.in_flight() == 0 for e in evaluators)
        with session_scope(get_engine(db)) as s:
            repo.set_campaign_status(s, campaign_id=campaign_id, status="cancelled")
            repo.delete_campaign(s, campaign_id=campaign_id)
        manager.forget(campaign_id)
        time.sleep(0.3)  # several scans: nothing restarts, nothing is written
        assert manager.active() == [] and len(evaluators) == started
        assert statuses(db, campaign_id) == (Counter(), Counter())
    finally:
        manager.stop()
