"""Successive-halving promotion: the rung decisions, the spec's settings (422 naming the
field over HTTP), and real campaigns (digits, tiny MLP) on SQLite and PostgreSQL with the
local evaluator and the Ray pool: stopped candidates keep their rung and partial accuracy,
promoted ones trained their full steps once, the budget is exact."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient
from torch.optim.optimizer import register_optimizer_step_post_hook

from layerforge.search.campaign import CampaignRunner
from layerforge.search.evaluators import LocalEvaluator, SimulatedEvaluator
from layerforge.search.promotion import Ladder
from layerforge.search.queries import create_campaign
from layerforge.search.spec import SpecError, validate_spec
from layerforge.storage import get_engine, session_scope, upgrade_database
from layerforge.storage import repository as repo
from layerforge.workers.jobs import EvaluationJob, EvaluationResult
from tests.api.helpers import API, make_app

STEPS = 60
RUNGS = [20, 40]
SPEC = {
    "name": "halving",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4, "max_depth": 4},
    "strategy": {"name": "random"},
    "proxies": [{"arch": "mlp", "dataset": "digits", "steps": STEPS, "batch_size": 32}],
    # no trainability or quality stage: every training step is the full run's, so the steps
    # counted below are exactly what the rungs let each candidate train
    "rejection": {"stages": ["static", "probe", "duplicate"]},
    "budget": {"max_candidates": 8},
    "promotion": {"rungs": RUNGS, "fraction": 0.5},
    "fidelity": {"enabled": False},
    "parallelism": 2,
    "seed": 3,
}


# ---------------------------------------------------------------- the decisions
def _arrive(ladder: Ladder, job_id: str, rung: int, *accuracy: float):
    proxies = [{"val_accuracy": a} for a in accuracy]
    outcome = EvaluationResult.from_worker(
        job_id, {"status": "rung", "rung": rung, "proxies": proxies, "checkpoint": b"c"}
    )
    return ladder.arrive(job_id, int(job_id), EvaluationJob(graph={"builtin": "relu"}), outcome)


def test_a_rung_waits_for_its_quorum_then_keeps_its_top_fraction():
    ladder = Ladder([20, 40], fraction=0.5)
    assert ladder.quorum == 2 and ladder.first_rung() == 20 and ladder.next_rung(20) == 40
    assert ladder.next_rung(40) is None
    _arrive(ladder, "1", 20, 0.6)
    assert ladder.decide() == []  # one candidate cannot be ranked
    _arrive(ladder, "2", 20, 0.8)
    assert [(h.job_id, keep) for h, keep in ladder.decide()] == [("1", False), ("2", True)]
    _arrive(ladder, "3", 20, 0.7)  # 2nd of 3: the top half of 3 is 1 candidate
    assert [(h.job_id, keep) for h, keep in ladder.decide()] == [("3", False)]
    _arrive(ladder, "4", 20, 0.9)
    assert [(h.job_id, keep) for h, keep in ladder.decide()] == [("4", True)]
    _arrive(ladder, "5", 40, 0.1)
    assert ladder.decide() == [] and ladder.held
    assert [(h.job_id, keep) for h, keep in ladder.decide(force=True)] == [("5", True)]


def test_the_floor_continues_at_once_and_history_counts():
    ladder = Ladder([20], fraction=0.25, floor=0.5)
    ladder.remember([{"step": 20, "accuracy": [0.9, 0.7]}, {"step": 40, "accuracy": [1.0]}])
    assert ladder.scores == {20: [(0.9, 0.7)], 40: [(1.0,)]}
    _arrive(ladder, "1", 20, 0.55)
    assert [(h.job_id, keep) for h, keep in ladder.decide()] == [("1", True)]
    _arrive(ladder, "2", 20, 0.2)
    assert ladder.decide() == []  # under the floor, 2 of a quorum of 4
    assert [keep for _, keep in ladder.decide(force=True)] == [False]


def test_the_best_on_any_proxy_continues():
    ladder = Ladder([20], fraction=0.5)
    _arrive(ladder, "1", 20, 0.9, 0.1)  # the best on the first proxy, the worst mean
    _arrive(ladder, "2", 20, 0.5, 0.6)
    _arrive(ladder, "3", 20, 0.4, 0.8)  # the best on the second proxy
    _arrive(ladder, "4", 20, 0.6, 0.7)  # second on both
    decisions = {h.job_id: keep for h, keep in ladder.decide()}
    # the top half of 4 is 2 per proxy: {1, 4} on the first, {3, 4} on the second
    assert decisions == {"1": True, "2": False, "3": True, "4": True}


# ---------------------------------------------------------------- the spec
BAD_PROMOTIONS = [
    ({"rungs": [40, 20]}, "promotion.rungs", "increasing"),
    ({"rungs": [20, 20]}, "promotion.rungs", "increasing"),
    ({"rungs": [20, STEPS + 1]}, "promotion.rungs", "exceeds the full run"),
    ({"rungs": [0]}, "promotion.rungs", ">= 1"),
    ({"rungs": [20], "fraction": 1.0}, "promotion.fraction", "less than 1"),
    ({"rungs": [20], "fraction": 0.0}, "promotion.fraction", "greater than 0"),
    ({"rungs": [20], "floor": 1.5}, "promotion.floor", "less than or equal to 1"),
    ({"rungs": [20], "fractoin": 0.5}, "promotion.fractoin", "fraction"),
]


@pytest.mark.parametrize("promotion,field,text", BAD_PROMOTIONS)
def test_bad_promotion_settings_name_the_field(promotion, field, text):
    with pytest.raises(SpecError) as err:
        validate_spec({**SPEC, "promotion": promotion})
    message = str(err.value)
    assert field in message and text in message, message


def test_promotion_is_off_by_default_and_rungs_start_at_the_quality_stage():
    assert validate_spec({k: v for k, v in SPEC.items() if k != "promotion"}).promotion.rungs == []
    with pytest.raises(SpecError, match="before the quality stage's 30 steps"):
        validate_spec({**SPEC, "rejection": {"quality_steps": 30}, "promotion": {"rungs": [20]}})


def test_bad_promotion_is_a_422_over_http(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        for promotion, field, text in BAD_PROMOTIONS:
            response = client.post(f"{API}/campaigns", json={**SPEC, "promotion": promotion})
            assert response.status_code == 422, response.text[:300]
            message = response.json()["error"]["message"]
            assert field in message and text in message, message
        accepted = client.post(f"{API}/campaigns", json=SPEC)
        assert accepted.status_code == 202, accepted.text[:300]


# ---------------------------------------------------------------- real campaigns
class StepCounter:
    """Counts every optimizer step taken in this process (torch's own step hook)."""

    def __init__(self):
        self.steps = 0
        self._handle = register_optimizer_step_post_hook(self._count)

    def _count(self, *_args):
        self.steps += 1

    def close(self):
        self._handle.remove()


def _stored(url: str, campaign_id: int):
    with session_scope(get_engine(url), readonly=True) as s:
        candidates = repo.all_candidates(s, campaign_id=campaign_id)
        results = {
            cid: (status, result)
            for cid, status, result in repo.evaluation_results(
                s,
                campaign_id=campaign_id,
                kind="search",
                statuses=("completed", "stopped", "failed", "timeout"),
            )
        }
        counts = repo.count_evaluations(s, campaign_id=campaign_id)
    return candidates, results, counts


def _check_campaign(url: str, campaign_id: int, max_candidates: int) -> int:
    """The campaign's invariants; returns the training steps its rows account for."""
    candidates, results, counts = _stored(url, campaign_id)
    assert len(candidates) == max_candidates  # the budget is exact
    assert sum(counts.values()) == max_candidates  # one search evaluation each, none redone
    accounted = 0
    statuses = {c.status for c in candidates}
    assert "stopped" in statuses and "completed" in statuses, statuses
    for c in candidates:
        status, result = results.get(c.id, (None, {}))
        if c.status == "stopped":
            assert status == "stopped"
            assert result["status"] == "rung" and result["rung"] in RUNGS
            (proxy,) = result["proxies"]
            assert proxy["steps"] == result["rung"] and 0 <= proxy["val_accuracy"] <= 1
            assert [r["step"] for r in result["rungs"]] == RUNGS[: RUNGS.index(result["rung"]) + 1]
            accounted += result["rung"]
        elif c.status == "completed":
            assert status == "completed"
            assert [r["step"] for r in result["rungs"]] == RUNGS  # judged at every rung
            (proxy,) = result["proxies"]
            assert proxy["steps"] == proxy["planned_steps"] == STEPS
            assert "checkpoint" not in result
            accounted += STEPS
        else:  # rejected on the way (a diverged run): its steps are in its result too
            assert c.status == "rejected", (c.text, c.status, result)
            accounted += sum(p.get("steps", 0) for p in result.get("proxies") or [])
    return accounted


@pytest.mark.slow
def test_a_promoted_campaign_trains_each_step_once(database_url):
    upgrade_database(database_url)
    campaign_id = create_campaign(database_url, validate_spec(SPEC))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    counter = StepCounter()
    try:
        status = CampaignRunner(database_url, campaign_id, LocalEvaluator(), poll_s=0.0).run()
    finally:
        counter.close()
        torch.set_num_threads(threads)
    assert status == "completed"
    accounted = _check_campaign(database_url, campaign_id, SPEC["budget"]["max_candidates"])
    # every step trained is a step of a stored run: nothing was retrained after a rung
    assert counter.steps == accounted


@pytest.mark.slow
def test_a_promoted_campaign_on_the_ray_pool(tmp_path, ray_session):
    from layerforge.search.evaluators import RayEvaluator

    url = f"sqlite:///{tmp_path / 'ray.db'}"
    upgrade_database(url)
    campaign_id = create_campaign(url, validate_spec(SPEC))
    evaluator = RayEvaluator(num_actors=2, num_cpus=1, task_timeout_s=300)
    try:
        assert CampaignRunner(url, campaign_id, evaluator, poll_s=0.1).run() == "completed"
    finally:
        evaluator.shutdown()
    _check_campaign(url, campaign_id, SPEC["budget"]["max_candidates"])
    _, results, _ = _stored(url, campaign_id)
    # every stored verdict came from a pool actor (continuations included: the checkpoint
    # travels with the job, so whichever actor is free continues the run)
    assert all(r["node"]["actor_id"].startswith("actor-") for _, r in results.values())


def test_simulated_campaign_with_every_strategy_stops_some_and_keeps_the_budget(tmp_path):
    for name in ("random", "evolution", "nsga2", "optuna"):
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        upgrade_database(url)
        spec = {
            **SPEC,
            "strategy": {"name": name},
            "budget": {"max_candidates": 24},
            "rejection": {"quality_steps": 10},
        }
        campaign_id = create_campaign(url, validate_spec(spec))
        runner = CampaignRunner(url, campaign_id, SimulatedEvaluator(reject_fraction=0.0))
        assert runner.run() == "completed"
        candidates, results, _ = _stored(url, campaign_id)
        assert len(candidates) == 24
        stopped = [c for c in candidates if c.status == "stopped"]
        assert stopped and all(results[c.id][1]["rung"] in RUNGS for c in stopped), name
        # the strategy saw the stopped candidates' partial values
        assert all(runner.state.strategy.members[c.id].values is not None for c in stopped)
        assert not runner.state.ladder.held


@pytest.mark.slow
def test_cancelling_a_promoted_campaign_stops_within_5_seconds(tmp_path):
    url = f"sqlite:///{tmp_path / 'cancel.db'}"
    upgrade_database(url)
    spec = {
        **SPEC,
        "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 200_000, "batch_size": 32}],
        "promotion": {"rungs": [20, 100_000]},
        "budget": {"max_candidates": 50},
    }
    campaign_id = create_campaign(url, validate_spec(spec))
    runner = CampaignRunner(url, campaign_id, LocalEvaluator(), poll_s=0.0)
    ended: list[str] = []
    thread = threading.Thread(target=lambda: ended.append(runner.run()))
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until a run was promoted past its first rung
        _, results, _ = _stored(url, campaign_id)
        if any(s == "stopped" for s, _ in results.values()):
            break
        time.sleep(0.2)
    with session_scope(get_engine(url)) as s:
        repo.set_campaign_status(s, campaign_id=campaign_id, status="cancelled")
    cancelled_at = time.monotonic()
    thread.join(timeout=30)
    assert not thread.is_alive() and ended == ["cancelled"]
    assert time.monotonic() - cancelled_at < 5
    candidates, _, counts = _stored(url, campaign_id)
    assert not {"running", "proposed"} & {c.status for c in candidates}
    assert counts.get("running", 0) == 0 and not runner.state.ladder.held


# ---------------------------------------------------------------- evaluators
def test_the_cache_keeps_final_results_not_rungs():
    from layerforge.grammar import get_builtin
    from layerforge.search.evaluators import CachingEvaluator

    job = EvaluationJob(
        graph=get_builtin("silu").to_dict(),
        proxies=[{"arch": "mlp", "dataset": "digits", "steps": 60}],
        rejection={"stages": ["full"]},
        rung=20,
    )
    cache = CachingEvaluator(SimulatedEvaluator(reject_fraction=0.0))
    cache.submit("1", job)
    (first,) = cache.poll(0.0)
    assert first.at_rung and first.result["rung"] == 20 and not cache.cache
    cache.submit("1", job.continuation(first.checkpoint, None))
    (final,) = cache.poll(0.0)
    assert final.verdict == "completed" and [r["step"] for r in final.result["rungs"]] == [20]
    assert len(cache.cache) == 1
    # the same function again: its final result is known, no rung needs training
    cache.submit("2", job)
    (again,) = cache.poll(0.0)
    assert again.worker == "cache" and again.verdict == "completed" and cache.hits == 1


def test_a_second_runner_rebuilds_the_rungs_and_the_stopped_values(tmp_path):
    from layerforge.storage import CampaignStatus

    url = f"sqlite:///{tmp_path / 'again.db'}"
    upgrade_database(url)
    spec = {**SPEC, "budget": {"max_candidates": 16}, "rejection": {"quality_steps": 10}}
    campaign_id = create_campaign(url, validate_spec(spec))
    first = CampaignRunner(url, campaign_id, SimulatedEvaluator(reject_fraction=0.0))
    assert first.run() == CampaignStatus.COMPLETED
    with session_scope(get_engine(url)) as s:  # reopen it so that a second runner claims it
        repo.set_campaign_status(s, campaign_id=campaign_id, status=CampaignStatus.RUNNING)
    second = CampaignRunner(url, campaign_id, SimulatedEvaluator(reject_fraction=0.0))
    assert second.run() == CampaignStatus.COMPLETED
    assert {r: sorted(v) for r, v in second.state.ladder.scores.items()} == {
        r: sorted(v) for r, v in first.state.ladder.scores.items()
    }
    for cid, member in first.state.strategy.members.items():
        assert second.state.strategy.members[cid].values == member.values
        assert second.state.strategy.members[cid].status == member.status
