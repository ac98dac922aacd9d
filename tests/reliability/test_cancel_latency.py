"""Cancel takes effect within 5 s whatever the campaign is doing, measured over HTTP.

The service (uvicorn on a free port, in this process so that the Ray case can use the test
session's Ray) runs one campaign; the test waits until the campaign is in the middle of the
slow part (a training step of several hundred ms with the local evaluator, a training task
on a Ray actor, an ask of tens of thousands of proposals), POSTs ``/cancel`` and measures
how long until the campaign reads ``cancelled`` with no evaluation queued or running and no
candidate proposed or running. Figures go to docs/RELIABILITY.md ("Campaign lifecycle").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from layerforge.api.app import create_app
from layerforge.api.settings import load_settings
from layerforge.grammar import get_builtin
from layerforge.search.evaluators import evaluate_payload
from layerforge.search.spec import CampaignSpec
from layerforge.storage import get_engine, session_scope
from layerforge.storage import repository as repo
from layerforge.storage.models import Evaluation
from tests.reliability.helpers import API, TINY_REAL_SPEC, free_port, submit

CANCEL_WITHIN_S = 5.0

# An MLP of three hidden layers of 512 (scale 1) on batches of 1024: a training step takes
# about 0.4 s on this loaded 2-core CPU (a usual proxy step takes about 1 ms), so the
# baseline's 5000 steps would train for half an hour.
LONG_STEPS_SPEC = {
    **TINY_REAL_SPEC,
    "name": "long steps",
    "proxies": [
        {"arch": "mlp", "dataset": "digits", "steps": 5000, "batch_size": 1024, "scale": 1.0}
    ],
    "rejection": {"quality_steps": 4000, "quality_min_accuracy": 0.1},
}


@contextmanager
def service(database_url: str, **settings) -> Iterator[tuple[str, object]]:
    """The API with its controller, served by uvicorn on a free port in a thread."""
    port = free_port()
    app = create_app(
        load_settings(database_url=database_url, api_token=None, port=port, **settings)
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(90)
        assert not thread.is_alive(), "the service did not stop"


def in_flight(url: str, campaign_id: int) -> dict[str, int]:
    """Evaluations queued/running and candidates proposed/running, read from the database."""
    with session_scope(get_engine(url), readonly=True) as s:
        evaluations = s.execute(
            select(Evaluation.status, func.count())
            .where(Evaluation.campaign_id == campaign_id)
            .group_by(Evaluation.status)
        ).all()
        candidates = repo.count_candidates(s, campaign_id=campaign_id)
    counts = {f"evaluation {status}": int(n) for status, n in evaluations}
    counts.update({f"candidate {status}": int(n) for status, n in candidates.items()})
    return counts


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.05)


def cancel_and_time(base: str, url: str, campaign_id: int) -> tuple[float, float]:
    """POST /cancel; returns when it was sent and the seconds until the campaign read
    cancelled over HTTP with nothing left in flight (asserted within
    :data:`CANCEL_WITHIN_S`)."""
    started = time.monotonic()
    response = httpx.post(f"{base}{API}/campaigns/{campaign_id}/cancel", timeout=10)
    assert response.status_code == 200, response.text
    while True:
        body = httpx.get(f"{base}{API}/campaigns/{campaign_id}", timeout=10).json()
        loose = {
            **{
                f"candidate {k}": v
                for k, v in body["counts"].items()
                if k in ("proposed", "running")
            },
            **{
                f"evaluation {k}": v
                for k, v in body["evaluations"].items()
                if k in ("queued", "running")
            },
        }
        elapsed = time.monotonic() - started
        if body["status"] == "cancelled" and not any(loose.values()):
            assert elapsed < CANCEL_WITHIN_S, f"closed only after {elapsed:.1f} s"
            break
        assert elapsed < CANCEL_WITHIN_S, f"after {elapsed:.1f} s: {body['status']}, {loose}"
        time.sleep(0.05)
    counts = in_flight(url, campaign_id)  # the database agrees
    for key in (
        "evaluation queued",
        "evaluation running",
        "candidate proposed",
        "candidate running",
    ):
        assert counts.get(key, 0) == 0, counts
    return started, elapsed


def runner_leaves(app, campaign_id: int, started: float) -> float:
    """Seconds from the cancel until the campaign's runner thread ended (its training or
    ask really stopped), asserted within :data:`CANCEL_WITHIN_S`."""
    wait_for(lambda: campaign_id not in app.state.manager.active(), 30, "the runner to leave")
    seconds = time.monotonic() - started
    assert seconds < CANCEL_WITHIN_S, f"the runner left only after {seconds:.1f} s"
    return seconds


def warm_up_training() -> None:
    """Train a few steps in this process first, so that torch, the datasets and the
    rejection protocol are imported: a cancel in the middle of a cold process's first
    imports only stops the job at the first training step after them (about 9 s here)."""
    result = evaluate_payload(
        {
            "graph": get_builtin("relu").to_dict(),
            "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 2}],
            "rejection": {"stages": ["full"], "measure_costs": False},
            "seed": 0,
        }
    )
    assert result["status"] == "completed", result


@pytest.mark.slow
def test_cancel_stops_the_local_evaluator_mid_training_within_5_s(database_url, capsys):
    warm_up_training()
    with service(database_url, evaluator="local", device="cpu") as (base, app):
        campaign_id = submit(base, LONG_STEPS_SPEC)
        wait_for(
            lambda: in_flight(database_url, campaign_id).get("evaluation running", 0) > 0,
            60,
            "an evaluation to start",
        )
        time.sleep(3.0)  # well into the baseline's training: 5000 steps of several 100 ms
        assert "evaluation completed" not in in_flight(database_url, campaign_id)

        started, seconds = cancel_and_time(base, database_url, campaign_id)

        left = runner_leaves(app, campaign_id, started)
        counts = in_flight(database_url, campaign_id)
        assert counts.get("evaluation cancelled", 0) >= 1, counts
        assert "evaluation completed" not in counts  # the run was stopped, not finished
    with capsys.disabled():
        print(f"\n[cancel] local evaluator mid-training: closed {seconds:.2f} s, left {left:.2f} s")


@pytest.mark.slow
def test_cancel_kills_the_ray_task_mid_training_within_5_s(ray_session, database_url, capsys):
    with service(database_url, evaluator="ray", workers=2, worker_cpus=1.0) as (base, app):
        campaign_id = submit(base, LONG_STEPS_SPEC)

        def training_on_an_actor() -> bool:
            runner = app.state.manager.campaign_runners.get(campaign_id)
            if runner is None:
                return False
            now = time.monotonic()
            return any(
                slot.job is not None and slot.ready_ref is None and now - slot.started > 3.0
                for slot in runner.evaluator.pool._slots
            )

        wait_for(training_on_an_actor, 120, "a task to train on an actor for 3 s")
        assert "evaluation completed" not in in_flight(database_url, campaign_id)
        runner = app.state.manager.campaign_runners[campaign_id]
        busy_actors = {s.actor_id for s in runner.evaluator.pool._slots if s.job is not None}

        started, seconds = cancel_and_time(base, database_url, campaign_id)

        left = runner_leaves(app, campaign_id, started)
        # the actors that ran the campaign's tasks were killed (and replaced), not left training
        assert busy_actors <= set(runner.evaluator.pool._retired)
        counts = in_flight(database_url, campaign_id)
        assert counts.get("evaluation cancelled", 0) >= 1 and "evaluation completed" not in counts
    with capsys.disabled():
        print(f"\n[cancel] ray evaluator mid-training: closed {seconds:.2f} s, left {left:.2f} s")


def largest_parallelism() -> int:
    """The largest parallelism a spec may ask for (capped at 50,000 for this test)."""
    schema = CampaignSpec.model_json_schema()["properties"]["parallelism"]
    return min(50_000, int(schema.get("maximum", 50_000)))


@pytest.mark.slow
def test_cancel_interrupts_a_huge_ask_within_5_s(database_url, capsys):
    parallelism = largest_parallelism()
    spec = {
        **TINY_REAL_SPEC,
        "name": "huge ask",
        "space": {"kind": "activation", "ops": "swish", "max_nodes": 8, "max_depth": 6},
        "strategy": {"name": "random"},
        "budget": {"max_candidates": 1_000_000, "max_seconds": 3600},
        "parallelism": parallelism,
    }
    # the simulated evaluator never finishes a job here: the campaign only asks and inserts
    with service(database_url, evaluator="simulated", simulated_seconds=3600.0) as (base, app):
        campaign_id = submit(base, spec)
        wait_for(
            lambda: in_flight(database_url, campaign_id).get("candidate running", 0) >= 600,
            120,
            "600 proposals stored",
        )
        stored = sum(repo_counts(database_url, campaign_id).values())
        assert stored < parallelism, "the fill ended before the cancel: nothing to interrupt"

        started, seconds = cancel_and_time(base, database_url, campaign_id)

        left = runner_leaves(app, campaign_id, started)
        after = repo_counts(database_url, campaign_id)
        assert after.get("cancelled", 0) >= 600 and sum(after.values()) < parallelism
    with capsys.disabled():
        print(
            f"\n[cancel] huge ask (parallelism {parallelism}, {stored} stored at the cancel): "
            f"closed {seconds:.2f} s, left {left:.2f} s"
        )


def repo_counts(url: str, campaign_id: int) -> dict[str, int]:
    with session_scope(get_engine(url), readonly=True) as s:
        return repo.count_candidates(s, campaign_id=campaign_id)


def test_the_campaign_never_asks_the_strategy_for_more_than_a_batch(database_url, monkeypatch):
    """A parallelism of 3,000 is filled in asks of at most ASK_BATCH proposals."""
    from layerforge.search import campaign as campaign_module
    from layerforge.search.campaign import CampaignRunner
    from layerforge.search.evaluators import SimulatedEvaluator
    from layerforge.search.queries import create_campaign
    from layerforge.search.spec import validate_spec
    from layerforge.search.strategies.random_search import RandomSearch
    from layerforge.storage import upgrade_database

    upgrade_database(database_url)
    asked: list[int] = []
    original = RandomSearch.ask

    def recording_ask(self, n):
        asked.append(n)
        return original(self, n)

    monkeypatch.setattr(RandomSearch, "ask", recording_ask)
    spec = {
        **TINY_REAL_SPEC,
        "space": {"kind": "activation", "ops": "swish", "max_nodes": 8, "max_depth": 6},
        "strategy": {"name": "random"},
        "budget": {"max_candidates": 3000},
        "parallelism": 3000,
    }
    campaign_id = create_campaign(database_url, validate_spec(spec))
    status = CampaignRunner(
        database_url, campaign_id, SimulatedEvaluator(), poll_s=0.0, control_s=0.0
    ).run()
    assert status == "completed"
    assert sum(repo_counts(database_url, campaign_id).values()) == 3000
    assert max(asked) == campaign_module.ASK_BATCH
    assert sum(asked) >= 3000 - 3  # everything but the baseline and the seeds was asked


def test_pool_cancel_all_kills_the_busy_actors_and_the_pool_keeps_working(ray_session):
    from layerforge.workers.pool import EvaluatorPool

    pool = EvaluatorPool(2, num_cpus=0.5, task_timeout_s=600)
    try:
        for index in range(4):  # two run (for 10 minutes), two wait
            pool.submit(f"long-{index}", {"op": "sleep", "seconds": 600})
        wait_for(
            lambda: pool.poll(0.1) == [] and all(s.ready_ref is None for s in pool._slots),
            60,
            "both actors to run a job",
        )
        busy = {slot.actor_id for slot in pool._slots if slot.job is not None}
        assert len(busy) == 2

        cancelled = pool.cancel_all()

        assert sorted(cancelled) == [f"long-{i}" for i in range(4)]
        assert pool.in_flight() == 0 and pool.poll(0.0) == []
        assert busy <= set(pool._retired) and not busy & set(pool.actor_ids())
        pool.submit("after", {"op": "sleep", "seconds": 0.1})
        results = pool.drain(120)
        assert [(r.job_id, r.status) for r in results] == [("after", "ok")]
    finally:
        pool.shutdown()
