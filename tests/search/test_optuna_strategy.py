"""The optuna strategy with every sampler it offers: one study told results as they arrive
(in any order), rebuilt from stored members into the same study, and spec validation."""

from __future__ import annotations

import copy
import json
import random

import optuna
import pytest

from layerforge.grammar import check_static, make_space
from layerforge.search.spec import OPTUNA_SAMPLERS, SpecError, StrategySpec
from layerforge.search.strategies import Member, create_strategy
from layerforge.search.strategies.optuna_search import SAMPLERS, build_sampler
from tests.search.test_strategies import fake_objectives

SPACES = {
    "activation": make_space("activation", ops="swish", max_nodes=6, max_depth=6),
    "normact": make_space("normact", ops="evonorm", max_nodes=8, max_depth=8),
}

SAMPLER_SETTINGS = {
    "tpe": "tpe",
    "tpe-group": {"name": "tpe", "args": {"multivariate": True, "group": True}},
    "nsga2": {"name": "nsga2", "args": {"population_size": 6}},
    "nsga3": {"name": "nsga3", "args": {"population_size": 6}},
    "gp": {"name": "gp", "args": {"n_startup_trials": 4}},
    "qmc": {"name": "qmc", "args": {"qmc_type": "halton"}},
    "random": "random",
}


def settings(sampler) -> StrategySpec:
    return StrategySpec(
        name="optuna", population=12, tournament=4, max_attempts=60, sampler=sampler
    )


def stored(data: dict) -> dict:
    """``data`` as the database gives it back (JSON: tuples become lists)."""
    return json.loads(json.dumps(data))


def drive_in_parallel(strategy, rounds: int, batch: int, rng: random.Random, in_flight: int):
    """Ask, store and tell like a campaign with ``in_flight`` evaluations running at once:
    outcomes arrive in a random order, and the last ``in_flight`` are still running."""
    members: list[Member] = []
    running: list[Member] = []
    for _ in range(rounds):
        for proposal in strategy.ask(batch):
            proposal = proposal.with_fingerprint()
            n = len(members) + 1
            member = Member(
                n, n, proposal.graph, proposal.fingerprint, proposal.origin, "running", None,
                (), stored(proposal.data),
            )  # fmt: skip
            strategy.observe(member)
            members.append(member)
            running.append(member)
        rng.shuffle(running)
        while len(running) > in_flight:
            member = running.pop()
            values = fake_objectives(member.fingerprint)
            if values is None:
                strategy.tell(member.id, error="rejected at probe", status="rejected")
            else:
                strategy.tell(member.id, values)
    return members


# The GP sampler optimizes its acquisition over every categorical choice: on the normact
# template (16 choices) that takes minutes per ask on a shared machine, so it runs on the
# activation template only.
@pytest.mark.parametrize(
    ("sampler", "kind"),
    [
        (s, k)
        for s in sorted(SAMPLER_SETTINGS)
        for k in sorted(SPACES)
        if (s, k) != ("gp", "normact")
    ],
)
def test_every_sampler_proposes_new_valid_functions_and_rebuilds_to_the_same_study(
    sampler: str, kind: str
):
    space = SPACES[kind]
    spec = settings(SAMPLER_SETTINGS[sampler])
    original = create_strategy("optuna", space, spec, 2, seed=5)
    # the GP sampler fits a Gaussian process per sample (about a second): fewer rounds
    rounds, batch = (3, 3) if sampler == "gp" else (6, 4)
    members = drive_in_parallel(original, rounds, batch, rng=random.Random(1), in_flight=3)
    assert len(members) >= rounds * batch - 4, f"{sampler} stalled after {len(members)} proposals"
    assert len({m.fingerprint for m in members}) == len(members)
    for member in members:
        check_static(member.graph, space)
    rebuilt = create_strategy("optuna", space, spec, 2, seed=5)
    rebuilt.rebuild(copy.deepcopy(members)[::-1])
    assert same_trials(original.study, rebuilt.study)
    asked = [p.with_fingerprint().fingerprint for p in original.ask(batch)]
    assert asked, f"{sampler} proposed nothing"
    assert asked == [p.with_fingerprint().fingerprint for p in rebuilt.ask(batch)]


def same_trials(study: optuna.Study, rebuilt: optuna.Study) -> bool:
    """Whether the rebuilt study holds the original's trials: same numbers, states, values,
    parameters and sampler attributes. A rejected sample is a failed trial in both, kept
    for its number; the rebuilt one has no parameters, and the original's last rejected
    samples (after its last proposal) are not stored at all."""
    ours, theirs = study.trials, rebuilt.trials
    failed = optuna.trial.TrialState.FAIL
    if len(theirs) > len(ours) or any(t.state != failed for t in ours[len(theirs) :]):
        return False
    for a, b in zip(ours, theirs):
        if a.state == b.state == failed and not b.params:
            continue
        if (a.number, a.state, a.values, a.params, a.system_attrs) != (
            b.number, b.state, b.values, b.params, b.system_attrs,
        ):  # fmt: skip
            return False
    return True


def test_the_study_is_built_once_and_told_each_outcome_as_it_arrives():
    strategy = create_strategy("optuna", SPACES["activation"], settings("tpe"), 2, seed=2)
    study = strategy.study
    members = drive_in_parallel(strategy, rounds=5, batch=4, rng=random.Random(3), in_flight=4)
    assert strategy.study is study
    states = {m.id: study.trials[strategy.trial_of[m.id]].state for m in members}
    running = [m for m in members if m.status == "running"]
    assert len(running) == 4
    assert all(states[m.id] == optuna.trial.TrialState.RUNNING for m in running)
    late = running[0]
    values = fake_objectives(late.fingerprint) or (-0.5, -0.5)
    strategy.tell(late.id, values)  # an outcome arriving after later proposals were told
    trial = study.trials[strategy.trial_of[late.id]]
    assert trial.state == optuna.trial.TrialState.COMPLETE and tuple(trial.values) == values
    for m in members:
        if m.values is not None:
            assert tuple(study.trials[strategy.trial_of[m.id]].values) == m.values


def test_gp_really_fits_a_gaussian_process():
    """After its startup trials the GP sampler samples every choice from its model (its
    relative search space), not from the independent sampler."""
    strategy = create_strategy(
        "optuna", SPACES["activation"], settings(SAMPLER_SETTINGS["gp"]), 2, seed=4
    )
    drive_in_parallel(strategy, rounds=2, batch=3, rng=random.Random(0), in_flight=0)
    sampler = build_sampler("gp", {"n_startup_trials": 4}, seed=0, population=12)
    study = strategy.study
    trial = study.ask()
    space = sampler.infer_relative_search_space(study, study._storage.get_trial(trial._trial_id))
    assert set(space) == set(strategy.distributions)
    sample = sampler.sample_relative(study, study._storage.get_trial(trial._trial_id), space)
    assert set(sample) == set(strategy.distributions)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_spec_takes_a_sampler_by_name_or_with_arguments():
    assert StrategySpec(name="optuna", sampler="nsga2").sampler.name == "nsga2"
    spec = StrategySpec(name="optuna", sampler={"name": "nsga3", "args": {"population_size": 10}})
    assert spec.sampler.args == {"population_size": 10}
    assert set(OPTUNA_SAMPLERS) == set(SAMPLERS)


@pytest.mark.parametrize(
    ("sampler", "field", "words"),
    [
        ("cmaes", "strategy.sampler.name", ["'tpe'", "'nsga3'", "'gp'", "'qmc'", "'random'"]),
        ({"name": "nsga3", "args": {"popsize": 4}}, "strategy.sampler.args", ["'popsize'", "population_size"]),
        ({"name": "tpe", "args": {"seed": 1}}, "strategy.sampler.args", ["'seed'", "campaign"]),
        ({"name": "tpe", "args": {"gamma": 1}}, "strategy.sampler.args", ["'gamma'", "Python object"]),
        ({"name": "gp", "args": {"n_startup_trials": "ten"}}, "strategy.sampler.args", ["'n_startup_trials'", "int"]),
        ({"name": "tpe", "args": {"group": True, "multivariate": False}}, "strategy.sampler.args", ["multivariate"]),
        ({"name": "qmc", "args": {"qmc_type": "lattice"}}, "strategy.sampler.args", ["lattice"]),
    ],
)  # fmt: skip
def test_bad_samplers_are_refused_naming_the_field(sampler, field: str, words: list[str]):
    from layerforge.search.spec import validate_spec

    spec = {
        "space": {"kind": "activation", "ops": "swish"},
        "proxies": [{"arch": "mlp", "dataset": "mnist1d", "steps": 10}],
        "strategy": {"name": "optuna", "sampler": sampler},
    }
    with pytest.raises(SpecError) as caught:
        validate_spec(spec)
    paths = dict(caught.value.errors)
    assert field in paths, caught.value.errors
    for word in words:
        assert word in paths[field]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"n_ei_candidates": 10**9}, ["'n_ei_candidates'", "10,000"]),
        ({"population_size": 1}, ["'population_size'", "between 2"]),
        ({"crossover_prob": float("nan")}, ["'crossover_prob'", "NaN"]),
        ({"reference_points": [[1.0]]}, ["'reference_points'", "dividing_parameter"]),
        ({"dividing_parameter": 9}, ["'dividing_parameter'", "between 1 and 4"]),
    ],
)
def test_sampler_arguments_that_would_exhaust_memory_or_break_json_are_refused(args, words):
    sampler = {"name": "nsga3" if "n_ei" not in str(args) else "tpe", "args": args}
    with pytest.raises(ValueError) as caught:
        StrategySpec(name="optuna", sampler=sampler)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("sampler", ["nsga2", "qmc", "tpe"])
def test_a_proposal_never_stored_leaves_no_trace_a_rebuild_misses(sampler: str):
    """The campaign asks for one proposal just to know whether it would get one and drops
    it; the study attributes the sampler wrote meanwhile go with the next stored proposal."""
    space = SPACES["normact"]
    spec = settings(SAMPLER_SETTINGS[sampler])
    original = create_strategy("optuna", space, spec, 2, seed=8)
    members = drive_in_parallel(original, 3, 4, random.Random(2), in_flight=0)
    assert original.ask(1)  # dropped: never observed
    rng = random.Random(4)
    for _ in range(3):
        members += drive_in_parallel_from(original, len(members), 4, rng)
    rebuilt = create_strategy("optuna", space, spec, 2, seed=8)
    rebuilt.rebuild(copy.deepcopy(members))
    assert same_trials(original.study, rebuilt.study)
    assert original.storage.get_study_system_attrs(
        original.study_id
    ) == rebuilt.storage.get_study_system_attrs(rebuilt.study_id)
    asked = [p.with_fingerprint().fingerprint for p in original.ask(4)]
    assert asked == [p.with_fingerprint().fingerprint for p in rebuilt.ask(4)]


def drive_in_parallel_from(strategy, start: int, batch: int, rng: random.Random) -> list[Member]:
    """One round of ask, store and tell (in a random order), numbering from ``start + 1``."""
    members = []
    for proposal in strategy.ask(batch):
        proposal = proposal.with_fingerprint()
        n = start + len(members) + 1
        member = Member(
            n, n, proposal.graph, proposal.fingerprint, proposal.origin, "running", None, (),
            stored(proposal.data),
        )  # fmt: skip
        strategy.observe(member)
        members.append(member)
    for member in rng.sample(members, len(members)):
        values = fake_objectives(member.fingerprint)
        if values is None:
            strategy.tell(member.id, error="rejected", status="rejected")
        else:
            strategy.tell(member.id, values)
    return members
