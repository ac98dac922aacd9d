"""Campaign routes over the test client: submit, list, inspect, actions, delete, bad input."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from layerforge.storage import get_engine, session_scope
from layerforge.storage import repository as repo
from layerforge.storage.models import Campaign, Event
from tests.api.helpers import API, small_spec, wait_for


def stored(client) -> list[tuple[int, str]]:
    url = client.app.state.settings.database_url
    with session_scope(get_engine(url), readonly=True) as s:
        return [(c.id, c.status) for c in s.scalars(select(Campaign).order_by(Campaign.id))]


def snapshot(client, campaign_id: int) -> tuple:
    url = client.app.state.settings.database_url
    with session_scope(get_engine(url), readonly=True) as s:
        c = repo.get_campaign(s, campaign_id=campaign_id)
        events = s.scalar(select(func.count()).select_from(Event))
        return (c.status, c.updated_at, c.finished_at, events, len(stored(client)))


def test_submit_returns_202_with_location(client):
    response = client.post(f"{API}/campaigns", json=small_spec(name="first"))
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"{API}/campaigns/{body['id']}"
    assert body["status"] == "queued" and body["name"] == "first"
    assert body["progress"] == {"candidates": 0, "budget": 12, "fraction": 0.0}
    assert body["objectives"] == [{"name": "accuracy:mlp/mnist1d", "maximize": True}]
    again = client.get(response.headers["location"])
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert body["created_at"].endswith(("Z", "+00:00"))


def test_idempotency_key_returns_the_same_campaign(client):
    headers = {"Idempotency-Key": "retry-me"}
    first = client.post(f"{API}/campaigns", json=small_spec(), headers=headers)
    second = client.post(f"{API}/campaigns", json=small_spec(), headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert len(stored(client)) == 1
    other = client.post(f"{API}/campaigns", json=small_spec(name="different"), headers=headers)
    assert other.status_code == 409
    assert "retry-me" in other.json()["error"]["message"]
    assert len(stored(client)) == 1
    assert client.post(f"{API}/campaigns", json=small_spec()).json()["id"] != first.json()["id"]


def test_list_is_newest_first_with_an_opaque_cursor_and_a_status_filter(client):
    ids = [
        client.post(f"{API}/campaigns", json=small_spec(name=f"c{i}")).json()["id"]
        for i in range(5)
    ]
    client.post(f"{API}/campaigns/{ids[1]}/pause")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{API}/campaigns", params=params).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 2
    assert seen == sorted(ids, reverse=True)
    paused = client.get(f"{API}/campaigns", params={"status": "paused"}).json()
    assert [c["id"] for c in paused["items"]] == [ids[1]] and paused["next_cursor"] is None
    assert client.get(f"{API}/campaigns", params={"cursor": "garbage!"}).status_code == 400
    first = client.get(f"{API}/campaigns", params={"limit": 1}).json()["next_cursor"]
    mixed = client.get(f"{API}/campaigns", params={"cursor": first, "status": "paused"})
    assert mixed.status_code == 400 and mixed.json()["error"]["code"] == "bad_cursor"
    for limit in (0, 501, "x"):
        bad = client.get(f"{API}/campaigns", params={"limit": limit})
        assert bad.status_code == 422 and "query.limit" in bad.json()["error"]["message"]
    assert client.get(f"{API}/campaigns", params={"status": "sleeping"}).status_code == 422


def test_detail_of_a_finished_campaign(live_client):
    cid = live_client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
    body = wait_for(live_client, cid)
    assert body["status"] == "completed"
    assert sum(body["counts"].values()) == 12
    assert set(body["counts"]) == {
        "proposed",
        "running",
        "completed",
        "rejected",
        "failed",
        "duplicate",
        "cancelled",
        "stopped",
    }
    rejected = body["counts"]["rejected"]
    assert sum(stage["rejected"] for stage in body["funnel"].values()) == rejected
    name = "accuracy:mlp/mnist1d"
    assert 0.1 <= body["best"][name] <= 1.0
    assert body["hypervolume"] == pytest.approx(body["best"][name])  # 1 objective, ref 0
    assert body["elapsed_seconds"] > 0
    assert body["estimate"]["remaining_candidates"] == 0
    assert body["estimate"]["remaining_seconds"] == 0.0
    assert body["progress"]["fraction"] == 1.0
    assert body["evaluations"]["completed"] == 12
    history = live_client.get(f"{API}/campaigns/{cid}/hypervolume").json()["points"]
    assert len(history) == 12
    values = [p["hypervolume"] for p in history]
    assert values == sorted(values) and values[-1] == pytest.approx(body["hypervolume"])
    short = live_client.get(f"{API}/campaigns/{cid}/hypervolume", params={"max_points": 3})
    assert [p["evaluations"] for p in short.json()["points"]][-1] == 12
    assert len(short.json()["points"]) == 3


def test_estimate_while_running_uses_the_rate_and_the_budget(client):
    cid = client.post(f"{API}/campaigns", json=small_spec(budget={"max_candidates": 10})).json()[
        "id"
    ]
    url = client.app.state.settings.database_url
    with session_scope(get_engine(url)) as s:
        for i in range(4):
            candidate = repo.add_candidate(
                s,
                campaign_id=cid,
                graph={},
                text=f"c{i}",
                fingerprint=f"f{i}",
                origin="random",
                status="completed",
            )
        repo.set_campaign_status(s, campaign_id=cid, status="running")
        repo.touch_campaign(s, campaign_id=cid, owner="test", elapsed_seconds=8.0)
    body = client.get(f"{API}/campaigns/{cid}").json()
    estimate = body["estimate"]
    assert body["elapsed_seconds"] == 8.0
    assert estimate["rate_per_second"] == pytest.approx(0.5)
    assert estimate["remaining_candidates"] == 6
    assert estimate["remaining_seconds"] == pytest.approx(12.0)
    assert estimate["limited_by"] == "candidates"
    assert candidate.id > 0


def test_pause_resume_cancel_follow_the_state_rules(client):
    cid = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
    assert client.post(f"{API}/campaigns/{cid}/resume").status_code == 409  # queued
    paused = client.post(f"{API}/campaigns/{cid}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert client.get(f"{API}/campaigns/{cid}").json()["status"] == "paused"
    assert client.post(f"{API}/campaigns/{cid}/pause").status_code == 409
    resumed = client.post(f"{API}/campaigns/{cid}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    cancelled = client.post(f"{API}/campaigns/{cid}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.get(f"{API}/campaigns/{cid}").json()["finished_at"] is not None
    for action in ("pause", "cancel"):
        assert client.post(f"{API}/campaigns/{cid}/{action}").status_code == 409


def test_resume_of_a_cancelled_campaign_is_409_naming_both_states_and_changes_nothing(client):
    cid = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
    client.post(f"{API}/campaigns/{cid}/cancel")
    before = snapshot(client, cid)
    response = client.post(f"{API}/campaigns/{cid}/resume")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "invalid_state"
    assert "'cancelled'" in error["message"] and "'paused'" in error["message"]
    assert snapshot(client, cid) == before


def test_delete_only_finished_campaigns(client):
    cid = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
    refused = client.delete(f"{API}/campaigns/{cid}")
    assert refused.status_code == 409 and "'queued'" in refused.json()["error"]["message"]
    assert stored(client) == [(cid, "queued")]
    client.post(f"{API}/campaigns/{cid}/cancel")
    assert client.delete(f"{API}/campaigns/{cid}").status_code == 204
    assert stored(client) == []
    assert client.get(f"{API}/campaigns/{cid}").status_code == 404
    assert client.delete(f"{API}/campaigns/{cid}").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/campaigns/999",
        "/campaigns/999/pareto",
        "/campaigns/999/hypervolume",
        "/campaigns/999/candidates",
        "/campaigns/999/events",
        "/candidates/999",
        "/candidates/999/export",
        "/candidates/999/curve",
    ],
)
def test_unknown_ids_are_404_in_the_error_shape(client, path):
    response = client.get(API + path)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found" and "999" in error["message"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("post", "/campaigns/999/pause"),
        ("post", "/campaigns/999/resume"),
        ("post", "/campaigns/999/cancel"),
        ("delete", "/campaigns/999"),
    ],
)
def test_actions_on_unknown_campaigns_are_404(client, method, path):
    response = getattr(client, method)(API + path)
    assert response.status_code == 404 and "999" in response.json()["error"]["message"]


def test_framework_errors_use_the_error_shape(client):
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = client.put(f"{API}/campaigns")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    bad_id = client.get(f"{API}/campaigns/abc")
    assert bad_id.status_code == 422
    assert bad_id.json()["error"]["message"].startswith("path.campaign_id:")


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"budget": {"max_candidates": "many"}}, "body.budget.max_candidates"),
        ({"budget": {"max_candidates": 0}}, "body.budget.max_candidates"),
        ({"parallelism": [1]}, "body.parallelism"),
        ({"colour": "red"}, "body.colour"),
        ({"space": {"kind": "activation", "ops": "swish", "depth": 3}}, "body.space.depth"),
        ({"space": {"kind": "quantum"}}, "body.space.kind"),
        ({"proxies": []}, "body.proxies"),
        ({"seeds": ["__import__('os')"]}, "seeds[0]"),
        ({"strategy": {"name": "annealing"}}, "body.strategy.name"),
        (
            {"space": {"kind": "activation", "ops": "swish", "require_statistic": True}},
            "require_statistic applies only to the normact space",
        ),
        (
            {
                "space": {"kind": "normact", "ops": "evonorm", "require_statistic": True},
                "seeds": ["evonorm_s0", "max(x, 0) * weight + bias"],
            },
            "uses no statistic",
        ),
    ],
)
def test_bad_specs_are_422_naming_the_field_and_store_nothing(client, body, fragment):
    response = client.post(f"{API}/campaigns", json=small_spec(**body))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert fragment in error["message"]
    assert any(
        fragment.split("[")[0] in f["path"] or fragment in f["message"] for f in error["fields"]
    )
    assert stored(client) == []


@pytest.mark.parametrize("payload", [b"{", b"{'name': 1}", b"[1, 2", b"\xff\xfe"])
def test_malformed_json_is_400_and_stores_nothing(client, payload):
    response = client.post(
        f"{API}/campaigns", content=payload, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    error = response.json()["error"]
    assert "JSON" in error["message"] or "json" in error["message"]
    assert stored(client) == []


def test_wrong_body_type_is_422(client):
    for payload in ([1, 2], "spec", 42, None):
        response = client.post(
            f"{API}/campaigns",
            content=json.dumps(payload),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422, payload
        assert response.json()["error"]["message"].startswith("body")
    assert stored(client) == []


def test_idempotency_key_too_long_is_422(client):
    response = client.post(
        f"{API}/campaigns", json=small_spec(), headers={"Idempotency-Key": "k" * 201}
    )
    assert response.status_code == 422
    assert "header.idempotency-key" in response.json()["error"]["message"]
    assert stored(client) == []
