"""One contract suite for every strategy: valid and new proposals, failures accepted,
and a strategy rebuilt from stored members asks exactly what the original would have asked."""

from __future__ import annotations

import copy
import hashlib

import pytest

from layerforge.grammar import check_static, fingerprint, make_space, uses_statistic
from layerforge.search.spec import StrategySpec
from layerforge.search.strategies import STRATEGIES, Member, create_strategy

SPACES = {
    "activation": make_space("activation", ops="swish", max_nodes=6, max_depth=6),
    "normact": make_space("normact", ops="evonorm", max_nodes=8, max_depth=8),
}


def fake_objectives(fp: str) -> tuple[float, float] | None:
    """Deterministic outcome per function: None (a failure) for about one in five."""
    digest = hashlib.sha256(fp.encode()).digest()
    if digest[0] < 51:
        return None
    return (-(digest[1] / 255), -(digest[2] / 255))


def drive(strategy, rounds: int, batch: int, start_id: int = 1):
    """Ask, store (observe), and tell, like the campaign loop with a synchronous evaluator."""
    next_id = start_id
    members = []
    for _ in range(rounds):
        proposals = strategy.ask(batch)
        for proposal in proposals:
            proposal = proposal.with_fingerprint()
            member = Member(
                next_id,
                next_id,
                proposal.graph,
                proposal.fingerprint,
                proposal.origin,
                "running",
                None,
                proposal.parent_ids,
                dict(proposal.data),
            )
            strategy.observe(member)
            members.append(member)
            next_id += 1
        for member in members[-len(proposals) :] if proposals else []:
            values = fake_objectives(member.fingerprint)
            if values is None:
                strategy.tell(
                    member.id, error="rejected at probe: constant output", status="rejected"
                )
            else:
                strategy.tell(member.id, values)
    return members


def settings(name: str) -> StrategySpec:
    return StrategySpec(name=name, population=12, tournament=4, max_attempts=100)


@pytest.fixture(params=sorted(STRATEGIES))
def strategy_name(request) -> str:
    return request.param


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_proposals_are_valid_and_new(strategy_name: str, kind: str):
    space = SPACES[kind]
    strategy = create_strategy(strategy_name, space, settings(strategy_name), 2, seed=7)
    members = drive(strategy, rounds=8, batch=5)
    assert len(members) >= 20
    fingerprints = [m.fingerprint for m in members]
    assert len(set(fingerprints)) == len(fingerprints), "a function was proposed twice"
    for member in members:
        check_static(member.graph, space)
        assert member.graph.num_nodes <= space.max_nodes
        assert fingerprint(member.graph) == member.fingerprint


def test_a_space_that_requires_a_statistic_gets_only_layers_that_use_one(strategy_name: str):
    space = make_space("normact", ops="evonorm", max_nodes=8, max_depth=8, require_statistic=True)
    strategy = create_strategy(strategy_name, space, settings(strategy_name), 2, seed=5)
    members = drive(strategy, rounds=6, batch=5)
    assert len(members) >= 15
    for member in members:
        check_static(member.graph, space)
        assert uses_statistic(member.graph), member.graph.text


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_failures_are_accepted_and_the_search_goes_on(strategy_name: str, kind: str):
    strategy = create_strategy(strategy_name, SPACES[kind], settings(strategy_name), 2, seed=1)
    members = drive(strategy, rounds=6, batch=4)
    failed = [m for m in members if m.values is None]
    assert failed and all(m.status == "rejected" for m in failed)
    assert strategy.ask(3), "no proposals after failures"


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_rebuilt_strategy_asks_what_the_original_would(strategy_name: str, kind: str):
    space = SPACES[kind]
    original = create_strategy(strategy_name, space, settings(strategy_name), 2, seed=3)
    members = drive(original, rounds=7, batch=4)
    rebuilt = create_strategy(strategy_name, space, settings(strategy_name), 2, seed=3)
    rebuilt.rebuild(copy.deepcopy(members)[::-1])  # any storage order: rebuild sorts by seq
    asked = [p.with_fingerprint().fingerprint for p in original.ask(5)]
    assert asked == [p.with_fingerprint().fingerprint for p in rebuilt.ask(5)]
    other_seed = create_strategy(strategy_name, space, settings(strategy_name), 2, seed=4)
    other_seed.rebuild(copy.deepcopy(members))
    if asked:
        assert asked != [p.with_fingerprint().fingerprint for p in other_seed.ask(5)]


def test_same_seed_repeats_exactly(strategy_name: str):
    space = SPACES["activation"]
    runs = [
        [
            m.fingerprint
            for m in drive(
                create_strategy(strategy_name, space, settings(strategy_name), 2, seed=11), 5, 3
            )
        ]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_evolution_mutates_tournament_winners_and_ages_out_the_oldest():
    space = SPACES["activation"]
    strategy = create_strategy("evolution", space, settings("evolution"), 2, seed=5)
    members = drive(strategy, rounds=20, batch=3)
    children = [m for m in members if m.origin == "mutation"]
    assert len(children) > 20
    by_id = {m.id: m for m in members}
    assert all(by_id[m.parent_ids[0]].values is not None for m in children)
    population = strategy.population()
    assert len(population) == 12
    assert population == strategy.evaluated()[-12:]


def test_nsga2_waits_for_its_generation_then_keeps_the_best():
    space = SPACES["activation"]
    strategy = create_strategy("nsga2", space, settings("nsga2"), 2, seed=2)
    first = strategy.ask(100)
    assert len(first) == 12  # one generation
    for i, proposal in enumerate(first, start=1):
        p = proposal.with_fingerprint()
        strategy.observe(
            Member(i, i, p.graph, p.fingerprint, p.origin, "running", None, (), dict(p.data))
        )
    assert strategy.ask(4) == []  # generation 0 still running: wait
    for i in range(1, 13):
        strategy.tell(i, (-i / 12, i / 12))
    second = strategy.ask(4)
    assert second and all(p.data["generation"] == 1 for p in second)
    survivors = strategy.survivors(0)
    assert len(survivors) == 12
