"""Candidates, export, curves, events, metrics, ops and the dashboard's static files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from layerforge.api.routes.candidates import safe_filename
from layerforge.storage import get_engine, session_scope
from layerforge.storage import repository as repo
from tests.api.helpers import API, small_spec, wait_for

OBJ = "accuracy:mlp/mnist1d"


@pytest.fixture
def finished(live_client):
    cid = live_client.post(f"{API}/campaigns", json=small_spec(budget={"max_candidates": 20}))
    campaign_id = cid.json()["id"]
    wait_for(live_client, campaign_id)
    return live_client, campaign_id


def all_pages(client, campaign_id, **params):
    items, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"{API}/campaigns/{campaign_id}/candidates", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_candidates_sorted_by_an_objective_with_a_cursor(finished):
    client, cid = finished
    by_id = all_pages(client, cid, limit=3)
    assert [c["id"] for c in by_id] == sorted(c["id"] for c in by_id) and len(by_id) == 20
    for order in ("desc", "asc"):
        ranked = all_pages(client, cid, sort=OBJ, order=order, limit=3)
        assert sorted(c["id"] for c in ranked) == [c["id"] for c in by_id]
        scored = [c["objectives"][OBJ] for c in ranked if c["objectives"].get(OBJ) is not None]
        assert scored == sorted(scored, reverse=order == "desc") and len(scored) >= 5
        # candidates without a value come last either way
        tail = [c["objectives"].get(OBJ) for c in ranked[len(scored) :]]
        assert all(v is None for v in tail)
    rejected = all_pages(client, cid, status="rejected")
    assert rejected and all(c["status"] == "rejected" for c in rejected)
    assert len(rejected) == client.get(f"{API}/campaigns/{cid}").json()["counts"]["rejected"]


def test_candidate_listing_rejects_bad_sort_and_foreign_cursors(finished):
    client, cid = finished
    bad = client.get(f"{API}/campaigns/{cid}/candidates", params={"sort": "beauty"})
    assert bad.status_code == 422 and OBJ in bad.json()["error"]["message"]
    cursor = client.get(f"{API}/campaigns/{cid}/candidates", params={"limit": 2}).json()[
        "next_cursor"
    ]
    other = client.get(f"{API}/campaigns/{cid}/candidates", params={"cursor": cursor, "sort": OBJ})
    assert other.status_code == 400
    campaigns_cursor = client.get(f"{API}/campaigns", params={"limit": 1}).json()
    assert (
        client.get(
            f"{API}/campaigns/{cid}/candidates", params={"cursor": "eyJrIjoiY2FtcGFpZ25zIn0"}
        ).status_code
        == 400
    )
    assert campaigns_cursor["next_cursor"] is None


def test_candidate_detail_has_graph_text_latex_lineage_evaluations_rejection(finished):
    client, cid = finished
    items = all_pages(client, cid)
    child = next(c for c in items if c["parent_ids"])
    detail = client.get(f"{API}/candidates/{child['id']}").json()
    assert detail["graph"]["space"] == "activation" and detail["text"] == child["text"]
    assert detail["latex"]
    assert detail["lineage"][0]["id"] == child["parent_ids"][0]
    assert detail["evaluations"][0]["status"] == "completed"
    rejected = next(c for c in items if c["status"] == "rejected")
    rejection = client.get(f"{API}/candidates/{rejected['id']}").json()["rejection"]
    assert rejection["stage"] == "quality" and rejection["reason"] == "simulated"
    completed = next(c for c in items if c["status"] == "completed")
    assert client.get(f"{API}/candidates/{completed['id']}").json()["objectives"][OBJ] > 0


def test_candidate_detail_shows_the_formula_the_workers_stored(app, client):
    from layerforge.grammar import export, parse

    campaign_id = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
    graph = parse("x * sigmoid(x)", "activation")
    with session_scope(get_engine(app.state.settings.database_url)) as s:
        stored, computed = repo.add_candidates(
            s,
            campaign_id=campaign_id,
            rows=[
                {
                    "graph": graph.to_dict(),
                    "text": f"swish{i}",
                    "fingerprint": f"fp{i}",
                    "origin": "seed",
                    "num_nodes": 3,
                }
                for i in range(2)
            ],
        )
        [evaluation] = repo.add_running_evaluations(
            s, campaign_id=campaign_id, candidate_ids=[stored], owner="t", lease_seconds=60
        )
        repo.lock_unfinished_evaluations(s, evaluation_ids=[evaluation])
        repo.finish_evaluations(
            s,
            rows=[
                {"id": evaluation, "status": "completed", "result": {"latex": "\\mathrm{stored}"}}
            ],
        )
    assert client.get(f"{API}/candidates/{stored}").json()["latex"] == "\\mathrm{stored}"
    # a candidate no worker saw gets its formula computed by the service
    assert (
        client.get(f"{API}/candidates/{computed}").json()["latex"] == export(graph, "latex").strip()
    )


def test_pareto_front_and_dominated_points(finished):
    client, cid = finished
    pareto = client.get(f"{API}/campaigns/{cid}/pareto").json()
    assert pareto["objectives"] == [{"name": OBJ, "maximize": True}]
    assert len(pareto["front"]) >= 1 and all(p["on_front"] for p in pareto["front"])
    best = max(p["values"][OBJ] for p in pareto["front"] + pareto["dominated"])
    assert all(p["values"][OBJ] == best for p in pareto["front"])
    baseline = all_pages(client, cid)[0]
    assert baseline["origin"] == "baseline" and baseline["seq"] == 0
    points = {p["candidate_id"]: p for p in pareto["front"] + pareto["dominated"]}
    assert (baseline["id"] in points) == (baseline["status"] == "completed")
    if baseline["id"] in points:
        assert points[baseline["id"]]["origin"] == "baseline"


@pytest.mark.parametrize(
    "fmt,ext",
    [
        ("pytorch", "py"),
        ("numpy", "py"),
        ("jax", "py"),
        ("latex", "tex"),
        ("sympy", "py"),
        ("json", "json"),
    ],
)
def test_export_downloads_with_a_safe_filename(finished, fmt, ext):
    client, cid = finished
    candidate = all_pages(client, cid, status="completed")[0]
    response = client.get(f"{API}/candidates/{candidate['id']}/export", params={"format": fmt})
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    match = re.fullmatch(r'attachment; filename="([A-Za-z0-9_-]+)\.' + ext + '"', disposition)
    assert match, disposition
    assert str(candidate["id"]) in match.group(1)
    assert response.text.strip()
    if fmt == "json":
        assert json.loads(response.text)["space"] == "activation"
    bad = client.get(f"{API}/candidates/{candidate['id']}/export", params={"format": "exe"})
    assert bad.status_code == 422 and "query.format" in bad.json()["error"]["message"]


def test_export_filename_of_a_hostile_campaign_name_stays_in_its_folder(client, tmp_path):
    cid = client.post(
        f"{API}/campaigns", json=small_spec(name="../../etc/passwd .bashrc\\x")
    ).json()["id"]
    url = client.app.state.settings.database_url
    from layerforge.grammar import get_builtin

    with session_scope(get_engine(url)) as s:
        cand = repo.add_candidate(
            s,
            campaign_id=cid,
            graph=get_builtin("silu").to_dict(),
            text="x * sigmoid(x)",
            fingerprint="f",
            origin="seed",
        )
    response = client.get(f"{API}/candidates/{cand.id}/export", params={"format": "pytorch"})
    name = re.search(r'filename="([^"]+)"', response.headers["content-disposition"]).group(1)
    assert name == f"etc_passwd_bashrc_x_candidate_{cand.id}.py"
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


@hsettings(max_examples=200, deadline=None)
@given(stem=st.text(max_size=300), fmt=st.sampled_from(["pytorch", "latex", "json", "sympy"]))
def test_safe_filename_never_escapes(stem, fmt):
    name = safe_filename(stem, fmt)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,100}\.(py|tex|json)", name)
    folder = Path("/srv/downloads")
    assert (folder / name).resolve().parent == folder
    assert not name.startswith(("-", "."))


def test_curves_for_activation_and_normact(client):
    import math

    from layerforge.grammar import get_builtin

    cid = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
    url = client.app.state.settings.database_url
    with session_scope(get_engine(url)) as s:
        act = repo.add_candidate(
            s,
            campaign_id=cid,
            graph=get_builtin("silu").to_dict(),
            text="x * sigmoid(x)",
            fingerprint="a",
            origin="seed",
        )
        norm = repo.add_candidate(
            s,
            campaign_id=cid,
            graph=get_builtin("evonorm_s0").to_dict(),
            text="evonorm_s0",
            fingerprint="b",
            origin="seed",
        )
    curve = client.get(f"{API}/candidates/{act.id}/curve", params={"points": 101}).json()
    assert curve["kind"] == "activation" and len(curve["x"]) == 101
    for x, y, dy in zip(curve["x"], curve["y"], curve["dy"]):
        sig = 1 / (1 + math.exp(-x))
        assert y == pytest.approx(x * sig, abs=1e-9)
        assert dy == pytest.approx(sig * (1 + x * (1 - sig)), abs=1e-9)
    response = client.get(f"{API}/candidates/{norm.id}/curve").json()
    assert response["kind"] == "normact" and response["dy"] is None
    assert response["x"] == sorted(response["x"]) and len(response["y"]) == len(response["x"])
    assert client.get(f"{API}/candidates/{act.id}/curve", params={"points": 1}).status_code == 422
    latex = client.get(f"{API}/candidates/{norm.id}").json()["latex"]
    assert latex is None or isinstance(latex, str)


def read_events(client, path, headers=None, stop_after=None):
    events, current = [], {}
    with client.stream("GET", path, headers=headers or {}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith(":"):
                events.append({"comment": line})
            elif line == "":
                if current:
                    events.append(current)
                    current = {}
                    if stop_after and len([e for e in events if "event" in e]) >= stop_after:
                        break
            else:
                key, _, value = line.partition(": ")
                current[key] = value
    return events


def test_event_stream_delivers_progress_and_ends_when_the_campaign_is_done(live_client):
    cid = live_client.post(f"{API}/campaigns", json=small_spec()).json()["id"]
    events = read_events(live_client, f"{API}/campaigns/{cid}/events")
    kinds = [e.get("event") for e in events if "event" in e]
    assert kinds[0] == "created" and kinds[-1] == "end"
    assert "progress" in kinds and "candidate" in kinds
    progress = [json.loads(e["data"]) for e in events if e.get("event") == "progress"]
    assert progress[-1]["candidates"] == 12 and progress[-1]["budget"] == 12
    assert json.loads(events[-1]["data"]) == {"status": "completed"}
    ids = [int(e["id"]) for e in events if "id" in e]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    # reconnecting with Last-Event-ID resumes after that event
    middle = ids[len(ids) // 2]
    rest = read_events(
        live_client, f"{API}/campaigns/{cid}/events", headers={"Last-Event-ID": str(middle)}
    )
    assert [int(e["id"]) for e in rest if "id" in e] == [i for i in ids if i > middle]
    after = read_events(live_client, f"{API}/campaigns/{cid}/events?after={ids[-2]}")
    assert [int(e["id"]) for e in after if "id" in e] == [ids[-1]]


def test_event_stream_keeps_alive_and_has_a_bounded_lifetime(app, client):
    app.state.sse_keepalive_seconds = 0.2
    app.state.sse_poll_seconds = 0.05
    cid = client.post(f"{API}/campaigns", json=small_spec()).json()["id"]  # stays queued
    events = read_events(client, f"{API}/campaigns/{cid}/events?timeout=1")
    assert [e["event"] for e in events if "event" in e] == ["created"]
    assert sum(1 for e in events if e.get("comment") == ": keep-alive") >= 2
    bad = client.get(f"{API}/campaigns/{cid}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422


def test_metrics_in_prometheus_text(finished):
    client, cid = finished
    client.get(f"{API}/campaigns/{cid}")
    client.get(f"{API}/campaigns/424242")
    text = client.get("/metrics").text
    assert 'layerforge_campaigns{status="completed"} 1' in text
    assert 'layerforge_candidates{status="completed"}' in text
    assert 'layerforge_evaluations{status="completed"} 20' in text
    assert "# TYPE layerforge_http_requests_total counter" in text
    assert re.search(
        r'layerforge_http_requests_total\{method="GET",'
        r'route="/api/v1/campaigns/\{campaign_id\}",status="404"\} 1',
        text,
    )
    assert re.search(
        r'layerforge_http_requests_total\{method="POST",route="/api/v1/campaigns",'
        r'status="202"\} 1',
        text,
    )
    assert (
        "layerforge_controller_active_runners 0" in text
        or "layerforge_controller_active_runners 1" in text
    )


def test_ops_and_builtins(client):
    ops = client.get(f"{API}/ops", params={"kind": "normact"}).json()
    names = {op["name"] for op in ops}
    assert {"std", "mean", "sigmoid"} <= names
    activation = {op["name"] for op in client.get(f"{API}/ops?kind=activation").json()}
    assert "std" not in activation and "sigmoid" in activation
    builtins = client.get(f"{API}/builtins", params={"kind": "normact"}).json()
    assert "evonorm_s0" in builtins and "relu" not in builtins
    assert client.get(f"{API}/builtins?kind=other").status_code == 422


def test_dashboard_and_local_plotly_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/vendor/plotly.min.js" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    plotly = client.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/static/../app.py").status_code == 404
    assert "paths" in client.get("/openapi.json").json()
