"""Worker faults inside real campaigns on the Ray pool (``CampaignRunner`` + ``RayEvaluator``).

* An actor is ``ray.kill``-ed while it evaluates a candidate: the pool retries the job on a
  fresh actor, the campaign completes with its full budget, each candidate evaluated once.
* An evaluation hangs past the task timeout: it is recorded (evaluation ``timeout``,
  candidate ``failed``) and the campaign goes on to complete.
* A candidate whose layer outputs NaN/Inf everywhere is rejected with a reason, and the same
  actor goes on to evaluate the next candidate successfully.

The grammar cannot express a hanging or a NaN layer (every op is protected; see
grammar/ops.py), so the harness injects those at the worker boundary: ``FaultyEvaluator``
rewrites one chosen job's payload before it goes to the pool (a hang: the pool's diagnostic
``sleep`` op; NaN: a torch module whose forward multiplies by NaN, pickled to the actor by
value). Everything else is the production path.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import ray

from layerforge.search.campaign import CampaignRunner
from layerforge.search.evaluators import RayEvaluator
from layerforge.search.queries import create_campaign
from layerforge.search.spec import validate_spec
from layerforge.storage import get_engine, session_scope, upgrade_database
from layerforge.storage.models import Candidate, Evaluation
from tests.reliability.helpers import TINY_REAL_SPEC, campaign_invariants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def nan_candidate(value: float):
    """A workers Candidate whose layer returns ``x * value`` (NaN or Inf everywhere)."""
    import torch.nn as nn

    from layerforge.workers.candidates import Candidate as WorkerCandidate

    class Poison(nn.Module):  # defined locally: cloudpickle ships it to the actor by value
        def forward(self, x):
            return x * value

    return WorkerCandidate("activation", lambda num_features: Poison(), name=f"x*{value}")


class FaultyEvaluator(RayEvaluator):
    """A RayEvaluator that injects one fault per chosen job (by submission order)."""

    def __init__(self, faults: dict[int, str], **kwargs):
        super().__init__(**kwargs)
        self.faults = faults  # submission index -> "kill" | "hang" | "nan"
        self.submitted: list[str] = []
        self.job_fault: dict[str, str] = {}
        self.to_kill: str | None = None
        self.killed: list[str] = []
        self.outcomes = []

    def submit(self, job_id, payload):
        index = len(self.submitted)
        self.submitted.append(job_id)
        fault = self.faults.get(index)
        if fault:
            self.job_fault[job_id] = fault
        if fault == "hang":
            self.pool.submit(job_id, {"op": "sleep", "seconds": 600})
            return
        if fault == "nan":
            payload = dataclasses.replace(payload, graph=nan_candidate(float("nan")))
        if fault == "kill":
            self.to_kill = job_id
        super().submit(job_id, payload)

    def poll(self, timeout_s):
        if self.to_kill:
            # kill the actor once it has been running the job for a moment
            for slot in self.pool._slots:
                if (
                    slot.job is not None
                    and slot.job.job_id == self.to_kill
                    and slot.ready_ref is None
                    and time.monotonic() - slot.started > 0.1
                ):
                    ray.kill(slot.handle, no_restart=True)
                    self.killed.append(slot.actor_id)
                    self.to_kill = None
        out = super().poll(min(timeout_s, 0.2))
        self.outcomes += out
        return out


def run_campaign(tmp_path, spec, evaluator):
    url = f"sqlite:///{tmp_path / 'ray.db'}"
    upgrade_database(url)
    campaign_id = create_campaign(url, validate_spec(spec))
    try:
        status = CampaignRunner(url, campaign_id, evaluator, poll_s=0.2).run()
    finally:
        evaluator.shutdown()
    assert status == "completed"
    return url, campaign_id


def test_kill_timeout_and_nan_in_one_campaign(ray_session, tmp_path):
    """One campaign, two actors, three injected faults (sharing the actors' start-up):
    job 0 (the ReLU baseline) has its actor killed mid-evaluation, job 1 is a NaN layer,
    job 5 hangs past the 30 s task timeout.

    The timeout leaves room for load: the pool's soft limit (0.8 x the task timeout, 24 s)
    rejects any evaluation that runs longer. With 15 s (a 12 s soft limit) the retried
    victim came back rejected twice on the loaded 2-core CI machine, most likely by that
    limit (the log kept no reason; see docs/RELIABILITY.md)."""
    spec = dict(
        TINY_REAL_SPEC,
        name="ray-faults",
        budget={"max_candidates": 8},
        proxies=[{"arch": "mlp", "dataset": "digits", "steps": 60, "batch_size": 64}],
        # the faults go by submission order into the search's first jobs, which must meet
        # cold actors (a warm one finishes the victim before it can be killed): no panel
        fidelity={"enabled": False},
    )
    evaluator = FaultyEvaluator(
        {0: "kill", 1: "nan", 5: "hang"}, num_actors=2, num_cpus=0.5, task_timeout_s=30
    )
    t0 = time.monotonic()
    url, campaign_id = run_campaign(tmp_path, spec, evaluator)
    seconds = time.monotonic() - t0
    figures = campaign_invariants(url, campaign_id, 8)
    by_job = {o.job_id: o for o in evaluator.outcomes}
    order = evaluator.submitted
    fault_job = {f: j for j, f in evaluator.job_fault.items()}

    # 1. the killed actor's job was retried on another actor and stored once, completed
    assert len(evaluator.killed) == 1, "the victim job never ran long enough to be killed"
    victim = by_job[fault_job["kill"]]
    assert victim.status == "ok" and victim.attempts == 2 and victim.worker != evaluator.killed[0]
    assert victim.result["status"] == "completed", victim.result.get("reason")

    # 2. the NaN layer: rejected at probe with a reason; its worker evaluates later jobs fine
    nan = by_job[fault_job["nan"]]
    assert nan.status == "ok" and nan.result["status"] == "rejected", nan.result
    assert nan.result["stage"] == "probe" and "finite" in nan.result["reason"], nan.result
    later_on_same = [
        by_job[j]
        for j in order[order.index(fault_job["nan"]) + 1 :]
        if j in by_job and by_job[j].worker == nan.worker
    ]
    assert later_on_same, "the worker that saw NaN took no further job"
    first = later_on_same[0]
    assert first.status == "ok" and first.result["status"] in ("completed", "rejected"), (
        "the worker that saw NaN did not evaluate its next candidate",
        first,
    )
    assert "finite" not in (first.result.get("reason") or "")

    # 3. the hang: a recorded timeout, candidate failed, and the campaign went on
    hang = by_job[fault_job["hang"]]
    assert hang.status == "timeout" and "timeout of 30s" in hang.error
    with session_scope(get_engine(url), readonly=True) as s:
        victim_eval = s.get(Evaluation, int(victim.job_id))
        assert victim_eval.status == "completed"
        victim_candidate = s.get(Candidate, victim_eval.candidate_id)
        assert victim_candidate.status == "completed", victim.result
        nan_eval = s.get(Evaluation, int(fault_job["nan"]))
        assert s.get(Candidate, nan_eval.candidate_id).status == "rejected"
        hang_eval = s.get(Evaluation, int(fault_job["hang"]))
        assert hang_eval.status == "timeout" and "timeout" in hang_eval.error
        assert s.get(Candidate, hang_eval.candidate_id).status == "failed"
    later = [by_job[j] for j in order[order.index(fault_job["hang"]) + 1 :]]
    assert later and all(o.status == "ok" for o in later), "the campaign did not go on"
    print(
        f"\n[ray faults] {seconds:.1f} s; killed={evaluator.killed} victim attempts="
        f"{victim.attempts} retried on {victim.worker}; nan: {nan.result['reason'][:70]}; "
        f"same worker {nan.worker} completed {len(later_on_same)} later jobs; "
        f"timeout: {hang.error[:50]}; {figures}"
    )
