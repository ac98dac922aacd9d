"""The campaign loop on a real database: budget, baseline first, resume, exactly-once, spec errors."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from layerforge.search.campaign import CampaignRunner
from layerforge.search.evaluators import Outcome, SimulatedEvaluator
from layerforge.search.queries import create_campaign, pareto_of_campaign
from layerforge.search.spec import SpecError, validate_spec
from layerforge.storage import get_engine, session_scope, upgrade_database
from layerforge.storage import repository as repo
from layerforge.storage.models import Candidate, Evaluation

SPEC = {
    "name": "sim",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 6},
    "seeds": ["x * sigmoid(x)", "silu", "max(x, tanh(x))"],
    "strategy": {"name": "evolution", "population": 16, "tournament": 4},
    "proxies": [
        {"arch": "mlp", "dataset": "mnist1d", "steps": 50},
        {"arch": "mlp", "dataset": "digits", "steps": 50},
    ],
    "objectives": ["accuracy", "nodes"],
    "budget": {"max_candidates": 60},
    "parallelism": 8,
    "seed": 1,
}


@pytest.fixture
def db(database_url):
    upgrade_database(database_url)
    return database_url


class OneAtATime(SimulatedEvaluator):
    """Returns at most one outcome per poll, leaving the rest in flight (a busy cluster)."""

    def poll(self, timeout_s):
        if not self.pending:
            return []
        job = self.pending.popleft()
        rest, self.pending = self.pending, type(self.pending)([job])
        out = super().poll(0)
        self.pending = rest
        return out


def run(db, campaign_id, evaluator=None, **kwargs):
    return CampaignRunner(
        db, campaign_id, evaluator or SimulatedEvaluator(), poll_s=0.0, control_s=0.0, **kwargs
    ).run()


def test_campaign_spends_its_budget_exactly_with_the_baseline_first(db):
    campaign_id = create_campaign(db, validate_spec(SPEC))
    assert run(db, campaign_id) == "completed"
    with session_scope(get_engine(db), readonly=True) as s:
        candidates = s.scalars(
            select(Candidate).where(Candidate.campaign_id == campaign_id).order_by(Candidate.seq)
        ).all()
        assert len(candidates) == 60
        assert [c.origin for c in candidates[:4]] == ["baseline", "seed", "seed", "seed"]
        assert candidates[0].strategy_data == {"builtin": "relu"}
        # "x * sigmoid(x)" and "silu" are one function: the second is a duplicate, not evaluated
        assert (
            candidates[2].status == "duplicate" and candidates[2].duplicate_of == candidates[1].id
        )
        evaluations = s.scalar(
            select(func.count())
            .select_from(Evaluation)
            .where(Evaluation.campaign_id == campaign_id)
        )
        assert evaluations == 59
        history = repo.list_hypervolume(s, campaign_id=campaign_id)
        assert len(history) == 59
        values = [p.hypervolume for p in history]
        assert values == sorted(values) and values[-1] > 0
        assert repo.get_campaign(s, campaign_id=campaign_id).status == "completed"
        assert {"created", "status", "progress", "candidate"} <= {
            e.kind for e in repo.list_events(s, campaign_id=campaign_id, limit=10_000)
        }
    front = pareto_of_campaign(db, campaign_id)
    assert front["front"] and all(p["on_front"] for p in front["front"])
    assert len(front["front"]) + len(front["dominated"]) >= 30


def test_a_stopped_campaign_resumes_without_losing_or_repeating_work(db):
    campaign_id = create_campaign(db, validate_spec(SPEC))
    stop = threading.Event()
    seen = []

    def stop_after_20(progress):
        seen.append(progress.candidates)
        if progress.candidates >= 20:
            stop.set()

    assert (
        run(db, campaign_id, OneAtATime(), stop=stop, on_progress=stop_after_20, batch_window_s=0.0)
        == "stopped"
    )  # store each outcome as it comes
    with session_scope(get_engine(db), readonly=True) as s:
        unfinished = repo.unfinished_evaluations(s, campaign_id=campaign_id)
        assert unfinished, "the test should leave evaluations in flight"
    assert run(db, campaign_id) == "completed"
    with session_scope(get_engine(db), readonly=True) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(Candidate)
                .where(Candidate.campaign_id == campaign_id)
            )
            == 60
        )
        rows = s.execute(
            select(Evaluation.candidate_id, func.count())
            .where(Evaluation.campaign_id == campaign_id)
            .group_by(Evaluation.candidate_id)
        ).all()
        assert all(n == 1 for _, n in rows)
        assert not repo.unfinished_evaluations(s, campaign_id=campaign_id)
        statuses = repo.count_candidates(s, campaign_id=campaign_id)
        assert statuses["running"] == 0 and statuses["proposed"] == 0


def test_a_result_delivered_twice_is_stored_once(db):
    campaign_id = create_campaign(db, validate_spec(dict(SPEC, budget={"max_candidates": 5})))

    class Twice(SimulatedEvaluator):
        def poll(self, timeout_s):
            outcomes = super().poll(timeout_s)
            return outcomes + [Outcome(o.job_id, o.status, o.result) for o in outcomes]

    assert run(db, campaign_id, Twice()) == "completed"
    with session_scope(get_engine(db), readonly=True) as s:
        assert len(repo.list_hypervolume(s, campaign_id=campaign_id)) == 4  # 5 minus 1 duplicate


def test_pause_and_cancel_requests_are_honoured(db):
    campaign_id = create_campaign(db, validate_spec(SPEC))
    engine = get_engine(db)

    done = []

    def pause_at_10(progress):
        if progress.candidates >= 10 and "pause" not in done:
            done.append("pause")
            with session_scope(engine) as s:
                repo.set_campaign_status(
                    s, campaign_id=campaign_id, status="paused", expected=["running"]
                )

    assert run(db, campaign_id, on_progress=pause_at_10) == "paused"
    with session_scope(engine, readonly=True) as s:
        paused_at = sum(repo.count_candidates(s, campaign_id=campaign_id).values())
        assert 10 <= paused_at < 60
    assert run(db, campaign_id) == "paused"  # a paused campaign does not run
    with session_scope(engine) as s:
        repo.set_campaign_status(s, campaign_id=campaign_id, status="running", expected=["paused"])

    def cancel_at_30(progress):
        if progress.candidates >= 30 and "cancel" not in done:
            done.append("cancel")
            with session_scope(engine) as s:
                repo.set_campaign_status(
                    s, campaign_id=campaign_id, status="cancelled", expected=["running"]
                )

    assert run(db, campaign_id, on_progress=cancel_at_30) == "cancelled"
    with session_scope(engine, readonly=True) as s:
        assert 30 <= sum(repo.count_candidates(s, campaign_id=campaign_id).values()) < 60
        assert not repo.unfinished_evaluations(s, campaign_id=campaign_id)


def test_a_live_owner_keeps_its_campaign(db):
    from layerforge.storage import ConflictError

    campaign_id = create_campaign(db, validate_spec(SPEC))
    with session_scope(get_engine(db)) as s:
        repo.touch_campaign(s, campaign_id=campaign_id, owner="otherhost:1:abc")
    with pytest.raises(ConflictError, match="otherhost"):
        run(db, campaign_id)
    assert run(db, campaign_id, takeover=True) == "completed"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"strategy": {"name": "annealing"}}, "strategy.name"),
        ({"objectives": ["accuracy", "beauty"]}, "objectives"),
        ({"proxies": [{"arch": "vgg", "dataset": "digits"}]}, "proxies"),
        ({"proxies": [{"arch": "mlp", "dataset": "imagenet"}]}, "proxies"),
        ({"budget": {"max_candidates": 0}}, "budget.max_candidates"),
        ({"seeds": ["x +* 2"]}, "seeds[0]"),
        ({"seeds": ["__import__('os').system('id')"]}, "seeds[0]"),
        ({"space": {"kind": "activation", "ops": "nonsense"}}, "space"),
        ({"colour": "blue"}, "colour"),
        ({"parallelism": 0}, "parallelism"),
    ],
)
def test_bad_specs_name_the_field_and_store_nothing(db, change, field):
    with pytest.raises(SpecError) as info:
        validate_spec({**SPEC, **change})
    assert field in str(info.value)
    with session_scope(get_engine(db), readonly=True) as s:
        assert repo.list_campaigns(s) == []


def test_transfer_stage_reevaluates_the_top_k_with_several_seeds(db):
    from layerforge.search.queries import transfer_ranking

    spec = validate_spec(
        dict(
            SPEC,
            budget={"max_candidates": 20},
            transfer={
                "top_k": 3,
                "seeds": 4,
                "proxies": [{"arch": "mlp", "dataset": "synthetic", "steps": 100}],
            },
        )
    )
    campaign_id = create_campaign(db, spec)
    assert run(db, campaign_id) == "completed"
    with session_scope(get_engine(db), readonly=True) as s:
        transfer = s.scalars(
            select(Evaluation).where(
                Evaluation.campaign_id == campaign_id, Evaluation.kind == "transfer"
            )
        ).all()
        rerun = {e.candidate_id for e in transfer}
        baseline_id = s.scalars(
            select(Candidate.id).where(
                Candidate.campaign_id == campaign_id, Candidate.origin == "baseline"
            )
        ).one()
        # the top 3, and the baseline beside them (winners are judged against it)
        assert baseline_id in rerun and len(rerun) in (3, 4)
        assert len(transfer) == 4 * len(rerun) and all(e.status == "completed" for e in transfer)
        assert sorted({e.seed for e in transfer}) == [0, 1, 2, 3]
        # each run trains the held-out proxy at its learning rate and at half of it
        assert all(len(e.result["proxies"]) == 2 for e in transfer)
    ranking = transfer_ranking(db, campaign_id)
    rows = [r for r in ranking if not r.get("control")]
    assert {r["candidate_id"] for r in rows} == rerun and all(r["runs"] == 4 for r in rows)
    assert [r["mean"] for r in rows] == sorted((r["mean"] for r in rows), reverse=True)
    assert any(r["std"] > 0 for r in rows)  # seeds really differ
    assert [p["name"] for p in rows[0]["proxies"]] == [
        "mlp/synthetic@lr=0.1",
        "mlp/synthetic@lr=0.05",
    ]
    for r in rows:
        if r["candidate_id"] == baseline_id:
            assert r["origin"] == "baseline" and r["beats_baseline"] is None
        else:
            assert r["beats_baseline"] in (True, False) and len(r["margins"]) == 2
    controls = [r for r in ranking if r.get("control")]
    assert [c["text"] for c in controls] == ["2 * max(x, 0)", "3 * max(x, 0)"]
    assert all(c["runs"] == 4 for c in controls)


def test_optuna_with_its_nsga2_sampler_runs_a_campaign(db):
    spec = validate_spec(
        dict(
            SPEC, strategy={"name": "optuna", "sampler": "nsga2", "population": 8, "tournament": 2}
        )
    )
    campaign_id = create_campaign(db, spec)
    assert run(db, campaign_id) == "completed"
    with session_scope(get_engine(db), readonly=True) as s:
        origins = [
            c.origin
            for c in s.scalars(select(Candidate).where(Candidate.campaign_id == campaign_id))
        ]
        assert origins.count("optuna") == 56


def test_every_rejection_setting_of_the_spec_reaches_the_workers():
    """Each threshold of the spec's ``rejection`` section arrives in the workers' config
    under its own name (a new spec field cannot be silently ignored)."""
    from layerforge.search.campaign import worker_rejection_config
    from layerforge.workers.rejection import RejectionConfig

    custom = {
        "probe_batch": 9,
        "probe_channels": 5,
        "probe_size": 4,
        "probe_scales": [0.5, 4.0],
        "probe_max_output": 99.0,
        "probe_max_grad": 98.0,
        "probe_min_range": 1e-5,
        "probe_min_nonlinearity": 2e-4,
        "stability_steps": 3,
        "stability_step_size": 0.2,
        "stability_batch": 12,
        "stability_slope_near": 3.0,
        "stability_slope_far": 30.0,
        "stability_max_slope_growth": 1.25,
        "quality_steps": 37,
        "quality_min_accuracy": 0.31,
        "stability_max_grad_norm": 77.0,
        "trainability_steps": 7,
        "trainability_min_logit_spread": 0.002,
        "trainability_max_logit": 55.0,
        "depth_layers": 4,
        "depth_width": 48,
        "depth_steps": 60,
    }
    spec = validate_spec(dict(SPEC, rejection={**custom, "stages": ["static", "quality"]}))
    assert set(custom) == set(spec.rejection.model_dump()) - {"stages"}
    config = RejectionConfig.from_dict(worker_rejection_config(spec))
    assert config.stages == ["static", "quality", "full"]
    for name, value in custom.items():
        assert getattr(config, name) == value, name


def test_simulated_evaluations_take_their_seconds():
    """``seconds`` holds each simulated job until it is due; poll waits for the next one."""
    from layerforge.grammar import parse

    payload = {
        "graph": parse("x * sigmoid(x)", "activation").to_dict(),
        "proxies": [{"arch": "mlp", "dataset": "digits"}],
        "rejection": {"stages": []},
    }
    slow = SimulatedEvaluator(seconds=3600)
    slow.submit("a", payload)
    assert slow.poll(0) == [] and slow.in_flight() == 1
    quick = SimulatedEvaluator(seconds=0.05)
    quick.submit("b", payload)
    outcomes = []
    while not outcomes:
        outcomes = quick.poll(1.0)
    assert [(o.job_id, o.status, o.result["status"]) for o in outcomes] == [
        ("b", "ok", "completed")
    ]
    assert quick.in_flight() == 0


def test_simulated_results_carry_the_formula_only_when_asked_to_describe():
    """Real workers add ``latex`` to each result; the simulation does so with ``describe``."""
    from layerforge.grammar import formula_latex, parse

    graph = parse("x * sigmoid(x)", "activation")
    payload = {
        "graph": graph.to_dict(),
        "proxies": [{"arch": "mlp", "dataset": "digits"}],
        "rejection": {"stages": []},
    }
    plain, described = SimulatedEvaluator(), SimulatedEvaluator(describe=True)
    for evaluator in (plain, described):
        evaluator.submit("a", payload)
    assert "latex" not in plain.poll(0)[0].result
    assert described.poll(0)[0].result["latex"] == formula_latex(graph)


def test_outcomes_that_trickle_in_are_stored_in_batches(db):
    """A cluster's results arrive one at a time; the runner collects them for its batch window
    instead of writing (and refilling) once per result."""
    campaign_id = create_campaign(
        db, validate_spec({**SPEC, "parallelism": 8, "budget": {"max_candidates": 40}})
    )
    sizes = []

    runner = CampaignRunner(
        db, campaign_id, OneAtATime(), poll_s=0.0, control_s=0.0, batch_window_s=1.0
    )
    store = runner._store
    # the search's results only: the proxy-fidelity panel's twelve arrive beside them
    runner._store = lambda outcomes: (
        sizes.append(len([o for o in outcomes if not o.job_id.startswith("fidelity:")])),
        store(outcomes),
    )[1]
    assert runner.run() == "completed"
    sizes = [n for n in sizes if n]
    assert max(sizes) == 8 and len(sizes) <= 6  # a whole parallelism's worth at once
    with session_scope(get_engine(db), readonly=True) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(Candidate)
                .where(Candidate.campaign_id == campaign_id)
            )
            == 40
        )


@pytest.mark.parametrize("parallelism", [1, 4])
def test_a_seed_equal_to_the_baseline_is_its_duplicate_and_shown_once(db, parallelism):
    spec = {**SPEC, "seeds": ["relu", "x * sigmoid(x)"], "budget": {"max_candidates": 10}}
    campaign_id = create_campaign(db, validate_spec({**spec, "parallelism": parallelism}))
    assert run(db, campaign_id, SimulatedEvaluator(reject_fraction=0.0)) == "completed"
    with session_scope(get_engine(db), readonly=True) as s:
        rows = repo.list_candidates(s, campaign_id=campaign_id, limit=100)
        baseline, seed = rows[0], rows[1]
        assert (baseline.origin, seed.origin) == ("baseline", "seed")
        assert seed.status == "duplicate" and seed.duplicate_of == baseline.id
    pareto = pareto_of_campaign(db, campaign_id)
    shown = [p["candidate_id"] for p in pareto["front"] + pareto["dominated"]]
    assert baseline.id in shown and seed.id not in shown
    assert len(shown) == len(set(shown)) == 9


def test_the_simulated_evaluator_scores_every_proxy_of_a_32_proxy_spec(db):
    # sha256 gives 32 bytes and byte 0 is the rejection draw: 32 proxies read past its end
    proxies = [{"arch": "mlp", "dataset": "mnist1d", "steps": 10 + i} for i in range(32)]
    spec = {
        **SPEC,
        "proxies": proxies,
        "budget": {"max_candidates": 8},
        "rejection": {"stages": []},
    }
    campaign_id = create_campaign(db, validate_spec(spec))
    assert run(db, campaign_id) == "completed"
    with session_scope(get_engine(db), readonly=True) as s:
        evaluations = s.scalars(
            select(Evaluation).where(Evaluation.campaign_id == campaign_id)
        ).all()
        assert evaluations
    evaluator = SimulatedEvaluator(reject_fraction=0.0)
    from layerforge.grammar import parse

    payload = {"graph": parse("x * sigmoid(x)", "activation").to_dict(), "proxies": proxies * 2}
    evaluator.submit("j", payload)
    (outcome,) = evaluator.poll(0)
    scores = [p["val_accuracy"] for p in outcome.result["proxies"]]
    assert len(scores) == 64 and all(0.1 <= v <= 1.0 for v in scores)
