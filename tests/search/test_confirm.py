"""Confirming winners against the baseline: the 2-pooled-SD rule on exact answers, and the
transfer stage's confirmation over the API."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from layerforge.search import confirm
from tests.api.helpers import API, make_app, small_spec, wait_for


def _stats(*runs):
    return confirm.proxy_stats([list(r) for r in runs], len(runs[0]))


def test_a_candidate_beats_the_baseline_only_by_two_pooled_sds_on_every_run():
    baseline = _stats((0.80, 0.70), (0.81, 0.71), (0.82, 0.72))  # SD 0.01 on both runs
    better = _stats((0.90, 0.80), (0.91, 0.81), (0.92, 0.82))
    verdict = confirm.judge(better, baseline)
    assert verdict["beats_baseline"] is True
    assert verdict["margins"] == pytest.approx([10.0, 10.0])  # gap 0.1 / pooled SD 0.01
    # better on one run only: not confirmed
    mixed = _stats((0.90, 0.70), (0.91, 0.71), (0.92, 0.72))
    assert confirm.judge(mixed, baseline)["beats_baseline"] is False
    # a gap of 1.5 pooled SDs is seed noise
    close = _stats((0.815, 0.715), (0.825, 0.725), (0.835, 0.735))
    assert confirm.judge(close, baseline)["margins"] == pytest.approx([1.5, 1.5])
    assert confirm.judge(close, baseline)["beats_baseline"] is False


def test_fewer_than_three_seeds_cannot_confirm_anything():
    two = _stats((0.9,), (0.95,))
    verdict = confirm.judge(two, _stats((0.5,), (0.6,)))
    assert verdict["beats_baseline"] is None and "fewer than 3 seeds" in verdict["reason"]


def test_held_out_runs_are_every_proxy_at_every_learning_rate_factor():
    runs = confirm.held_out_runs(
        [{"arch": "mlp", "dataset": "digits", "lr": 0.2}, {"arch": "resnet", "dataset": "x"}],
        [1.0, 0.5],
    )
    assert [confirm.run_name(r) for r in runs] == [
        "mlp/digits@lr=0.2",
        "resnet/x@lr=0.1",
        "mlp/digits@lr=0.1",
        "resnet/x@lr=0.05",
    ]
    assert math.isclose(runs[3]["lr"], 0.05)


@pytest.fixture
def live(tmp_path):
    with TestClient(make_app(tmp_path, run_controller=True)) as client:
        yield client


def test_the_api_serves_the_confirmation_with_controls(live):
    spec = small_spec(
        budget={"max_candidates": 10},
        transfer={"top_k": 2, "seeds": 3, "proxies": [{"arch": "mlp", "dataset": "digits"}]},
    )
    campaign_id = live.post(f"{API}/campaigns", json=spec).json()["id"]
    assert wait_for(live, campaign_id)["status"] == "completed"
    body = live.get(f"{API}/campaigns/{campaign_id}/transfer").json()
    rows = body["rows"]
    origins = [r["origin"] for r in rows]
    assert "baseline" in origins and origins.count("control") == 2
    assert all(r["runs"] == 3 for r in rows)
    assert all(len(r["proxies"]) == 2 for r in rows)  # digits at lr 0.1 and 0.05
    assert body["confirmed"] == [
        r["candidate_id"] for r in rows if r["beats_baseline"] is True and not r.get("control")
    ]
    assert live.get(f"{API}/campaigns/999/transfer").status_code == 404
    bad = small_spec(transfer={"top_k": 1, "lr_factors": [1.0, 0.0]})
    response = live.post(f"{API}/campaigns", json=bad)
    assert response.status_code == 422 and "lr_factors[1]" in response.text


def test_a_run_that_stopped_early_scores_zero_on_the_runs_it_missed():
    assert confirm.scored([0.9], 2) == [0.9, 0.0]  # diverged before the second held-out run
    assert confirm.scored([None, float("nan")], 2) == [0.0, 0.0]
    stats = confirm.proxy_stats([confirm.scored(r, 2) for r in ([0.9], [0.8], [0.7])], 2)
    assert stats[1] == {"mean": 0.0, "sd": 0.0, "values": [0.0, 0.0, 0.0]}
    baseline = _stats((0.5, 0.5), (0.51, 0.51), (0.52, 0.52))
    assert confirm.judge(stats, baseline)["beats_baseline"] is False


def test_the_result_cache_keeps_rescalings_apart_for_jobs_trained_raw():
    """The scale controls train 2·relu and 3·relu raw: they must never share a cached
    result, though gain-fair evaluation makes them (and relu) one function."""
    from layerforge.grammar import parse
    from layerforge.search.evaluators import CachingEvaluator

    def payload(text, gain):
        return {
            "graph": parse(text, "activation").to_dict(),
            "proxies": [{"arch": "mlp", "dataset": "digits", "gain": gain}],
            "rejection": {},
            "seed": 0,
        }

    key = CachingEvaluator.cache_key
    assert key(payload("2 * max(x, 0)", "fair")) == key(payload("3 * max(x, 0)", "fair"))
    assert key(payload("2 * max(x, 0)", "raw")) != key(payload("3 * max(x, 0)", "raw"))
