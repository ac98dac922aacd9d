"""The seams of the campaign loop: the run state in one RunState, the transfer stage's choice
of candidates, and the status vocabularies the database checks."""

from __future__ import annotations

import pytest

from layerforge.grammar import get_builtin
from layerforge.search.campaign import CampaignRunner
from layerforge.search.evaluators import SimulatedEvaluator
from layerforge.search.objectives import campaign_objectives
from layerforge.search.queries import create_campaign
from layerforge.search.run_state import Front, RunState
from layerforge.search.spec import validate_spec
from layerforge.search.strategies import Member
from layerforge.search.transfer import transfer_candidates
from layerforge.storage import (
    CAMPAIGN_STATUSES,
    CANDIDATE_STATUSES,
    EVALUATION_STATUSES,
    CampaignStatus,
    CandidateStatus,
    EvaluationStatus,
    get_engine,
    session_scope,
    upgrade_database,
)
from layerforge.storage import repository as repo

SPEC = {
    "name": "seams",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 6},
    "seeds": ["x * sigmoid(x)", "silu"],
    "strategy": {"name": "evolution", "population": 8, "tournament": 4},
    "proxies": [
        {"arch": "mlp", "dataset": "mnist1d", "steps": 50},
        {"arch": "mlp", "dataset": "digits", "steps": 50},
    ],
    "objectives": ["accuracy", "nodes"],
    "budget": {"max_candidates": 20},
    "parallelism": 4,
    "seed": 3,
}


@pytest.fixture
def db(database_url):
    upgrade_database(database_url)
    return database_url


def test_a_run_creates_no_attribute_outside_init_and_keeps_its_state_in_one_run_state(db):
    campaign_id = create_campaign(db, validate_spec(SPEC))
    runner = CampaignRunner(db, campaign_id, SimulatedEvaluator(), poll_s=0.0, control_s=0.0)
    before = set(vars(runner))
    with pytest.raises(RuntimeError, match="not claimed"):
        _ = runner.state
    assert runner.run() == CampaignStatus.COMPLETED
    assert set(vars(runner)) == before
    state = runner.state
    assert isinstance(state, RunState)
    assert state.num_candidates == 20
    with session_scope(get_engine(db), readonly=True) as s:
        assert state.counts == repo.count_candidates(s, campaign_id=campaign_id)
    assert state.dispatched == {} and not state.fidelity_pending and not state.controls_pending


def test_a_second_runner_rebuilds_the_same_counts_from_storage(db):
    campaign_id = create_campaign(db, validate_spec(SPEC))
    first = CampaignRunner(db, campaign_id, SimulatedEvaluator(), poll_s=0.0, control_s=0.0)
    first.run()
    with session_scope(get_engine(db)) as s:  # reopen it so that a second runner claims it
        repo.set_campaign_status(s, campaign_id=campaign_id, status=CampaignStatus.RUNNING)
    second = CampaignRunner(db, campaign_id, SimulatedEvaluator(), poll_s=0.0, control_s=0.0)
    assert second.run() == CampaignStatus.COMPLETED
    assert second.state.counts == first.state.counts
    assert second.state.funnel == first.state.funnel
    assert sorted(second.state.front.points) == sorted(first.state.front.points)
    assert second.state.front.value == pytest.approx(first.state.front.value)


def _member(cid, seq, values, status=CandidateStatus.COMPLETED, origin="mutation"):
    return Member(cid, seq, get_builtin("relu"), f"fp{cid}", origin, status, values)


def test_transfer_takes_the_top_k_by_mean_accuracy_then_the_baseline():
    spec = validate_spec({**SPEC, "transfer": {"top_k": 2}})
    objectives = campaign_objectives(spec)  # two accuracies (minimized: negated), nodes
    members = [
        _member(1, 0, (-0.50, -0.50, 3.0), origin="baseline"),
        _member(2, 1, (-0.90, -0.70, 5.0)),  # mean 0.80
        _member(3, 2, (-0.70, -0.90, 4.0)),  # mean 0.80, younger: after 2
        _member(4, 3, (-0.95, -0.95, 6.0), status=CandidateStatus.REJECTED),
        _member(5, 4, None, status=CandidateStatus.FAILED),
        _member(6, 5, (-0.60, -0.60, 2.0)),
    ]
    top = transfer_candidates(spec, objectives, members)
    assert [cid for cid, _ in top] == [2, 3, 1]
    assert top[0][1] == members[1].graph.to_dict()
    # a baseline among the top K is not added twice
    spec = validate_spec({**SPEC, "transfer": {"top_k": 6}})
    assert [cid for cid, _ in transfer_candidates(spec, objectives, members)] == [2, 3, 6, 1]


def test_the_front_keeps_only_non_dominated_points():
    front = Front([1.0, 1.0])
    assert front.add([0.5, 0.5])
    assert not front.add([0.6, 0.6])  # dominated
    assert not front.add([float("nan"), 0.0])
    assert front.add([0.2, 0.8])
    assert front.add([0.1, 0.1])  # dominates both
    assert front.points == [[0.1, 0.1]]
    assert front.value == pytest.approx(0.81)


def test_the_status_vocabularies_are_the_strings_the_database_checks(db):
    assert CAMPAIGN_STATUSES == tuple(s.value for s in CampaignStatus)
    assert CANDIDATE_STATUSES == tuple(s.value for s in CandidateStatus)
    assert EVALUATION_STATUSES == tuple(s.value for s in EvaluationStatus)
    assert all(type(s) is str for s in CAMPAIGN_STATUSES)
    campaign_id = create_campaign(db, validate_spec(SPEC))
    with session_scope(get_engine(db)) as s:
        repo.set_campaign_status(s, campaign_id=campaign_id, status=CampaignStatus.PAUSED)
    with session_scope(get_engine(db), readonly=True) as s:
        stored = repo.campaign_status(s, campaign_id=campaign_id)
    assert stored == "paused" and type(stored) is str
