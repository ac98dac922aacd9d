"""A campaign exported as an Optuna study (``GET /campaigns/{id}/optuna``,
``Client.export_optuna``, ``layerforge export-optuna``) and read back with Optuna itself."""

from __future__ import annotations

import optuna
import pytest
from fastapi.testclient import TestClient

from layerforge.client import Client
from layerforge.errors import NotFoundError
from tests.api.helpers import API, make_app, small_spec, wait_for
from tests.conftest import create_postgres_database, drop_postgres_database

SPEC = small_spec(
    strategy={
        "name": "optuna",
        "population": 8,
        "tournament": 2,
        "sampler": {"name": "nsga3", "args": {"population_size": 4}},
    },
    objectives=["accuracy", "nodes"],
    budget={"max_candidates": 16},
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished campaign of the optuna strategy (NSGA-III), the test client of its app
    and a :class:`Client` talking to it (one campaign for the module's tests)."""
    with TestClient(make_app(tmp_path_factory.mktemp("app"), run_controller=True)) as live_client:
        yield from _finished(live_client)


def _finished(live_client):
    response = live_client.post(f"{API}/campaigns", json=SPEC)
    assert response.status_code == 202, response.text
    campaign_id = response.json()["id"]
    assert wait_for(live_client, campaign_id)["status"] == "completed"
    # the test client's in-process transport: the Client's requests go to the app
    client = Client("http://testserver", transport=live_client._transport)
    yield live_client, client, campaign_id
    client.close()


def check_study(study: optuna.Study, http, campaign_id: int) -> None:
    """The study holds the campaign: directions, one trial per evaluated candidate, and
    best trials that are the campaign's Pareto front."""
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    detail = http.get(f"{API}/campaigns/{campaign_id}").json()
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == detail["counts"]["completed"]
    assert states.count(optuna.trial.TrialState.PRUNED) == detail["counts"].get("rejected", 0)
    pareto = http.get(f"{API}/campaigns/{campaign_id}/pareto").json()
    front = {p["candidate_id"]: p for p in pareto["front"]}
    best = {t.user_attrs["candidate_id"]: t for t in study.best_trials}
    assert set(best) == set(front) and best
    names = [o["name"] for o in pareto["objectives"]]
    for candidate_id, trial in best.items():
        assert trial.values == [front[candidate_id]["values"][n] for n in names]
        assert trial.params["text"] == trial.user_attrs["text"] == front[candidate_id]["text"]
        assert trial.user_attrs["status"] == "completed"
        assert trial.user_attrs["latex"] and len(trial.user_attrs["fingerprint"]) >= 16
        assert trial.params["nodes"] >= 1
    assert study.user_attrs["objectives"] == names
    # optuna's own plots read it
    figure = optuna.visualization.plot_pareto_front(study, target_names=names)
    assert len(figure.data) >= 1


def test_export_into_sqlite_loads_with_optuna(finished, tmp_path):
    http, client, campaign_id = finished
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    name = client.export_optuna(campaign_id, storage)
    assert name == f"layerforge-campaign-{campaign_id}"
    check_study(optuna.load_study(study_name=name, storage=storage), http, campaign_id)
    # a second export needs another name; the first study is left as it was
    with pytest.raises(ValueError, match="already has a study"):
        client.export_optuna(campaign_id, storage)
    assert client.export_optuna(campaign_id, storage, study_name="again") == "again"
    assert len(optuna.load_study(study_name="again", storage=storage).trials) == len(
        optuna.load_study(study_name=name, storage=storage).trials
    )


def test_export_into_postgresql_loads_with_optuna(finished, postgres_admin_url):
    http, client, campaign_id = finished
    storage = create_postgres_database(postgres_admin_url)
    try:
        client.export_optuna(campaign_id, storage, study_name="pg")
        check_study(optuna.load_study(study_name="pg", storage=storage), http, campaign_id)
    finally:
        drop_postgres_database(postgres_admin_url, storage)


def test_sqlite_download_is_a_study_file(finished, tmp_path):
    http, client, campaign_id = finished
    client.download_optuna(campaign_id, path=tmp_path)
    (path,) = tmp_path.iterdir()
    assert path.name == f"layerforge-campaign-{campaign_id}.db"
    study = optuna.load_study(study_name=path.stem, storage=f"sqlite:///{path}")
    check_study(study, http, campaign_id)


def test_bad_campaign_and_bad_storage_are_clear_errors(finished, tmp_path):
    http, client, campaign_id = finished
    with pytest.raises(NotFoundError, match="campaign 999 does not exist"):
        client.export_optuna(999, f"sqlite:///{tmp_path / 'x.db'}")
    assert http.get(f"{API}/campaigns/999/optuna").status_code == 404
    with pytest.raises(ValueError, match="cannot open the Optuna storage 'nonsense://x'"):
        client.export_optuna(campaign_id, "nonsense://x")
    response = http.get(f"{API}/campaigns/{campaign_id}/optuna", params={"format": "xml"})
    assert response.status_code == 422 and "format" in response.text


def test_unknown_sampler_or_argument_is_a_422_naming_the_field(client):
    response = client.post(
        f"{API}/campaigns", json=small_spec(strategy={"name": "optuna", "sampler": "cmaes"})
    )
    assert response.status_code == 422
    assert "strategy.sampler.name" in response.text and "nsga3" in response.text
    bad_argument = {"name": "optuna", "sampler": {"name": "nsga3", "args": {"popsize": 3}}}
    response = client.post(f"{API}/campaigns", json=small_spec(strategy=bad_argument))
    assert response.status_code == 422
    assert "strategy.sampler.args" in response.text and "popsize" in response.text
