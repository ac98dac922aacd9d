import time

import pytest
import ray

from layerforge.workers.candidates import Candidate
from layerforge.workers.pool import EvaluatorPool, PoolResult
from tests.workers import helpers
from tests.workers.helpers import ReLU, Sin100, Swish, Tanh, simple

# the actors import the helpers by value (the tests folder is not an installed package)
ray.cloudpickle.register_pickle_by_value(helpers)

# raw gain: gain-fair evaluation would scale Sin100 up to sin(100 x), which diverges; these
# tests are about the pool, and want every candidate to finish its training
PROXIES = [
    {"arch": "mlp", "dataset": "mnist1d", "steps": 30, "batch_size": 64, "gain": "raw"},
    {"arch": "resnet", "dataset": "digits", "steps": 20, "batch_size": 64, "gain": "raw"},
]
# every stage but trainability, which stops Sin100 (its output ignores its input) before any
# training: these tests want every candidate trained on both proxies
CONFIG = {
    "quality_steps": 10,
    "quality_min_accuracy": 0.0,
    "measure_costs": False,
    "stages": ["static", "probe", "duplicate", "stability", "quality", "full"],
}
CLASSES = [ReLU, Swish, Tanh, Sin100]


def payload(i: int) -> dict:
    cand = Candidate("activation", simple(CLASSES[i % len(CLASSES)]), name=f"c{i}")
    return {"graph": cand, "proxies": PROXIES, "rejection": CONFIG}


def wait_until(pred, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def pool(ray_session):
    p = EvaluatorPool(2, num_cpus=1, task_timeout_s=120, max_retries=2)
    yield p
    p.shutdown()


@pytest.mark.slow
def test_two_actors_evaluate_eight_candidates_and_load_each_dataset_once(pool):
    for i in range(8):
        pool.submit(f"job-{i}", payload(i))
    assert pool.in_flight() == 8
    results: list[PoolResult] = []
    first_batch_sizes = []
    while pool.in_flight():
        got = pool.poll(30)
        first_batch_sizes.append(len(got))
        results += got
    assert sorted(r.job_id for r in results) == sorted(f"job-{i}" for i in range(8))
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    assert all(r.result["status"] == "completed" for r in results)
    assert {r.worker for r in results} == set(pool.actor_ids())  # both actors worked
    stats = pool.actor_stats()
    assert len(stats) == 2
    for st in stats.values():
        assert st["loads"] == {"mnist1d": 1, "digits": 1}, st
    assert sum(st["tasks"] for st in stats.values()) == 8
    # results streamed (not all at once at the end)
    assert len(first_batch_sizes) > 1
    accs = [p["val_accuracy"] for r in results for p in r.result["proxies"]]
    assert len(accs) == 16


@pytest.mark.slow
def test_killing_an_actor_mid_run_still_yields_all_results(pool):
    for i in range(8):
        pool.submit(f"k-{i}", payload(i))
    assert wait_until(
        lambda: (
            (pool.poll(0.1) or True)
            and pool._slots[0].job is not None
            and pool._slots[0].ready_ref is None
        )
    )
    victim = pool._slots[0]
    victim_job = victim.job.job_id
    ray.kill(victim.handle, no_restart=True)
    results = pool.drain(timeout_s=150)
    assert sorted(r.job_id for r in results) == sorted(f"k-{i}" for i in range(8)), results
    assert all(r.status == "ok" for r in results), [(r.job_id, r.error) for r in results]
    retried = [r for r in results if r.job_id == victim_job]
    assert retried[0].attempts == 2 and retried[0].worker != victim.actor_id
    stats = pool.actor_stats()
    assert stats[victim.actor_id]["alive"] is False
    assert len([s for s in stats.values() if s["alive"]]) == 2


@pytest.mark.slow
def test_task_over_timeout_is_reported_and_pool_keeps_working(ray_session):
    pool = EvaluatorPool(1, num_cpus=1, task_timeout_s=3, max_retries=1)
    try:
        assert wait_until(lambda: pool._is_ready(pool._slots[0]), 60)
        t0 = time.monotonic()
        pool.submit("sleepy", {"op": "sleep", "seconds": 60})
        results = pool.poll(30)
        assert [r.status for r in results] == ["timeout"]
        assert "timeout of 3s" in results[0].error
        assert time.monotonic() - t0 < 15
        assert pool.in_flight() == 0
        # the replacement actor takes the next job
        pool.submit("after", {"op": "sleep", "seconds": 0.1})
        results = pool.drain(timeout_s=90)
        assert [(r.job_id, r.status) for r in results] == [("after", "ok")]
        assert results[0].result["status"] == "completed"
        assert results[0].worker != "actor-0"
    finally:
        pool.shutdown()


@pytest.mark.slow
def test_slow_candidate_gets_a_recorded_time_limit_verdict(ray_session):
    pool = EvaluatorPool(1, num_cpus=1, task_timeout_s=60, max_retries=0)
    try:
        # warm the actor (imports, the dataset, compiled layers): on a loaded machine a cold
        # actor spent the whole 2 s in the first stages, and the limit hit at `duplicate`
        warm = {
            "graph": Candidate("activation", simple(ReLU)),
            "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 5}],
            "rejection": {"measure_costs": False, "quality_min_accuracy": 0.0, "quality_steps": 5},
        }
        pool.submit("warm", warm)
        assert [r.status for r in pool.drain(timeout_s=60)] == ["ok"]
        slow = {
            "graph": Candidate("activation", simple(ReLU)),
            "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 10_000_000}],
            "rejection": {
                "measure_costs": False,
                "quality_min_accuracy": 0.0,
                "time_limit_s": 2.0,
            },
        }
        pool.submit("slow", slow)
        results = pool.drain(timeout_s=60)
        assert [r.status for r in results] == ["ok"]
        res = results[0].result
        assert res["status"] == "rejected" and "time limit of 2s" in res["reason"], res
        assert res["stage"] in ("trainability", "quality", "depth", "full")
    finally:
        pool.shutdown()


def test_soft_time_limit_is_added_to_evaluations(ray_session):
    pool = EvaluatorPool(1, num_cpus=1, task_timeout_s=50)
    try:
        pool.submit("a", {"op": "sleep", "seconds": 0.01})
        pool.submit(
            "b",
            {
                "graph": {"builtin": "relu"},
                "proxies": [],
                "rejection": {"stages": ["static"]},
            },
        )
        pool.submit(
            "c",
            {
                "graph": {"builtin": "relu"},
                "proxies": [],
                "rejection": {"stages": ["static"], "time_limit_s": 7},
            },
        )
        jobs = list(pool._pending) + [s.job for s in pool._slots if s.job is not None]
        limits = {j.job_id: j.job.rejection.get("time_limit_s") for j in jobs}
        assert limits == {"a": None, "b": 40.0, "c": 7}
        results = {r.job_id: r for r in pool.drain(timeout_s=60)}
        assert results["b"].result["status"] == "completed"
        assert results["b"].result["stages"][0]["name"] == "static"
    finally:
        pool.shutdown()


def test_pool_rejects_bad_arguments(ray_session):
    from layerforge.workers.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="num_actors"):
        EvaluatorPool(0)
    with pytest.raises(InvalidConfigError, match="task_timeout_s"):
        EvaluatorPool(1, task_timeout_s=0)


def test_bad_payload_is_a_failed_verdict_not_a_dead_pool(ray_session):
    from layerforge.workers.errors import InvalidConfigError

    pool = EvaluatorPool(1, num_cpus=1, task_timeout_s=60)
    try:
        pool.submit(
            "bad-arch",
            {
                "graph": Candidate("activation", simple(ReLU)),
                "proxies": [{"arch": "vgg", "dataset": "digits"}],
            },
        )
        with pytest.raises(
            InvalidConfigError, match="unknown op 'explode'; valid ops: evaluate, sleep"
        ):
            pool.submit("bad-op", {"op": "explode"})
        with pytest.raises(InvalidConfigError, match="config.*unknown job field"):
            pool.submit("old-words", {"graph": {"builtin": "relu"}, "config": {}})
        pool.submit("twice", {"op": "sleep", "seconds": 0.01})
        with pytest.raises(InvalidConfigError, match="already in flight"):
            pool.submit("twice", {"op": "sleep", "seconds": 0.01})
        results = {r.job_id: r for r in pool.drain(timeout_s=60)}
        assert results["bad-arch"].status == "ok"
        assert results["bad-arch"].result["status"] == "failed"
        assert "unknown architecture 'vgg'" in results["bad-arch"].result["reason"]
        assert "resnet" in results["bad-arch"].result["reason"]
        assert results["twice"].result["status"] == "completed"
    finally:
        pool.shutdown()


def test_ray_connect_reuses_a_running_ray(ray_session, monkeypatch):
    from layerforge.workers.pool import ray_connect

    monkeypatch.setenv("RAY_ADDRESS", "ray://192.0.2.1:10001")  # would fail if it were used
    ray_connect()
    assert ray.is_initialized()
