"""A campaign that cannot run ends ``failed`` with the reason, not ``completed`` with empty plots.

Through the real API with its controller and the local evaluator (real training code, real
dataset loaders), on SQLite and PostgreSQL: a file-backed dataset whose folder does not
exist, and one whose files are damaged (the proxy raises while it is built, for every
function). The reason is the campaign's ``error`` in its detail and in the campaign list
(what the dashboard renders from), in the ``status`` event of its event stream, and the
dashboard's campaign page has the element that shows it; no evaluation is left open.
"""

from __future__ import annotations

import gzip
import json

import pytest
from fastapi.testclient import TestClient

from layerforge.storage import get_engine, session_scope
from layerforge.storage.models import Evaluation
from tests.api.helpers import API, make_app, render_dashboard, small_spec, wait_for


def _events(client, campaign_id: int) -> list[tuple[str, dict]]:
    """Every event of the finished campaign's stream (it ends with an ``end`` event)."""
    events, kind = [], None
    with client.stream("GET", f"{API}/campaigns/{campaign_id}/events?timeout=30") as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind is not None:
                events.append((kind, json.loads(line.removeprefix("data: "))))
                if kind == "end":
                    break
    return events


def _damaged_mnist(root) -> None:
    """An MNIST folder whose idx files have the right names and the wrong contents."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (folder / (stem + ".gz")).write_bytes(gzip.compress(b"<html>not found</html>"))


CASES = {
    "missing-dataset": (None, "dataset 'mnist' not found"),
    "damaged-dataset": (_damaged_mnist, "is not an idx file (bad magic number)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_campaign_whose_baseline_cannot_be_evaluated_fails_with_the_reason(
    tmp_path, database_url, case
):
    prepare, expected = CASES[case]
    root = tmp_path / "data"
    if prepare is not None:
        prepare(root)
    spec = small_spec(
        name=f"cannot-run-{case}",
        proxies=[
            {"arch": "mlp", "dataset": "mnist", "steps": 20, "dataset_options": {"root": str(root)}}
        ],
        budget={"max_candidates": 40},
    )
    app = make_app(tmp_path, database_url=database_url, evaluator="local", run_controller=True)
    with TestClient(app) as client:
        submitted = client.post(f"{API}/campaigns", json=spec)
        assert submitted.status_code == 202, submitted.text  # valid: the files are the workers'
        campaign_id = submitted.json()["id"]
        detail = wait_for(client, campaign_id, timeout=120)

        assert detail["status"] == "failed", detail
        error = detail["error"]
        assert error.startswith("the baseline relu could not be evaluated"), error
        assert expected in error and str(root) in error, error
        assert detail["progress"]["candidates"] < spec["budget"]["max_candidates"]
        assert detail["counts"].get("completed", 0) == 0

        listed = client.get(f"{API}/campaigns").json()["items"]
        assert [c["error"] for c in listed if c["id"] == campaign_id] == [error]

        events = _events(client, campaign_id)
        failed = [p for kind, p in events if kind == "status" and p.get("to") == "failed"]
        assert failed == [{"from": "running", "to": "failed", "error": error}], events[-5:]
        assert events[-1] == ("end", {"status": "failed"})

        page = client.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text
        c = f"/campaigns/{campaign_id}"
        shown = render_dashboard(
            client,
            tmp_path,
            f"#{c}",
            [
                c,
                f"{c}/pareto",
                f"{c}/hypervolume?max_points=1000",
                f"{c}/candidates?limit=20",
                f"{c}/transfer",
            ],
        )
        assert shown["ready"] == f"#{c}", shown
        assert shown["banner"]["hidden"], shown  # every answer the page asked for was there
        assert shown["failure"] == {"hidden": False, "text": f"This campaign failed: {error}"}
        assert "failed" in shown["title"]["text"]
        listing = render_dashboard(client, tmp_path, "#/", ["/campaigns?limit=100"])
        assert error in listing["rows"]["text"], listing

        with session_scope(get_engine(database_url), readonly=True) as s:
            left_open = (
                s.query(Evaluation)
                .filter(
                    Evaluation.campaign_id == campaign_id,
                    Evaluation.status.in_(["queued", "running"]),
                )
                .count()
            )
        assert left_open == 0


def test_a_rejected_baseline_is_a_result_not_a_failure(tmp_path):
    """Only a failed evaluation ends the campaign: a baseline the quality check rejects
    (its proxy too short to reach the threshold) leaves the search running to its budget."""
    spec = small_spec(
        name="baseline-rejected",
        proxies=[{"arch": "mlp", "dataset": "digits", "steps": 4}],
        rejection={
            "stages": ["static", "quality"],
            "quality_steps": 2,
            "quality_min_accuracy": 1.0,
        },
        budget={"max_candidates": 4},
        parallelism=1,
    )
    app = make_app(tmp_path, evaluator="local", run_controller=True)
    with TestClient(app) as client:
        campaign_id = client.post(f"{API}/campaigns", json=spec).json()["id"]
        detail = wait_for(client, campaign_id, timeout=120)
    assert detail["status"] == "completed", detail
    assert detail["error"] is None
    assert detail["progress"]["candidates"] == 4
    assert detail["counts"].get("rejected", 0) >= 1


def test_a_campaign_left_running_with_a_failed_baseline_fails_when_resumed(tmp_path, database_url):
    """A campaign whose baseline failed but that was left ``running`` (a service stopped
    between the two writes, or an older version that kept searching) is failed with the
    stored reason as soon as a runner takes it up, and nothing more is evaluated."""
    from layerforge.search.campaign import CampaignRunner
    from layerforge.search.evaluators import LocalEvaluator
    from layerforge.search.queries import create_campaign
    from layerforge.search.spec import validate_spec
    from layerforge.storage import repository as repo
    from layerforge.storage import upgrade_database

    upgrade_database(database_url)
    root = tmp_path / "nowhere"
    spec = validate_spec(
        small_spec(
            proxies=[{"arch": "mlp", "dataset": "mnist", "dataset_options": {"root": str(root)}}]
        )
    )
    campaign_id = create_campaign(database_url, spec)
    assert CampaignRunner(database_url, campaign_id, LocalEvaluator()).run() == "failed"
    engine = get_engine(database_url)
    with session_scope(engine) as s:
        first = repo.get_campaign(s, campaign_id=campaign_id).error
        candidates = repo.count_candidates(s, campaign_id=campaign_id)
        repo.set_campaign_status(s, campaign_id=campaign_id, status="running", expected=["failed"])
    assert "dataset 'mnist' not found" in first

    evaluator = LocalEvaluator()
    assert CampaignRunner(database_url, campaign_id, evaluator).run() == "failed"
    with session_scope(engine, readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=campaign_id)
        assert campaign.status == "failed" and campaign.error == first
        assert repo.count_candidates(s, campaign_id=campaign_id) == candidates
    assert evaluator.in_flight() == 0
