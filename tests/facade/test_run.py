"""``layerforge.run``: a campaign in this process, on SQLite and PostgreSQL, and its result.

The simulated evaluator stands in where the evaluator is not what a test is about; the
default path (no evaluator given, so Ray) runs once on the session's Ray.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch
from fastapi.testclient import TestClient

import layerforge
from layerforge.errors import LayerforgeError, SpecError, SpecFileError
from layerforge.storage import get_engine, session_scope, upgrade_database
from layerforge.storage import repository as repo
from tests.api.helpers import make_app

SPEC = {
    "name": "facade-run",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4},
    "seeds": ["x * sigmoid(x)", "max(x, tanh(x))"],
    "strategy": {"name": "evolution", "population": 6, "tournament": 2},
    "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 30, "batch_size": 64}],
    "rejection": {"quality_steps": 10, "quality_min_accuracy": 0.1},
    "budget": {"max_candidates": 10},
    "parallelism": 2,
    "seed": 1,
}
OBJECTIVE = "accuracy:mlp/digits"


def campaigns_in(url: str) -> list:
    with session_scope(get_engine(url), readonly=True) as s:
        return [(c.id, c.name, c.status) for c in repo.list_campaigns(s, limit=100)]


def test_run_returns_the_front_the_candidates_the_best_and_code(database_url, monkeypatch):
    monkeypatch.delenv("LAYERFORGE_EVALUATOR", raising=False)
    result = layerforge.run(SPEC, database=database_url, evaluator="simulated", progress=False)
    assert result.status == "completed"
    assert result.name == "facade-run"
    rows = result.candidates
    assert len(rows) == 10 and [r.seq for r in rows] == list(range(10))
    assert rows[0].origin == "baseline"
    assert sum(result.counts.values()) == 10
    completed = [r for r in rows if r.status == "completed"]
    assert completed and all(OBJECTIVE in r.objectives for r in completed)

    front = result.front
    assert front and all(math.isfinite(p.values[OBJECTIVE]) for p in front)
    best = result.best[OBJECTIVE]
    assert best.values[OBJECTIVE] == max(r.objectives[OBJECTIVE] for r in completed)
    assert front[0] == best  # one objective: the front is the best, first
    assert {p.candidate_id for p in result.dominated} | {p.candidate_id for p in front} == {
        r.id for r in rows if r.objectives
    }
    assert result.hypervolume == pytest.approx(best.values[OBJECTIVE])

    code = result.export(format="pytorch")
    assert "import torch" in code and best.text.split("(")[0] in code
    assert result.export(best.candidate_id, "json") == layerforge.export(
        result.graph(best.candidate_id), "json"
    )
    module = result.compile()
    x = torch.linspace(-2, 2, 5)
    assert torch.allclose(module(x), layerforge.compile(result.graph())(x))
    detail = result.candidate(best.candidate_id)
    assert detail["status"] == "completed" and detail["evaluations"][0]["status"] == "completed"
    rejected = [r for r in rows if r.status == "rejected"]
    if rejected:
        assert result.candidate(rejected[0].id)["rejection"]["stage"]
    assert "completed" in repr(result) and best.text in repr(result)

    again = layerforge.run(SPEC, database=database_url, evaluator="simulated", progress=False)
    assert again.campaign_id == result.campaign_id and again.status == "completed"
    assert len(campaigns_in(database_url)) == 1


def test_a_bad_spec_raises_the_apis_field_errors_and_stores_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    upgrade_database(url)
    bad = {
        **SPEC,
        "budjet": {"max_candidates": 5},
        "parallelism": 0,
        "strategy": {"name": "evolution", "population": 6, "tournament": 9},
    }
    with pytest.raises(SpecError) as info:
        layerforge.run(bad, database=url, evaluator="simulated", progress=False)
    local = info.value
    with TestClient(make_app(tmp_path)) as client:
        answer = client.post("/api/v1/campaigns", json=bad)
    assert answer.status_code == 422
    remote = answer.json()["error"]
    assert local.code == remote["code"] == "validation_error"
    assert local.fields == [
        (f["path"].removeprefix("body."), f["message"]) for f in remote["fields"]
    ]
    paths = [path for path, _ in local.fields]
    assert {"budjet", "parallelism", "strategy"} <= set(paths)
    assert "did you mean 'budget'" in dict(local.fields)["budjet"]
    assert campaigns_in(url) == []


def test_spec_files_and_models_run_and_share_the_campaign(tmp_path):
    url = f"sqlite:///{tmp_path / 'files.db'}"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: facade-run\n"
        "space: {kind: activation, ops: swish, max_nodes: 4}\n"
        "seeds: ['x * sigmoid(x)', 'max(x, tanh(x))']\n"
        "strategy: {name: evolution, population: 6, tournament: 2}\n"
        "proxies: [{arch: mlp, dataset: digits, steps: 30, batch_size: 64}]\n"
        "rejection: {quality_steps: 10, quality_min_accuracy: 0.1}\n"
        "budget: {max_candidates: 10}\n"
        "parallelism: 2\n"
        "seed: 1\n"
    )
    from_yaml = layerforge.run(spec_file, database=url, evaluator="simulated", progress=False)
    model = layerforge.validate_spec(SPEC)
    from_model = layerforge.run(model, database=url, evaluator="simulated", progress=False)
    from_dict = layerforge.run(SPEC, database=url, evaluator="simulated", progress=False)
    assert from_yaml.campaign_id == from_model.campaign_id == from_dict.campaign_id
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nspace: [\n")
    with pytest.raises(SpecFileError, match="line 3, column 1"):
        layerforge.run(broken, database=url, evaluator="simulated", progress=False)
    with pytest.raises(LayerforgeError, match="evaluator must be one of ray, local, simulated"):
        layerforge.run(SPEC, database=url, evaluator="gpu", progress=False)


def test_a_database_path_the_settings_and_a_progress_callback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAYERFORGE_EVALUATOR", "simulated")
    seen = []
    result = layerforge.run(SPEC, database="notebook.db", progress=seen.append)
    assert result.database_url == f"sqlite:///{tmp_path / 'notebook.db'}"
    assert (tmp_path / "notebook.db").exists() and result.status == "completed"
    assert seen and seen[-1].status == "completed" and seen[-1].candidates == 10
    stages = {
        (e["result"] or {}).get("reason")
        for r in result.candidates
        for e in result.candidate(r.id)["evaluations"]
        if r.status == "rejected"
    }
    assert stages <= {"simulated"}  # LAYERFORGE_EVALUATOR chose the simulated evaluator

    monkeypatch.setenv("LAYERFORGE_DATABASE_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    other = layerforge.run({**SPEC, "seed": 2}, progress=False)
    assert other.database_url.endswith("from-env.db")


def test_a_stop_event_ends_the_run_and_a_second_run_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    stop = threading.Event()
    spec = {**SPEC, "budget": {"max_candidates": 40}}

    def stop_early(progress) -> None:
        if progress.candidates >= 6:
            stop.set()

    first = layerforge.run(
        spec, database=url, evaluator="simulated", progress=stop_early, stop=stop
    )
    assert first.status == "stopped"
    assert 6 <= sum(first.counts.values()) < 40
    second = layerforge.run(spec, database=url, evaluator="simulated", progress=False)
    assert second.campaign_id == first.campaign_id and second.status == "completed"
    assert sum(second.counts.values()) == 40


def test_choosing_a_candidate_of_another_campaign_or_none(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    one = layerforge.run(SPEC, database=url, evaluator="simulated", progress=False)
    two = layerforge.run({**SPEC, "seed": 5}, database=url, evaluator="simulated", progress=False)
    foreign = two.candidates[0].id
    with pytest.raises(LayerforgeError, match=f"belongs to campaign {two.campaign_id}"):
        one.export(foreign)
    with pytest.raises(LayerforgeError, match="is not an objective"):
        one.export(objective="beauty")


@pytest.mark.slow
def test_the_default_evaluator_is_ray(tmp_path, monkeypatch, ray_session):
    """No evaluator given and no LAYERFORGE_EVALUATOR: the campaign trains on Ray actors."""
    monkeypatch.delenv("LAYERFORGE_EVALUATOR", raising=False)
    monkeypatch.setenv("LAYERFORGE_WORKERS", "1")
    spec = {**SPEC, "budget": {"max_candidates": 4}, "parallelism": 1}
    result = layerforge.run(spec, database=str(tmp_path / "ray.db"), progress=False)
    assert result.status == "completed"
    finished = [r for r in result.candidates if r.status in ("completed", "rejected")]
    assert finished
    evaluations = [e for r in finished for e in result.candidate(r.id)["evaluations"]]
    assert all(e["status"] == "completed" for e in evaluations)
    # real workers record every rejection stage they ran (the simulated evaluator none)
    assert all(e["result"]["stages"] for e in evaluations)
    assert all(e["result"].get("reason") != "simulated" for e in evaluations)
