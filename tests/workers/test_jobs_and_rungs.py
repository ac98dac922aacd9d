"""Typed jobs and results (workers/jobs.py) and the worker's rung loop (successive halving):
a run paused at rungs and continued from its checkpoints ends exactly where one
uninterrupted run ends, having trained each step once."""

import pytest
import torch

from layerforge.workers.errors import InvalidConfigError
from layerforge.workers.jobs import RUNG, EvaluationJob, EvaluationResult, JobOp
from layerforge.workers.rejection import evaluate_candidate

PROXIES = [
    {"arch": "mlp", "dataset": "digits", "steps": 60, "batch_size": 32, "gain": "fair"},
    {"arch": "mlp", "dataset": "mnist1d", "steps": 40, "batch_size": 32, "gain": "fair"},
]
CONFIG = {"quality_steps": 10, "quality_min_accuracy": 0.0, "measure_costs": False}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_payload_round_trip_keeps_the_controller_form():
    payload = {
        "graph": {"builtin": "relu"},
        "proxies": PROXIES,
        "rejection": CONFIG,
        "seed": 2,
        "kind": "transfer",
        "campaign_id": 7,
    }
    job = EvaluationJob.from_payload(payload)
    assert job.to_payload() == payload  # the stored/serialized form is unchanged
    assert [p["seed"] for p in job.worker_proxies()] == [2, 2]
    later = job.continuation(b"state", 30)
    assert later.to_payload() == {**payload, "checkpoint": b"state", "rung": 30}
    assert job.with_time_limit(5.0).rejection["time_limit_s"] == 5.0
    assert job.with_time_limit(5.0).with_time_limit(9.0).rejection["time_limit_s"] == 5.0


def test_bad_jobs_name_the_field():
    with pytest.raises(InvalidConfigError, match="candidate: unknown job field"):
        EvaluationJob.from_payload({"candidate": {"builtin": "relu"}})
    with pytest.raises(InvalidConfigError, match="graph: a job must name its candidate"):
        EvaluationJob.from_payload({"proxies": []})
    with pytest.raises(InvalidConfigError, match="rung: must be a step count >= 1"):
        EvaluationJob(graph={"builtin": "relu"}, rung=0)
    with pytest.raises(InvalidConfigError, match="valid ops: evaluate, sleep"):
        EvaluationJob(op="dance")
    assert EvaluationJob.sleep(0.5).to_payload() == {"op": "sleep", "seconds": 0.5}
    assert EvaluationJob.from_payload({"op": "sleep", "seconds": 1}).op is JobOp.SLEEP


def test_result_keeps_the_checkpoint_out_of_the_stored_verdict():
    result = EvaluationResult.from_worker("9", {"status": RUNG, "rung": 20, "checkpoint": b"x"})
    assert result.at_rung and result.checkpoint == b"x"
    assert "checkpoint" not in result.result
    assert result.to_dict()["checkpoint"] == 1
    failed = EvaluationResult("9", "failed", error="actor died")
    assert failed.verdict is None and not failed.at_rung


def test_rungs_continue_the_same_run_to_the_uninterrupted_result():
    cand = {"builtin": "silu"}
    whole = evaluate_candidate(cand, PROXIES, CONFIG)
    first = evaluate_candidate(cand, PROXIES, CONFIG, rung=20)
    assert first["status"] == RUNG and first["rung"] == 20
    assert [p["steps"] for p in first["proxies"]] == [20, 20]
    assert isinstance(first["checkpoint"], bytes)
    second = evaluate_candidate(cand, PROXIES, CONFIG, rung=30, checkpoint=first["checkpoint"])
    assert second["status"] == RUNG and [p["steps"] for p in second["proxies"]] == [30, 30]
    # the shorter proxy ends at its own 40 steps; the longer one goes on to 60
    last = evaluate_candidate(cand, PROXIES, CONFIG, rung=50, checkpoint=second["checkpoint"])
    assert last["status"] == RUNG and [p["steps"] for p in last["proxies"]] == [50, 40]
    done = evaluate_candidate(cand, PROXIES, CONFIG, checkpoint=last["checkpoint"])
    assert done["status"] == "completed" and "checkpoint" not in done
    assert [r["step"] for r in done["rungs"]] == [20, 30, 50]
    assert done["rungs"][0]["accuracy"] == [p["val_accuracy"] for p in first["proxies"]]
    for resumed, plain in zip(done["proxies"], whole["proxies"], strict=True):
        for key in ("steps", "val_accuracy", "val_loss", "train_loss", "curve"):
            assert resumed[key] == plain[key], key
    # the protocol's stages ran once each: the continuation adds the full stage's verdict
    assert [s["name"] for s in done["stages"]] == [s["name"] for s in whole["stages"]]


def test_a_rung_at_or_past_every_proxys_end_completes_at_once():
    result = evaluate_candidate({"builtin": "relu"}, PROXIES[1:], CONFIG, rung=40)
    assert result["status"] == "completed"
    assert "rungs" not in result


def test_a_foreign_checkpoint_is_a_failed_verdict_naming_it():
    first = evaluate_candidate({"builtin": "relu"}, PROXIES, CONFIG, rung=20)
    result = evaluate_candidate(
        {"builtin": "relu"}, PROXIES[:1], CONFIG, checkpoint=first["checkpoint"]
    )
    assert result["status"] == "failed"
    assert "checkpoint holds 2 proxy runs, the job has 1" in result["reason"]
    garbage = evaluate_candidate({"builtin": "relu"}, PROXIES, CONFIG, checkpoint=b"not torch")
    assert garbage["status"] == "failed" and "cannot be read" in garbage["reason"]
