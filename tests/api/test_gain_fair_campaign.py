"""A gain-fair campaign through the API with real training (the local evaluator): rescalings
and sign variants of a function are one candidate, each result records its gain, and the
exported layer is exactly the evaluated one, f(x) / gamma_f."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from fastapi.testclient import TestClient

from layerforge.grammar import parse
from layerforge.grammar.gain import activation_gain
from tests.api.helpers import API, make_app, small_spec, wait_for

pytestmark = pytest.mark.slow


def _spec(**overrides):
    values = {
        "seeds": ["x * sigmoid(x)", "2 * max(x, 0)", "x - abs(x)", "3 * x * sigmoid(x)"],
        "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 40, "batch_size": 64}],
        "budget": {"max_candidates": 6},
    }
    return small_spec(**{**values, **overrides})


@pytest.fixture
def real_client(tmp_path):
    application = make_app(tmp_path, run_controller=True, evaluator="local")
    with TestClient(application) as client:
        yield client


def _seeds(client, campaign_id, spec):
    """The seed candidates by their text in the spec (stored in order after the baseline)."""
    items = client.get(f"{API}/campaigns/{campaign_id}/candidates", params={"limit": 100})
    stored = sorted(items.json()["items"], key=lambda c: c["id"])
    assert stored[0]["origin"] == "baseline"
    seeds = [c for c in stored if c["origin"] == "seed"]
    return dict(zip(spec["seeds"], seeds, strict=True))


def test_rescaled_seeds_are_duplicates_and_the_export_carries_one_over_gamma(real_client, tmp_path):
    spec = _spec()
    campaign_id = real_client.post(f"{API}/campaigns", json=spec).json()["id"]
    body = wait_for(real_client, campaign_id, timeout=600)
    assert body["status"] == "completed", body
    candidates = _seeds(real_client, campaign_id, spec)
    # the baseline (relu) comes first; 2·relu and x - |x| are relu under gain-fair evaluation,
    # 3·x·sigmoid(x) is the silu seed
    assert candidates["2 * max(x, 0)"]["status"] == "duplicate"
    assert candidates["x - abs(x)"]["status"] == "duplicate"
    assert candidates["3 * x * sigmoid(x)"]["status"] == "duplicate"
    silu = candidates["x * sigmoid(x)"]
    assert silu["status"] == "completed"
    # the proxy-fidelity panel trained for real: six built-ins, two seeds, distinct numbers
    report = real_client.get(f"{API}/campaigns/{campaign_id}").json()["fidelity"]
    (search,) = report["proxies"]
    values = [v for f in search["per_function"].values() for v in f["values"]]
    assert len(values) == 12 and all(0.0 < v <= 1.0 for v in values)
    assert len(set(values)) > 2 and search["median_seed_sd"] > 0
    assert search["discrimination_ratio"] is not None

    response = real_client.get(
        f"{API}/candidates/{silu['id']}/export", params={"format": "pytorch"}
    )
    assert response.status_code == 200
    gamma = activation_gain(parse("x * sigmoid(x)", "activation"))
    header = [line for line in response.text.splitlines() if line.startswith("# gain constant")]
    assert header and f"{gamma:.6g}" in header[0] and "includes the factor" in header[0]
    path = tmp_path / "exported_silu.py"
    path.write_text(response.text)
    spec = importlib.util.spec_from_file_location("exported_silu", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    layer = module.GeneratedActivation()
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(layer(x), x * torch.sigmoid(x) / gamma)
    assert math.isclose(layer(torch.randn(200_000)).pow(2).mean().item(), 1.0, abs_tol=0.02)


def test_raw_campaign_keeps_rescalings_apart_and_exports_the_raw_function(real_client):
    spec = _spec(gain="raw", seeds=["2 * max(x, 0)"], budget={"max_candidates": 2})
    campaign_id = real_client.post(f"{API}/campaigns", json=spec).json()["id"]
    body = wait_for(real_client, campaign_id, timeout=600)
    assert body["status"] == "completed", body
    doubled = _seeds(real_client, campaign_id, spec)["2 * max(x, 0)"]
    assert doubled["status"] == "completed"
    text = real_client.get(f"{API}/candidates/{doubled['id']}/export").text
    assert "# gain constant: none recorded (the evaluation ran the raw function)" in text


def test_gain_takes_only_the_documented_values(real_client):
    response = real_client.post(f"{API}/campaigns", json=_spec(gain="loud"))
    assert response.status_code == 422
    assert "gain" in response.text and "fair" in response.text and "raw" in response.text
    per_proxy = _spec(proxies=[{"arch": "mlp", "dataset": "digits", "gain": "raw"}])
    response = real_client.post(f"{API}/campaigns", json=per_proxy)
    assert response.status_code == 422
    assert "proxies[0].gain" in response.text and "top-level 'gain'" in response.text
    assert real_client.get(f"{API}/campaigns").json()["items"] == []
