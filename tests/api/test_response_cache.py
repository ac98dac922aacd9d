"""The read endpoints' answer cache: never stale after a write, ETag / 304, bounded size."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from layerforge.api.cache import ResponseCache, etag_matches
from layerforge.storage import get_engine, session_scope
from layerforge.storage import repository as repo
from tests.api.helpers import API, make_app, small_spec, wait_for

OBJ = "accuracy:mlp/mnist1d"


def _session(app):
    return session_scope(get_engine(app.state.settings.database_url))


@pytest.fixture
def stored(app, client):
    """A queued campaign (no controller) with three candidates written through the repository,
    as the controller writes them: the API only ever learns of them from the database."""
    campaign_id = client.post(f"{API}/campaigns", json=small_spec(objectives=["accuracy"])).json()[
        "id"
    ]
    with _session(app) as s:
        ids = repo.add_candidates(
            s,
            campaign_id=campaign_id,
            rows=[
                {
                    "graph": {"space": "activation", "nodes": [{"op": "x"}]},
                    "text": f"x{i}",
                    "fingerprint": f"fp{i}",
                    "origin": "seed",
                    "num_nodes": 1,
                }
                for i in range(3)
            ],
        )
    return campaign_id, ids


def _get(client, path, etag=None):
    response = client.get(path, headers={"If-None-Match": etag} if etag else {})
    assert response.status_code in (200, 304), response.text
    return response


def test_candidate_pages_change_with_every_kind_of_write(app, client, stored):
    campaign_id, ids = stored
    page = f"{API}/campaigns/{campaign_id}/candidates"
    first = _get(client, page)
    assert [c["status"] for c in first.json()["items"]] == ["proposed"] * 3
    assert _get(client, page, first.headers["ETag"]).status_code == 304

    def reject(s):  # the controller stores a rejection and the status together
        repo.add_rejections(
            s,
            campaign_id=campaign_id,
            rows=[{"candidate_id": ids[1], "stage": "quality", "reason": "low"}],
        )
        repo.set_candidate_status(s, candidate_id=ids[1], status="rejected")

    writes = [  # each changes what the page shows
        lambda s: repo.set_candidate_statuses(s, statuses={ids[0]: "running"}),
        lambda s: repo.add_objective_values(
            s, campaign_id=campaign_id, values={ids[0]: {OBJ: 0.5}}
        ),
        reject,
        lambda s: repo.set_objective_values(s, candidate_id=ids[0], values={OBJ: 0.75}),
        lambda s: repo.add_candidates(
            s,
            campaign_id=campaign_id,
            rows=[
                {
                    "graph": {"space": "activation", "nodes": [{"op": "x"}]},
                    "text": "x3",
                    "fingerprint": "fp3",
                    "origin": "mutation",
                    "num_nodes": 1,
                }
            ],
        ),
    ]
    previous = first
    for write in writes:
        with _session(app) as s:
            write(s)
        current = _get(client, page, previous.headers["ETag"])
        assert current.status_code == 200, "a stale page was confirmed as current after a write"
        assert current.headers["ETag"] != previous.headers["ETag"]
        assert current.json() != previous.json()
        previous = current
    items = {c["id"]: c for c in previous.json()["items"]}
    assert items[ids[0]]["objectives"] == {OBJ: 0.75} and items[ids[1]]["status"] == "rejected"
    assert len(items) == 4


def test_candidate_detail_and_pareto_follow_writes(app, client, stored):
    campaign_id, ids = stored
    detail, pareto = f"{API}/candidates/{ids[2]}", f"{API}/campaigns/{campaign_id}/pareto"
    assert _get(client, detail).json()["evaluations"] == []
    assert _get(client, pareto).json()["front"] == []
    with _session(app) as s:
        [evaluation] = repo.add_running_evaluations(
            s, campaign_id=campaign_id, candidate_ids=[ids[2]], owner="t", lease_seconds=60
        )
    assert [e["status"] for e in _get(client, detail).json()["evaluations"]] == ["running"]
    with _session(app) as s:
        repo.lock_unfinished_evaluations(s, evaluation_ids=[evaluation])
        repo.finish_evaluations(
            s, rows=[{"id": evaluation, "status": "completed", "result": {"ok": True}}]
        )
        repo.add_objective_values(s, campaign_id=campaign_id, values={ids[2]: {OBJ: 0.9}})
    body = _get(client, detail).json()
    assert body["evaluations"][0]["status"] == "completed" and body["objectives"] == {OBJ: 0.9}
    assert [p["candidate_id"] for p in _get(client, pareto).json()["front"]] == [ids[2]]
    with _session(app) as s:
        repo.record_rejection(s, candidate_id=ids[2], stage="stability", reason="exploded")
    assert _get(client, detail).json()["rejection"]["stage"] == "stability"


def test_a_campaign_that_reuses_a_deleted_campaigns_id_gets_its_own_answers(app, client):
    first = client.post(f"{API}/campaigns", json=small_spec(name="first")).json()["id"]
    client.post(f"{API}/campaigns/{first}/cancel")
    assert client.get(f"{API}/campaigns/{first}/pareto").json()["objectives"][0]["name"] == OBJ
    assert client.delete(f"{API}/campaigns/{first}").status_code == 204
    assert client.get(f"{API}/campaigns/{first}/pareto").status_code == 404
    second = client.post(
        f"{API}/campaigns", json=small_spec(name="second", objectives=["accuracy", "nodes"])
    ).json()["id"]
    names = [o["name"] for o in client.get(f"{API}/campaigns/{second}/pareto").json()["objectives"]]
    assert names == [OBJ, "nodes"]


def test_cached_answers_equal_fresh_ones_after_a_live_campaign(live_client, tmp_path):
    """Poll while the controller writes, then compare with an app whose cache is empty."""
    campaign_id = live_client.post(
        f"{API}/campaigns", json=small_spec(budget={"max_candidates": 30})
    ).json()["id"]
    paths = [
        f"{API}/campaigns/{campaign_id}/pareto",
        f"{API}/campaigns/{campaign_id}/candidates?limit=7",
        f"{API}/campaigns/{campaign_id}/candidates?sort={OBJ}&limit=7",
    ]
    while live_client.get(f"{API}/campaigns/{campaign_id}").json()["status"] not in (
        "completed",
        "failed",
        "cancelled",
    ):
        for path in paths:
            _get(live_client, path)
        items = live_client.get(paths[1]).json()["items"]
        paths += [f"{API}/candidates/{c['id']}" for c in items if f"/{c['id']}" not in str(paths)]
    wait_for(live_client, campaign_id)
    with TestClient(make_app(tmp_path)) as fresh:
        for path in paths:
            assert live_client.get(path).json() == fresh.get(path).json(), path


def test_errors_are_not_cached_and_304_needs_the_current_tag(client, stored):
    campaign_id, _ = stored
    page = f"{API}/campaigns/{campaign_id}/candidates"
    for _ in range(2):
        assert client.get(page, params={"sort": "beauty"}).status_code == 422
        assert client.get(page, params={"cursor": "nonsense"}).status_code == 400
    assert client.get(f"{API}/candidates/999999").status_code == 404
    ok = client.get(page)
    assert client.get(page, headers={"If-None-Match": '"other"'}).status_code == 200
    assert (
        client.get(page, headers={"If-None-Match": f'"x", W/{ok.headers["ETag"]}'}).status_code
        == 304
    )


def _metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_repeated_reads_are_answered_before_routing_with_the_same_bytes(app, client, stored):
    campaign_id, ids = stored
    served = _metric(client, "layerforge_response_cache_served_total")
    paths = [
        f"{API}/campaigns/{campaign_id}/pareto",
        f"{API}/candidates/{ids[0]}",
        f"{API}/campaigns/{campaign_id}/candidates?limit=2",
        f"{API}/campaigns/{campaign_id}/candidates?sort={OBJ}&order=asc&limit=2",
    ]
    built = [client.get(path) for path in paths]  # built by the routes
    again = [client.get(path) for path in paths]  # answered by the middleware
    assert _metric(client, "layerforge_response_cache_served_total") == served + len(paths)
    for first, second in zip(built, again):
        assert second.status_code == first.status_code == 200
        assert second.content == first.content
        for header in ("content-type", "content-length", "etag", "cache-control"):
            assert second.headers[header] == first.headers[header], header
    # another spelling of a request shares its answer once the route has seen it
    respelled = client.get(f"{API}/campaigns/{campaign_id}/candidates?order=desc&limit=2")
    assert respelled.content == built[2].content
    # answers from memory are counted under their route like any other
    metrics = client.get("/metrics").text
    assert f'route="{API}/candidates/{{candidate_id}}",status="200"}} 2' in metrics
    # a write anywhere in the campaign sends the next read back to the route, fresh
    with _session(app) as s:
        repo.add_objective_values(s, campaign_id=campaign_id, values={ids[0]: {OBJ: 0.25}})
    fresh = client.get(paths[1])
    assert (
        fresh.json()["objectives"] == {OBJ: 0.25}
        and fresh.headers["etag"] != built[1].headers["etag"]
    )
    served_before = _metric(client, "layerforge_response_cache_served_total")
    assert client.get(paths[1], headers={"If-None-Match": fresh.headers["etag"]}).status_code == 304
    assert _metric(client, "layerforge_response_cache_served_total") == served_before + 1
    assert _metric(client, "layerforge_response_cache_entries") >= len(paths)


def test_a_deleted_campaigns_answers_are_not_served_from_memory(client):
    campaign_id = client.post(f"{API}/campaigns", json=small_spec(name="gone")).json()["id"]
    path = f"{API}/campaigns/{campaign_id}/candidates?limit=3"
    assert client.get(path).status_code == client.get(path).status_code == 200
    client.post(f"{API}/campaigns/{campaign_id}/cancel")
    assert client.delete(f"{API}/campaigns/{campaign_id}").status_code == 204
    response = client.get(path)
    assert response.status_code == 404 and "does not exist" in response.json()["error"]["message"]


def test_the_cache_is_bounded_and_builds_each_answer_once():
    cache = ResponseCache(max_entries=3, max_bytes=10)
    for key in "abcd":
        cache.store(key, 1, b"12")
    assert len(cache) == 3 and cache.lookup("a", 1) is None and cache.lookup("d", 1) is not None
    cache.store("e", 1, b"123456789")
    assert cache.lookup("d", 1) is None and cache.lookup("e", 1) is not None
    assert cache.lookup("e", 2) is None  # another version is a miss
    assert etag_matches("*", '"a"') and not etag_matches(None, '"a"')

    builds, started = [], threading.Barrier(8)

    def miss() -> None:
        started.wait()
        with cache.building("k"):
            if cache.lookup("k", 1) is None:
                builds.append(1)
                cache.store("k", 1, b"x")

    threads = [threading.Thread(target=miss) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == [1]


def test_cached_reads_on_either_backend(database_url, tmp_path):
    """On SQLite the version check and the detail build run on the event loop; on PostgreSQL
    in the thread pool. Either way a repeat is served from memory and a write shows at once."""
    application = make_app(tmp_path, database_url=database_url)
    with TestClient(application) as client:
        campaign_id = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
        with session_scope(get_engine(database_url)) as s:
            [candidate_id] = repo.add_candidates(
                s,
                campaign_id=campaign_id,
                rows=[
                    {
                        "graph": {"space": "activation", "nodes": [{"op": "x"}]},
                        "text": "x",
                        "fingerprint": "fp",
                        "origin": "seed",
                        "num_nodes": 1,
                    }
                ],
            )
        paths = [
            f"{API}/candidates/{candidate_id}",
            f"{API}/campaigns/{campaign_id}/pareto",
            f"{API}/campaigns/{campaign_id}/candidates?limit=5",
        ]
        first = [client.get(path) for path in paths]
        served = _metric(client, "layerforge_response_cache_served_total")
        again = [client.get(path) for path in paths]
        assert _metric(client, "layerforge_response_cache_served_total") == served + len(paths)
        assert [r.content for r in again] == [r.content for r in first]
        assert all(r.status_code == 200 for r in first + again)
        with session_scope(get_engine(database_url)) as s:
            repo.add_objective_values(s, campaign_id=campaign_id, values={candidate_id: {OBJ: 0.5}})
        assert client.get(paths[0]).json()["objectives"] == {OBJ: 0.5}
        assert client.get(f"{API}/candidates/999999").status_code == 404
