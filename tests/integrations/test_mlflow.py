"""Campaigns mirrored in MLflow, read back through ``mlflow.MlflowClient``.

The service runs a campaign (controller, simulated evaluator) with
``LAYERFORGE_MLFLOW_TRACKING_URI`` pointing at a local file store; after it stops, MLflow's
own client must find the campaign's run with its spec, hypervolume history and best values,
and one nested run per completed candidate with its metrics, formula and exported code. A
second logger over the same database adds nothing: the mirror is rebuilt from storage.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import API, make_app, small_spec, wait_for

mlflow = pytest.importorskip("mlflow", reason="MLflow is an optional extra (layerforge[mlflow])")

OBJ = "accuracy:mlp/mnist1d"


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch):
    # MLflow 3 keeps the file store in maintenance mode behind this switch; a local file
    # store is what a researcher points a notebook at
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def _runs(client, experiment_id, where: str):
    return client.search_runs([experiment_id], filter_string=where, max_results=1000)


def test_campaign_and_candidates_are_logged_and_read_back(tmp_path, tracking_uri):
    app = make_app(tmp_path, run_controller=True, mlflow_tracking_uri=tracking_uri)
    spec = small_spec(name="mlflow-run", objectives=["accuracy", "nodes"])
    with TestClient(app) as http:
        campaign_id = http.post(f"{API}/campaigns", json=spec).json()["id"]
        detail = wait_for(http, campaign_id)
        history = http.get(f"{API}/campaigns/{campaign_id}/hypervolume").json()["points"]
        completed = http.get(
            f"{API}/campaigns/{campaign_id}/candidates",
            params={"status": "completed", "limit": 100},
        ).json()["items"]
    assert detail["status"] == "completed" and completed

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("layerforge")
    (parent,) = _runs(client, experiment.experiment_id, "tags.layerforge_kind = 'campaign'")
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == f"mlflow-run (campaign {campaign_id})"
    assert parent.data.tags["layerforge_campaign_id"] == str(campaign_id)
    assert parent.data.tags["status"] == "completed"
    params = parent.data.params
    assert params["name"] == "mlflow-run" and params["space.kind"] == "activation"
    assert params["proxies.0.arch"] == "mlp" and params["budget.max_candidates"] == "12"
    assert params["seeds"] == "['x * sigmoid(x)']"

    logged = client.get_metric_history(parent.info.run_id, "hypervolume")
    expected = [
        (p["evaluations"], p["hypervolume"]) for p in history if p["hypervolume"] is not None
    ]
    got = sorted((m.step, m.value) for m in logged)
    assert [step for step, _ in got] == [step for step, _ in sorted(expected)]
    assert [v for _, v in got] == pytest.approx([v for _, v in sorted(expected)])
    shares = client.get_metric_history(parent.info.run_id, "hypervolume_normalized")
    assert max(m.value for m in shares) == pytest.approx(detail["hypervolume_normalized"])
    assert parent.data.metrics[f"best.{OBJ}"] == pytest.approx(detail["best"][OBJ])
    assert parent.data.metrics["best.nodes"] == pytest.approx(detail["best"]["nodes"])

    children = _runs(
        client, experiment.experiment_id, f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_id = {int(r.data.tags["layerforge_candidate_id"]): r for r in children}
    assert sorted(by_id) == sorted(c["id"] for c in completed)
    for candidate in completed:
        run = by_id[candidate["id"]]
        assert run.info.status == "FINISHED"
        assert run.data.params["layer"] == candidate["text"]
        assert run.data.metrics[OBJ] == pytest.approx(candidate["objectives"][OBJ])
        assert run.data.metrics["nodes"] == candidate["objectives"]["nodes"]
        assert run.data.tags["formula"]  # the LaTeX the worker stored
        [artifact] = client.list_artifacts(run.info.run_id)
        assert artifact.path == "layer.py"
        code = open(client.download_artifacts(run.info.run_id, "layer.py", str(tmp_path))).read()
        assert code.startswith("# Exported by layerforge")
        assert f"# candidate {candidate['id']} of campaign {campaign_id}" in code
        compile(code, "layer.py", "exec")

    # a second logger over the same database and store finds the runs and adds nothing
    from layerforge.integrations.mlflow import MlflowLogger

    again = MlflowLogger(app.state.settings.database_url, tracking_uri)
    assert again.sync(campaign_id) == parent.info.run_id
    assert len(_runs(client, experiment.experiment_id, "")) == 1 + len(completed)
    assert len(client.get_metric_history(parent.info.run_id, "hypervolume")) == len(logged)


def test_without_a_tracking_uri_nothing_is_logged(tmp_path):
    from layerforge.api.app import mlflow_observer
    from layerforge.api.settings import load_settings

    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert settings.mlflow_tracking_uri is None and mlflow_observer(settings) is None


def test_database_passwords_never_reach_mlflow():
    from layerforge.integrations.mlflow import database_label

    assert (
        database_label("postgresql+psycopg://lf:s3cret@db:5432/layerforge")
        == "postgresql+psycopg://lf@db:5432/layerforge"
    )
    assert database_label("sqlite:///./layerforge.db") == "sqlite:///./layerforge.db"
