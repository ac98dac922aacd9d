"""The proxy-fidelity report: its statistics on exact answers, and every campaign getting one
(stored, served, reused by a campaign with the same proxies, off when the spec says so)."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from layerforge.search import fidelity
from layerforge.storage import get_engine, session_scope
from layerforge.storage import repository as repo
from tests.api.helpers import API, make_app, small_spec, wait_for

# ---------------------------------------------------------------- statistics, exact answers


def test_kendall_tau_on_exact_answers():
    assert fidelity.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert fidelity.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one discordant pair of six: (5 - 1) / 6
    assert fidelity.kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    # tau-b with a tie in b: C=2, D=0, ties_b=1 -> 2 / sqrt(3 * 2)
    assert fidelity.kendall_tau([1, 2, 3], [1, 2, 2]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(fidelity.kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="differ in length"):
        fidelity.kendall_tau([1, 2], [1])


def test_discrimination_is_panel_spread_over_median_seed_sd():
    figures = fidelity.discrimination({"a": [0.1, 0.3], "b": [0.5, 0.7], "c": [0.9, 1.1]})
    # means 0.2, 0.6, 1.0 (SD 0.4); every seed SD is sqrt(0.02)
    assert figures["panel_spread_sd"] == pytest.approx(0.4)
    assert figures["median_seed_sd"] == pytest.approx(math.sqrt(0.02))
    assert figures["discrimination_ratio"] == pytest.approx(0.4 / math.sqrt(0.02))
    assert fidelity.discrimination({"a": [0.5, 0.5], "b": [0.5, 0.5]})["discrimination_ratio"] == 0


def _report(accuracies, transfer=True):
    panel = sorted({n for n, _ in accuracies})
    search = [{"arch": "mlp", "dataset": "digits"}]
    held = [{"arch": "mlp", "dataset": "mnist1d"}] if transfer else []
    return fidelity.build_report(
        panel=panel, seeds=[0, 1], search=search, transfer=held, accuracies=accuracies, key="k"
    )


def test_a_proxy_that_cannot_tell_the_panel_apart_gets_a_warning_saying_what_to_change():
    noisy = {
        ("relu", 0): [0.50, 0.60],
        ("relu", 1): [0.70, 0.62],
        ("silu", 0): [0.71, 0.70],
        ("silu", 1): [0.49, 0.72],
        ("tanh", 0): [0.60, 0.40],
        ("tanh", 1): [0.61, 0.42],
    }
    report = _report(noisy)
    search = report["proxies"][0]
    assert search["role"] == "search" and search["discrimination_ratio"] < 1
    assert any(
        w.startswith("search proxy mlp/digits cannot tell the panel apart") and "more steps" in w
        for w in report["warnings"]
    )
    assert report["rank_agreement"][0]["search"] == "mlp/digits"


def test_a_normact_panel_that_cannot_be_told_apart_is_pointed_to_the_small_batch_preset():
    from layerforge.search.spec import validate_spec

    saturated = {
        (name, seed): [0.97 + 0.01 * ((seed + i) % 2), 0.97]
        for i, name in enumerate(("bn_relu", "gn_relu", "evonorm_b0"))
        for seed in (0, 1)
    }
    report = _report(saturated)
    assert fidelity.panel_kind(report["panel"]) == "normact"
    (warning,) = [w for w in report["warnings"] if w.startswith("search proxy mlp/digits cannot")]
    assert f'{{"preset": "{fidelity.NORMACT_PRESET}"}}' in warning
    # the preset the warning names is one a spec accepts
    spec = validate_spec(
        {
            "name": "preset",
            "space": {"kind": "normact", "ops": "evonorm"},
            "proxies": [{"preset": fidelity.NORMACT_PRESET}],
        }
    )
    assert spec.proxies[0]["arch"] == "resnet" and spec.proxies[0]["batch_size"] <= 8
    # an activation panel's warning does not name it
    noisy = {
        (name, seed): [0.5 + 0.1 * ((seed + i) % 2), 0.5]
        for i, name in enumerate(("relu", "silu", "tanh"))
        for seed in (0, 1)
    }
    assert not any(fidelity.NORMACT_PRESET in w for w in _report(noisy)["warnings"])
    assert fidelity.panel_kind(["relu", "bn_relu"]) is None
    assert fidelity.panel_kind(["relu", "no_such_layer"]) is None


def test_a_discriminating_proxy_that_agrees_with_the_held_out_one_has_no_warning():
    clean = {
        (name, seed): [base + 0.001 * seed, base + 0.1 + 0.001 * seed]
        for name, base in (("relu", 0.5), ("silu", 0.6), ("tanh", 0.4))
        for seed in (0, 1)
    }
    report = _report(clean)
    assert report["warnings"] == []
    assert report["rank_agreement"][0]["kendall_tau"] == 1.0
    assert report["notes"] == []
    assert "no held-out" in _report(clean, transfer=False)["notes"][0]


def test_a_run_that_did_not_complete_scores_zero_and_is_named():
    runs = {
        ("relu", 0): [0.5, 0.5],
        ("relu", 1): [None, 0.5],
        ("silu", 0): [0.6, 0.6],
        ("silu", 1): [0.6, 0.6],
        ("tanh", 0): [0.4, 0.4],
        ("tanh", 1): [0.4, 0.4],
    }
    report = _report(runs)
    assert report["failed"] == ["relu"]
    assert report["proxies"][0]["per_function"]["relu"]["values"] == [0.5, 0.0]
    assert any("relu did not complete" in w for w in report["warnings"])


# ---------------------------------------------------------------- every campaign gets one


@pytest.fixture
def live(tmp_path):
    application = make_app(tmp_path, run_controller=True)
    with TestClient(application) as client:
        yield client, f"sqlite:///{tmp_path / 'api.db'}"


def _spec(**overrides):
    transfer = {"top_k": 0, "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 50}]}
    return small_spec(transfer=transfer, **overrides)


def test_a_campaign_stores_and_serves_its_report_and_the_next_one_reuses_it(live):
    client, url = live
    first = client.post(f"{API}/campaigns", json=_spec()).json()["id"]
    assert wait_for(client, first)["status"] == "completed"
    report = client.get(f"{API}/campaigns/{first}").json()["fidelity"]
    assert report["panel"] == list(fidelity.PANELS["activation"])
    assert report["seeds"] == [0, 1]
    assert [(p["name"], p["role"]) for p in report["proxies"]] == [
        ("mlp/mnist1d", "search"),
        ("mlp/digits", "transfer"),
    ]
    for proxy in report["proxies"]:
        assert set(proxy["per_function"]) == set(report["panel"])
        assert all(len(v["values"]) == 2 for v in proxy["per_function"].values())
    assert len(report["rank_agreement"]) == 1 and "reused_from" not in report
    # the panel is not part of the search: the campaign's own budget is untouched
    assert client.get(f"{API}/campaigns/{first}").json()["progress"]["candidates"] == 12

    second = client.post(f"{API}/campaigns", json=_spec(name="again")).json()["id"]
    assert wait_for(client, second)["status"] == "completed"
    reused = client.get(f"{API}/campaigns/{second}").json()["fidelity"]
    assert reused["reused_from"] == first
    assert reused["proxies"] == report["proxies"]
    with session_scope(get_engine(url), readonly=True) as s:
        kinds = [e.kind for e in repo.list_events(s, campaign_id=second, limit=10_000)]
    assert kinds.count("fidelity") == 1


def test_the_report_is_off_when_the_spec_says_so_and_panel_names_are_checked(live):
    client, _url = live
    off = client.post(f"{API}/campaigns", json=_spec(fidelity={"enabled": False})).json()["id"]
    assert wait_for(client, off)["status"] == "completed"
    assert client.get(f"{API}/campaigns/{off}").json()["fidelity"] is None
    bad = client.post(
        f"{API}/campaigns", json=_spec(fidelity={"panel": ["relu", "silu", "bn_relu"]})
    )
    assert bad.status_code == 422
    assert "fidelity.panel[2]" in bad.text and "'bn_relu' is not a built-in activation" in bad.text
    one_seed = client.post(f"{API}/campaigns", json=_spec(fidelity={"seeds": 1}))
    assert one_seed.status_code == 422 and "fidelity" in one_seed.text
    assert len(client.get(f"{API}/campaigns").json()["items"]) == 1
