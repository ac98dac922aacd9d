"""The surrogate strategy: it learns from the campaign's members, explores (and says why)
while it cannot fit, is rebuilt from storage exactly, and its settings are validated."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from fastapi.testclient import TestClient

from layerforge.grammar import make_space
from layerforge.grammar.fingerprint import ACT_PROBE
from layerforge.search.campaign import CampaignRunner
from layerforge.search.evaluators import SimulatedEvaluator
from layerforge.search.queries import create_campaign
from layerforge.search.spec import SpecError, StrategySpec, SurrogateSpec, validate_spec
from layerforge.search.strategies import Member, create_strategy
from layerforge.search.strategies.surrogate_features import activation_features
from layerforge.storage import get_engine, session_scope, upgrade_database
from layerforge.storage import repository as repo
from tests.api.helpers import API, make_app, small_spec

SPACE = make_space("activation", ops="swish", max_nodes=6, max_depth=6)
PROBE = np.sort(ACT_PROBE)
TARGET = np.maximum(PROBE, 0.0) / np.sqrt(0.5)  # relu, gain-normalized


def likeness_to_relu(graph) -> float | None:
    """A smooth objective of the function itself (minimized): the distance of its
    gain-normalized outputs to relu's on the probes; None (rejected) when it has no gain."""
    features = activation_features(graph)
    if features is None:
        return None
    inside = np.abs(PROBE) <= 3
    return float(np.sqrt(np.mean((features[inside] - TARGET[inside]) ** 2)))


def settings(**surrogate) -> StrategySpec:
    return StrategySpec(name="surrogate", surrogate=SurrogateSpec(**surrogate))


def drive(strategy, rounds: int, batch: int, objective=likeness_to_relu, start_id: int = 1):
    """Ask, observe and tell as the campaign loop does, with ``objective`` as the outcome."""
    members, next_id = [], start_id
    for _ in range(rounds):
        for proposal in strategy.ask(batch):
            proposal = proposal.with_fingerprint()
            member = Member(
                next_id, next_id, proposal.graph, proposal.fingerprint, proposal.origin,
                "running", None, proposal.parent_ids, dict(proposal.data),
            )  # fmt: skip
            strategy.observe(member)
            members.append(member)
            next_id += 1
            value = objective(member.graph)
            if value is None:
                strategy.tell(member.id, error="rejected at probe", status="rejected")
            else:
                strategy.tell(member.id, value if isinstance(value, tuple) else (value,))
    return members


def surrogate_events(strategy) -> list[dict]:
    return [payload for kind, payload in strategy.drain_events() if kind == "surrogate"]


def test_too_few_members_means_exploration_and_an_event_that_says_why():
    strategy = create_strategy("surrogate", SPACE, settings(min_fit=10), 1, seed=0)
    drive(strategy, rounds=1, batch=4)
    events = surrogate_events(strategy)
    assert events and events[0]["state"] == "exploring"
    assert "fits from 10" in events[-1]["reason"]
    proposals = strategy.ask(3)
    assert len(proposals) == 3 and all(p.origin == "random" for p in proposals)
    assert all("surrogate" not in p.data for p in proposals)


def test_constant_targets_mean_exploration_not_an_error():
    strategy = create_strategy("surrogate", SPACE, settings(min_fit=4), 2, seed=0)
    drive(strategy, rounds=4, batch=4, objective=lambda graph: (0.5, 0.5))
    strategy.drain_events()
    proposals = strategy.ask(4)
    assert len(proposals) == 4
    (event,) = surrogate_events(strategy)
    assert event["state"] == "exploring" and "constant" in event["reason"]


def test_it_learns_the_objective_and_proposes_better_than_random():
    surrogate = create_strategy("surrogate", SPACE, settings(screen=300), 1, seed=5)
    random = create_strategy("random", SPACE, StrategySpec(name="random"), 1, seed=5)
    found = {}
    for name, strategy in (("surrogate", surrogate), ("random", random)):
        members = drive(strategy, rounds=12, batch=4)
        values = [m.values[0] for m in members if m.values is not None]
        found[name] = sorted(values)[:5]
    events = [e for e in surrogate_events(surrogate) if e["state"] == "fitted"]
    assert events, "the surrogate never fitted"
    last = events[-1]["objectives"][0]
    assert last["loo"][last["chosen"]]["spearman"] > 0.5, last
    # the five best functions it found are closer to the target than random search's five
    assert np.mean(found["surrogate"]) < np.mean(found["random"]), found
    later = [p for p in surrogate.ask(4) if "surrogate" in p.data]
    assert later and all(len(p.data["surrogate"]["mean"]) == 1 for p in later)


def test_a_rebuilt_surrogate_asks_what_the_original_would():
    original = create_strategy("surrogate", SPACE, settings(screen=200), 1, seed=3)
    members = drive(original, rounds=6, batch=4)
    assert [e for e in surrogate_events(original) if e["state"] == "fitted"]
    rebuilt = create_strategy("surrogate", SPACE, settings(screen=200), 1, seed=3)
    rebuilt.rebuild(copy.deepcopy(members)[::-1])
    asked = original.ask(5)
    again = rebuilt.ask(5)
    assert [p.with_fingerprint().fingerprint for p in asked] == [
        p.with_fingerprint().fingerprint for p in again
    ]
    assert [p.data for p in asked] == [p.data for p in again]


def test_the_models_shape_is_refitted_only_at_the_doubling_schedule():
    """Between schedule points a refit keeps the GP kernels (no hyperparameter search) and
    only conditions on the new members; at the next point the shape is fitted again on the
    first members in proposal order."""
    from layerforge.search.strategies.surrogate import shape_point

    assert [shape_point(n, 8) for n in (8, 9, 15, 16, 31, 32, 100)] == [8, 8, 8, 16, 16, 32, 64]
    strategy = create_strategy("surrogate", SPACE, settings(screen=50, min_fit=8), 1, seed=1)
    drive(strategy, rounds=3, batch=4)  # 12 proposals, some rejected
    evaluated = len(strategy.evaluated())
    assert 8 <= evaluated < 16, evaluated
    fit = strategy.fitted()
    assert fit is not None
    shape, kernel = strategy._shape, fit.predictors[0].model.kernel_
    assert fit.quality["shape_members"] == 8 and fit.quality["members"] == evaluated
    members = drive(strategy, rounds=1, batch=1, start_id=100)
    if len(strategy.evaluated()) < 16 and members[0].values is not None:
        refit = strategy.fitted()
        assert refit is not fit and strategy._shape is shape
        # the same hyperparameters, conditioned on one more member
        assert np.array_equal(refit.predictors[0].model.kernel_.theta, kernel.theta)
        assert refit.quality["members"] == evaluated + 1
    drive(strategy, rounds=6, batch=4, start_id=200)
    assert len(strategy.evaluated()) >= 16
    assert strategy.fitted().quality["shape_members"] == shape_point(len(strategy.evaluated()), 8)
    assert strategy._shape is not shape


@pytest.fixture
def db(database_url):
    upgrade_database(database_url)
    return database_url


def test_a_campaign_records_the_surrogates_fits_as_events(db):
    spec = validate_spec(
        {
            "name": "surrogate",
            "space": {"kind": "activation", "ops": "swish", "max_nodes": 6},
            "strategy": {"name": "surrogate", "surrogate": {"screen": 100, "min_fit": 6}},
            "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 20}],
            "budget": {"max_candidates": 40},
            "parallelism": 4,
            "fidelity": {"enabled": False},
        }
    )
    campaign_id = create_campaign(db, spec)
    status = CampaignRunner(db, campaign_id, SimulatedEvaluator(), poll_s=0.0, control_s=0.0).run()
    assert status == "completed"
    with session_scope(get_engine(db), readonly=True) as s:
        events = [e.payload for e in repo.list_events(s, campaign_id=campaign_id, kind="surrogate")]
        proposed = [
            c for c in repo.all_candidates(s, campaign_id=campaign_id)
            if "surrogate" in (c.strategy_data or {})
        ]  # fmt: skip
    assert events[0]["state"] == "exploring"
    fitted = [e for e in events if e["state"] == "fitted"]
    assert fitted and all(-1 <= o["loo"][o["chosen"]]["spearman"] <= 1 for o in
                          fitted[-1]["objectives"])  # fmt: skip
    assert proposed, "no candidate carries the surrogate's prediction"


@pytest.mark.parametrize(
    "surrogate,field",
    [
        ({"exploration": 1.5}, "strategy.surrogate.exploration"),
        ({"screen": 0}, "strategy.surrogate.screen"),
        ({"model": "forest"}, "strategy.surrogate.model"),
        ({"min_fit": 50, "max_train": 20}, "strategy.surrogate"),
        ({"kappa": -1}, "strategy.surrogate.kappa"),
        ({"scren": 10}, "strategy.surrogate.scren"),
    ],
)
def test_bad_surrogate_settings_name_the_field(surrogate, field):
    with pytest.raises(SpecError) as raised:
        validate_spec(small_spec(strategy={"name": "surrogate", "surrogate": surrogate}))
    assert any(path.startswith(field) for path, _message in raised.value.errors), raised.value


def test_bad_surrogate_settings_are_422_over_http(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        body = small_spec(strategy={"name": "surrogate", "surrogate": {"exploration": 2}})
        response = client.post(f"{API}/campaigns", json=body)
        assert response.status_code == 422, response.text
        assert "strategy.surrogate.exploration" in response.json()["error"]["message"]
        ok = client.post(f"{API}/campaigns", json=small_spec(strategy={"name": "surrogate"}))
        assert ok.status_code in (200, 201, 202), ok.text
