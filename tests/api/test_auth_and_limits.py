"""Bearer token on every mutating route (walking the router), and the 413 body limit."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from layerforge.api.deps import MUTATING_METHODS
from tests.api.helpers import API, make_app, small_spec

TOKEN = "s3cret-token"


@pytest.fixture
def secured(tmp_path):
    app = make_app(tmp_path, api_token=TOKEN, max_body_bytes=4096)
    with TestClient(app) as client:
        yield app, client


def fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def walk(app):
    """Every route of the app with its full path (FastAPI >= 0.16x keeps included routers
    as branches; older versions copy the routes into ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI
        return [(r.path, r.methods or set(), r) for r in app.routes]
    return [(r.path, r.methods or set(), r.original_route) for r in iter_route_contexts(app.routes)]


def mutating_routes(app):
    for path, methods, route in walk(app):
        if isinstance(route, Mount):
            continue
        for method in sorted(set(methods) & MUTATING_METHODS):
            yield method, path


def test_the_walk_sees_every_api_route(app):
    paths = {path for path, _, route in walk(app) if isinstance(route, APIRoute)}
    assert {
        "/api/v1/campaigns",
        "/api/v1/campaigns/{campaign_id}/resume",
        "/api/v1/candidates/{candidate_id}/export",
        "/healthz",
        "/metrics",
    } <= paths


def test_every_mutating_route_rejects_a_missing_or_wrong_token(secured):
    app, client = secured
    routes = list(mutating_routes(app))
    assert len(routes) >= 5  # POST campaigns, pause, resume, cancel, DELETE
    for method, path in routes:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": TOKEN},
            {"Authorization": f"Basic {TOKEN}"},
        ):
            response = client.request(method, fill(path), json=small_spec(), headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"


def test_a_route_added_later_is_protected_too(secured):
    app, client = secured

    @app.post("/api/v1/added-later")
    def added_later() -> dict:
        return {"ok": True}

    @app.delete("/added-elsewhere/{item}")
    def added_elsewhere(item: int) -> dict:
        return {"ok": True}

    assert ("POST", "/api/v1/added-later") in list(mutating_routes(app))
    assert client.post("/api/v1/added-later").status_code == 401
    assert client.delete("/added-elsewhere/3").status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/api/v1/added-later", headers=auth).json() == {"ok": True}


def test_with_the_token_mutations_work_and_reads_stay_open(secured):
    _, client = secured
    auth = {"Authorization": f"Bearer {TOKEN}"}
    created = client.post(f"{API}/campaigns", json=small_spec(), headers=auth)
    assert created.status_code == 202
    cid = created.json()["id"]
    assert client.get(f"{API}/campaigns/{cid}").status_code == 200
    assert client.get(f"{API}/campaigns").status_code == 200
    assert client.post(f"{API}/campaigns/{cid}/cancel").status_code == 401
    assert client.get(f"{API}/campaigns/{cid}").json()["status"] == "queued"
    assert client.post(f"{API}/campaigns/{cid}/cancel", headers=auth).status_code == 200
    assert client.delete(f"{API}/campaigns/{cid}", headers=auth).status_code == 204


def test_no_token_configured_means_open_mutations(client):
    assert client.post(f"{API}/campaigns", json=small_spec()).status_code == 202


def test_openapi_documents_the_bearer_scheme(secured):
    _, client = secured
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for method, path in mutating_routes(client.app):
        operation = schema["paths"][path][method.lower()]
        assert {"bearerAuth": []} in operation["security"] and "401" in operation["responses"]
    assert "security" not in schema["paths"]["/api/v1/campaigns"]["get"]


def test_declared_oversized_body_is_413_and_stores_nothing(secured):
    _, client = secured
    auth = {"Authorization": f"Bearer {TOKEN}"}
    huge = small_spec(name="x" * 100, seeds=["relu"] * 2000)
    response = client.post(f"{API}/campaigns", json=huge, headers=auth)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "4096" in response.json()["error"]["message"]
    assert client.get(f"{API}/campaigns").json()["items"] == []


def test_streamed_oversized_body_without_length_is_413(secured):
    _, client = secured
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def chunks():
        yield b'{"name": "'
        for _ in range(100):
            yield b"y" * 100
        yield b'"}'

    response = client.post(f"{API}/campaigns", content=chunks(), headers=auth)
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413
    assert client.get(f"{API}/campaigns").json()["items"] == []


def test_lying_content_length_is_rejected(secured):
    _, client = secured
    response = client.post(
        f"{API}/campaigns",
        content=b"{}",
        headers={"Content-Length": "lots", "Content-Type": "application/json"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize("token", ["", "   ", "\t\n", "abc\x00def", "tok\x7fen", "tök", " tok"])
def test_a_blank_or_unprintable_token_fails_the_settings_naming_the_variable(token):
    from layerforge.api.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="LAYERFORGE_API_TOKEN"):
        load_settings(api_token=token)
    assert load_settings(api_token=TOKEN).api_token == TOKEN


@pytest.mark.parametrize("token", ["", "  "])
def test_serve_with_a_blank_token_exits_naming_the_variable(tmp_path, token):
    import os
    import subprocess

    from tests.reliability.helpers import LAYERFORGE

    env = {**os.environ, "LAYERFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'lf.db'}"}
    env["LAYERFORGE_API_TOKEN"] = token
    result = subprocess.run(
        [LAYERFORGE, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "LAYERFORGE_API_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lf.db").exists()
