"""Real campaigns: real training on offline data, exact repetition, and SIGKILL crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from layerforge.search.campaign import CampaignRunner
from layerforge.search.evaluators import LocalEvaluator
from layerforge.search.queries import create_campaign, pareto_of_campaign
from layerforge.search.spec import validate_spec
from layerforge.storage import StorageError, get_engine, session_scope, upgrade_database
from layerforge.storage import repository as repo
from layerforge.storage.models import Candidate, Evaluation, ObjectiveValue
from tests.reliability.helpers import campaign_invariants

LAYERFORGE = str(Path(sys.executable).with_name("layerforge"))

REAL_SPEC = {
    "name": "swish-small",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4, "max_depth": 4},
    "seeds": ["x * sigmoid(x)", "max(x, tanh(x))"],
    "strategy": {"name": "evolution", "population": 6, "tournament": 3},
    "proxies": [
        {"arch": "mlp", "dataset": "mnist1d", "steps": 40, "batch_size": 64},
        {"arch": "mlp", "dataset": "digits", "steps": 40, "batch_size": 64},
    ],
    "rejection": {"quality_steps": 15, "quality_min_accuracy": 0.15},
    "budget": {"max_candidates": 9},
    "parallelism": 1,
    "seed": 4,
}


def snapshot(url: str, campaign_id: int):
    """Everything that must repeat: each candidate's text, status and objective values."""
    with session_scope(get_engine(url), readonly=True) as s:
        rows = s.scalars(
            select(Candidate).where(Candidate.campaign_id == campaign_id).order_by(Candidate.seq)
        ).all()
        values = {
            (v.candidate_id, v.name): (v.value, v.value_kind)
            for v in s.scalars(select(ObjectiveValue))
        }
        return [
            (
                c.text,
                c.status,
                c.origin,
                sorted((name, val) for (cid, name), val in values.items() if cid == c.id),
            )
            for c in rows
        ]


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


def finished_evaluations(url: str) -> int:
    """Evaluations that reached a final status, read from the campaign's SQLite file (0 while
    the file or its schema does not exist yet)."""
    return _count_evaluations(url, Evaluation.status.not_in(("queued", "running")))


def running_evaluations(url: str) -> int:
    """Evaluations in flight (0 while the file or its schema does not exist yet)."""
    return _count_evaluations(url, Evaluation.status == "running")


def _count_evaluations(url: str, condition) -> int:
    try:
        with session_scope(get_engine(url), readonly=True) as s:
            return s.scalar(select(func.count()).select_from(Evaluation).where(condition)) or 0
    except StorageError:
        return 0


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_stores_nothing_twice(tmp_path: Path):
    budget = 16
    spec = dict(
        REAL_SPEC,
        budget={"max_candidates": budget},
        proxies=[{"arch": "mlp", "dataset": "digits", "steps": 150, "batch_size": 64}],
        rejection={"quality_steps": 10, "quality_min_accuracy": 0.15},
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    command = [LAYERFORGE, "run", str(spec_file), "--db", url, "--evaluator", "local", "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random(0)
    kills = 0
    while kills < 5:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        # A random moment measured in progress, not in seconds (a loaded machine must not let
        # the campaign finish first, a quiet one must not kill it while it still imports):
        # once an evaluation is in flight, after 0-1 more finished evaluations, then 0-1 s.
        deadline = time.monotonic() + 120
        while running_evaluations(url) == 0 and proc.poll() is None:
            assert time.monotonic() < deadline, "no evaluation started within 120 s"
            time.sleep(0.05)
        target = finished_evaluations(url) + rng.choice([0, 0, 1])
        while (
            finished_evaluations(url) < target
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:
            out, _ = proc.communicate()
            pytest.fail(f"the campaign exited ({proc.returncode}) after only {kills} kills: {out}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    proc = subprocess.run(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout
    assert "Pareto front" in proc.stdout
    with session_scope(get_engine(url), readonly=True) as s:
        campaigns = repo.list_campaigns(s)
        assert len(campaigns) == 1
        campaign_id = campaigns[0].id
    figures = campaign_invariants(url, campaign_id, budget)
    assert figures["resumed_events"] >= 1, (
        "at least one kill should have left an evaluation to re-queue",
        figures,
    )
