"""Real campaigns: real training on offline data, exact repetition, and SIGKILL crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from search.campaign import CampaignRunner, create_campaign, pareto_of_campaign
from search.evaluators import LocalEvaluator
from search.spec import validate_spec
from storage import get_engine, repository as repo, session_scope, upgrade_database
from storage.models import Candidate, Evaluation, ObjectiveValue

LAYERFORGE = str(Path(sys.executable).with_name("layerforge"))

REAL_SPEC = {
    "name": "swish-small",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4, "max_depth": 4},
    "seeds": ["x * sigmoid(x)", "max(x, tanh(x))"],
    "strategy": {"name": "evolution", "population": 6, "tournament": 3},
    "proxies": [{"arch": "mlp", "dataset": "mnist1d", "steps": 40, "batch_size": 64},
                {"arch": "mlp", "dataset": "digits", "steps": 40, "batch_size": 64}],
    "rejection": {"quality_steps": 15, "quality_min_accuracy": 0.15},
    "budget": {"max_candidates": 9},
    "parallelism": 1,
    "seed": 4,
}


def snapshot(url: str, campaign_id: int):
    """Everything that must repeat: each candidate's text, status and objective values."""
    with session_scope(get_engine(url), readonly=True) as s:
        rows = s.scalars(select(Candidate).where(Candidate.campaign_id == campaign_id)
                         .order_by(Candidate.seq)).all()
        values = {(v.candidate_id, v.name): (v.value, v.value_kind)
                  for v in s.scalars(select(ObjectiveValue))}
        return [(c.text, c.status, c.origin,
                 sorted((name, val) for (cid, name), val in values.items() if cid == c.id))
                for c in rows]


@pytest.mark.slow
def test_a_real_campaign_finds_new_candidates_and_repeats_exactly(tmp_path: Path):
    runs = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        upgrade_database(url)
        campaign_id = create_campaign(url, validate_spec(REAL_SPEC))
        status = CampaignRunner(url, campaign_id, LocalEvaluator(), poll_s=0.0).run()
        assert status == "completed"
        runs.append((url, campaign_id, snapshot(url, campaign_id)))
    (url, campaign_id, first), (_, _, second) = runs
    assert first == second, "same seed, sequential evaluation: the campaign must repeat exactly"
    assert len(first) == 9
    found = [row for row in first if row[2] not in ("baseline", "seed") and row[1] == "completed"]
    assert found, f"no candidate besides the seeds completed: {first}"
    front = pareto_of_campaign(url, campaign_id)
    assert front["front"]
    for point in front["front"]:
        for name, value in point["values"].items():
            assert name.startswith("accuracy:mlp/") and 0.0 <= value <= 1.0
    # real learning: the ReLU baseline beats chance on both proxies
    baseline = next(p for p in front["front"] + front["dominated"] if p["origin"] == "baseline")
    assert baseline["values"]["accuracy:mlp/mnist1d"] > 0.15
    assert baseline["values"]["accuracy:mlp/digits"] > 0.5


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_stores_nothing_twice(tmp_path: Path):
    spec = dict(REAL_SPEC, budget={"max_candidates": 16},
                proxies=[{"arch": "mlp", "dataset": "digits", "steps": 150, "batch_size": 64}],
                rejection={"quality_steps": 10, "quality_min_accuracy": 0.15})
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    command = [LAYERFORGE, "run", str(spec_file), "--db", url, "--evaluator", "local", "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random(0)
    kills = 0
    for attempt in range(30):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        if kills < 5:
            try:
                proc.wait(timeout=rng.uniform(2.0, 7.0))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        break
    else:
        pytest.fail("the campaign never finished")
    assert kills >= 5, "the campaign finished before it could be killed enough times"
    assert "Pareto front" in out
    with session_scope(get_engine(url), readonly=True) as s:
        campaigns = repo.list_campaigns(s)
        assert len(campaigns) == 1 and campaigns[0].status == "completed"
        cid = campaigns[0].id
        candidates = s.scalars(select(Candidate).where(Candidate.campaign_id == cid)).all()
        assert len(candidates) == 16
        assert sorted(c.seq for c in candidates) == list(range(16))
        assert all(c.status in ("completed", "rejected", "failed", "duplicate") for c in candidates)
        per_candidate = dict(s.execute(
            select(Evaluation.candidate_id, func.count()).where(Evaluation.campaign_id == cid)
            .group_by(Evaluation.candidate_id)).all())
        for candidate in candidates:
            expected = 0 if candidate.status == "duplicate" else 1
            assert per_candidate.get(candidate.id, 0) == expected, candidate.text
        assert not repo.unfinished_evaluations(s, campaign_id=cid)
        resumed = [e for e in repo.list_events(s, campaign_id=cid, limit=100_000)
                   if e.kind == "resumed"]
        assert resumed, "at least one kill should have left an evaluation to re-queue"
