"""``layerforge.Client`` against a live ``layerforge serve``: every API operation, and every
kind of error as the typed exception carrying the API's status, code and message.

The server runs campaigns with the simulated evaluator (0.2 s an evaluation), needs a token
on mutating calls, and takes bodies up to 20 kB.
"""

from __future__ import annotations

import json

import pytest

import layerforge
from layerforge.client import API, OPERATIONS, Client, normalize_url
from layerforge.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    LayerforgeError,
    NotFoundError,
    PayloadTooLargeError,
    RemoteSpecError,
    ServerUnreachable,
    SpecError,
    ValidationError,
)
from layerforge.specs import validate
from tests.reliability.helpers import Server

pytestmark = pytest.mark.slow

TOKEN = "client-token"
SPEC = {
    "name": "client",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4},
    "seeds": ["x * sigmoid(x)"],
    "strategy": {"name": "evolution", "population": 8, "tournament": 2},
    "proxies": [{"arch": "mlp", "dataset": "mnist1d", "steps": 30}],
    "budget": {"max_candidates": 10},
    "parallelism": 2,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("client")
    running = Server(
        f"sqlite:///{folder / 'client.db'}",
        folder,
        env={
            "LAYERFORGE_EVALUATOR": "simulated",
            "LAYERFORGE_SIMULATED_SECONDS": "0.2",
            "LAYERFORGE_API_TOKEN": TOKEN,
            "LAYERFORGE_MAX_BODY_BYTES": "20000",
        },
    )
    running.start(timeout=120)
    yield running
    running.stop()


@pytest.fixture
def client(server):
    with Client(server.base, TOKEN) as c:
        yield c


def test_every_operation_of_the_openapi_document_has_a_method(client):
    document = client.openapi()
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations == set(OPERATIONS)
    for name in OPERATIONS.values():
        assert callable(getattr(client, name)), name


def test_service_operations(client):
    health = client.health()
    assert health["status"] == "ok" and health["database"]["ok"] is True
    assert health["version"] == layerforge.__version__
    assert "layerforge_campaigns" in client.metrics()
    ops = {op["name"]: op for op in client.list_ops()}
    assert ops["sigmoid"]["arity"] == 1 and "activation" in ops["sigmoid"]["kinds"]
    activation = {op["name"] for op in client.list_ops("activation")}
    assert "sigmoid" in activation and "std" not in activation and "std" in ops
    assert client.list_builtins("normact") == layerforge.list_builtins("normact")
    assert set(client.list_builtins()) == set(layerforge.list_builtins())


def test_a_campaign_from_submission_to_export(client, tmp_path):
    created = client.create_campaign(SPEC, idempotency_key="client-1")
    cid = created["id"]
    assert created["status"] in ("queued", "running") and created["name"] == "client"
    assert client.create_campaign(SPEC, idempotency_key="client-1")["id"] == cid

    seen = []
    final = client.wait(cid, timeout=300, on_event=seen.append)
    assert final["status"] == "completed" and final["progress"]["candidates"] == 10
    assert seen and seen[-1].kind == "end" and seen[-1].data == {"status": "completed"}
    kinds = {event.kind for event in seen}
    assert {"status", "progress", "candidate"} <= kinds
    ids = [e.id for e in seen if e.id is not None]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    replay = list(client.events(cid, after=ids[len(ids) // 2]))
    assert [e.id for e in replay if e.id is not None] == ids[len(ids) // 2 + 1 :]

    detail = client.get_campaign(cid)
    assert detail["spec"] == validate(SPEC).model_dump(mode="json")
    assert sum(detail["counts"].values()) == 10

    pareto = client.get_pareto(cid)
    objective = pareto["objectives"][0]["name"]
    assert pareto["front"] and all(p["on_front"] for p in pareto["front"])
    history = client.get_hypervolume(cid, max_points=3)
    assert 1 <= len(history["points"]) <= 3
    assert history["points"][-1]["hypervolume"] == pytest.approx(detail["hypervolume"])

    every = list(client.iter_candidates(cid, page_size=3))
    assert [c["seq"] for c in every] == sorted(c["seq"] for c in every)
    assert len(every) == 10 and len({c["id"] for c in every}) == 10
    first_page = client.list_candidates(cid, limit=3)
    assert len(first_page["items"]) == 3 and first_page["next_cursor"]
    ranked = client.list_candidates(cid, status="completed", sort=objective, limit=500)
    values = [c["objectives"][objective] for c in ranked["items"]]
    assert values == sorted(values, reverse=True)

    best = client.best_candidate(cid)
    assert best["objectives"][objective] == values[0]
    with pytest.raises(LayerforgeError, match="'beauty' is not an objective of campaign"):
        client.best_candidate(cid, "beauty")
    # (a campaign with no completed candidate: tests/cli/test_remote.py, on an idle server)
    candidate = client.get_candidate(best["id"])
    assert candidate["status"] == "completed" and candidate["graph"]["space"] == "activation"
    assert candidate["lineage"] is not None and candidate["evaluations"]
    curve = client.get_curve(best["id"], points=11)
    assert curve["kind"] == "activation" and len(curve["x"]) == len(curve["y"]) == 11

    code = client.export_candidate(best["id"], "pytorch")
    assert "import torch" in code
    saved = client.export_candidate(best["id"], "json", path=tmp_path)
    (written,) = tmp_path.glob("*.json")
    assert written.name == f"client_candidate_{best['id']}.json"
    assert written.read_text() == saved
    exported = json.loads(saved)
    assert exported.pop("provenance")["candidate"]["id"] == best["id"]
    graph = layerforge.Graph.from_dict(candidate["graph"])
    assert exported == json.loads(layerforge.export(graph, "json"))

    table = client.download_pareto(cid).decode()
    assert table.splitlines()[0] == f"candidate_id,text,origin,on_front,{objective}"
    assert len(table.splitlines()) == 1 + len(pareto["front"]) + len(pareto["dominated"])
    folder = tmp_path / "figures"
    folder.mkdir()
    svg = client.download_pareto(cid, "svg", log_y=True, path=folder)
    assert b"<svg" in svg[:2000] and (folder / f"client_{cid}_pareto.svg").read_bytes() == svg
    png = client.download_hypervolume(cid, "png", normalize=False)
    assert png.startswith(b"\x89PNG")
    history_csv = client.download_hypervolume(cid).decode().splitlines()
    assert history_csv[0].startswith("evaluations,hypervolume,hypervolume_normalized")

    client.delete_campaign(cid)
    with pytest.raises(NotFoundError):
        client.get_campaign(cid)


def test_pause_resume_cancel_and_the_listing(client, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: client-yaml\n"
        "space: {kind: activation, ops: swish, max_nodes: 4}\n"
        "proxies: [{arch: mlp, dataset: mnist1d, steps: 30}]\n"
        "budget: {max_candidates: 200}\n"
        "parallelism: 1\n"
    )
    created = client.create_campaign(spec_file)
    cid = created["id"]
    assert client.pause_campaign(cid)["status"] == "paused"
    with pytest.raises(ConflictError) as info:
        client.pause_campaign(cid)
    assert info.value.code == "invalid_state" and info.value.status == 409
    assert "cannot pause" in info.value.message
    assert client.resume_campaign(cid)["status"] == "running"
    with pytest.raises(ConflictError, match="cancel it first"):
        client.delete_campaign(cid)
    assert client.cancel_campaign(cid)["status"] == "cancelled"
    assert client.wait(cid, timeout=60)["status"] == "cancelled"
    model = layerforge.validate_spec({**SPEC, "name": "client-model"})
    other = client.create_campaign(model)["id"]

    names = [c["name"] for c in client.iter_campaigns(page_size=1)]
    assert names[:2] == ["client-model", "client-yaml"]  # newest first, one per page
    page = client.list_campaigns(limit=1)
    assert len(page["items"]) == 1 and page["next_cursor"]
    # the listing filters by status (other tests of the module may have cancelled theirs)
    cancelled = client.list_campaigns("cancelled")["items"]
    assert cid in [c["id"] for c in cancelled] and other not in [c["id"] for c in cancelled]
    assert {c["status"] for c in cancelled} == {"cancelled"}
    client.cancel_campaign(other)
    client.delete_campaign(cid)
    assert cid not in [c["id"] for c in client.iter_campaigns()]


def test_errors_are_typed_and_carry_the_apis_code_and_message(server, client):
    with pytest.raises(NotFoundError) as missing:
        client.get_campaign(999_999)
    err = missing.value
    assert (err.status, err.code) == (404, "not_found")
    assert err.message == "campaign 999999 does not exist"
    assert err.method == "GET" and err.url.endswith(f"{API}/campaigns/999999")
    assert isinstance(err, ApiError) and isinstance(err, LayerforgeError)

    with Client(server.base) as anonymous:  # reads are open, writes need the token
        assert anonymous.health()["status"] == "ok"
        with pytest.raises(AuthenticationError) as refused:
            anonymous.create_campaign(SPEC)
        assert refused.value.code == "unauthorized" and "Bearer" in refused.value.message
    with Client(server.base, "wrong") as wrong, pytest.raises(AuthenticationError) as bad:
        wrong.cancel_campaign(1)
    assert bad.value.message == "the bearer token is wrong"

    bad_spec = {**SPEC, "budjet": {}, "parallelism": 0}
    with pytest.raises(RemoteSpecError) as invalid:
        client.create_campaign(bad_spec)
    remote = invalid.value
    assert isinstance(remote, ValidationError) and isinstance(remote, SpecError)
    assert (remote.status, remote.code) == (422, "validation_error")
    assert "body.budjet: unknown field (did you mean 'budget'?)" in remote.message
    with pytest.raises(SpecError) as here:
        validate(bad_spec)
    assert remote.fields == here.value.fields  # the same paths and messages as run's

    created = client.create_campaign(SPEC, idempotency_key="conflict")
    with pytest.raises(ConflictError) as reused:
        client.create_campaign({**SPEC, "seed": 9}, idempotency_key="conflict")
    assert reused.value.code == "idempotency_conflict"
    with pytest.raises(ValidationError) as sort:
        client.list_candidates(created["id"], sort="beauty")
    assert not isinstance(sort.value, SpecError)
    assert "'beauty' is not an objective" in sort.value.message
    with pytest.raises(BadRequestError) as cursor:
        client.list_campaigns(cursor="not-a-cursor")
    assert cursor.value.code == "bad_cursor"
    with pytest.raises(PayloadTooLargeError) as large:
        client.create_campaign({**SPEC, "seeds": ["x * sigmoid(x)"] * 2000})
    assert large.value.status == 413 and "20000 bytes" in large.value.message
    client.cancel_campaign(created["id"])
    # (a download with nothing completed, 409 nothing_to_download: tests/cli/test_remote.py)


def test_a_dead_server_names_its_url():
    with Client("127.0.0.1:9", timeout=5) as dead:
        assert dead.url == "http://127.0.0.1:9"
        with pytest.raises(ServerUnreachable) as info:
            dead.health()
    assert info.value.url == "http://127.0.0.1:9"
    assert str(info.value).startswith("cannot reach the layerforge service at http://127.0.0.1:9")
    assert isinstance(info.value, ConnectionError)
    with pytest.raises(ServerUnreachable):
        list(Client("127.0.0.1:9", timeout=5).events(1, reconnect_attempts=0))


@pytest.mark.parametrize(
    "given,expected",
    [
        ("localhost:8000", "http://localhost:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("https://lf.example.org/api/v1/", "https://lf.example.org"),
        (" HTTP://host:1 ", "HTTP://host:1"),
    ],
)
def test_normalize_url(given, expected):
    assert normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["", "   ", "ftp://host", "file:///etc/passwd"])
def test_bad_urls_are_refused(bad):
    with pytest.raises(ValueError, match="server URL|empty"):
        normalize_url(bad)


def test_url_and_token_default_to_the_settings(monkeypatch, server):
    monkeypatch.setenv("LAYERFORGE_SERVER", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("LAYERFORGE_API_TOKEN", TOKEN)
    with Client() as from_env:
        assert from_env.url == server.base
        created = from_env.create_campaign({**SPEC, "name": "from-env"})
        from_env.cancel_campaign(created["id"])
