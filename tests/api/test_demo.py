"""`layerforge serve --demo` (what `make serve` runs) submits a demo campaign once."""

from __future__ import annotations

import httpx
import pytest

from layerforge.api.app import DEMO_SPEC
from layerforge.search.spec import validate_spec
from tests.api.helpers import API, live_server

pytestmark = pytest.mark.slow


def test_demo_spec_is_valid_and_sized_to_be_watched():
    spec = validate_spec(DEMO_SPEC)
    # 2-4 minutes on a 2-core CPU (see DEMO_SPEC): long enough to watch the front grow
    assert 100 <= spec.budget.max_candidates <= 300 and spec.parallelism == 2
    assert spec.proxies[0]["dataset"] == "mnist1d" and spec.proxies[0]["steps"] <= 1500
    assert "x * sigmoid(x)" in spec.seeds
    assert "relu" not in spec.seeds  # relu is the baseline: a seed would only duplicate it
    # its winners are checked on a held-out (deeper) proxy with 3 seeds, beside the controls
    assert spec.transfer.top_k == 3 and spec.transfer.seeds >= 3 and spec.transfer.controls
    assert spec.transfer.proxies and spec.transfer.proxies[0] != spec.proxies[0]


def test_serve_demo_submits_one_campaign_and_runs_it(tmp_path):
    env = {"LAYERFORGE_EVALUATOR": "simulated"}
    with live_server(tmp_path, env=env, args=("--demo",)) as base:
        items = httpx.get(f"{base}{API}/campaigns").json()["items"]
        assert [c["name"] for c in items] == ["demo-swish"]
    with live_server(tmp_path, env=env, args=("--demo",)) as base:  # restart: no second one
        items = httpx.get(f"{base}{API}/campaigns").json()["items"]
        assert len(items) == 1
        assert items[0]["progress"]["candidates"] > 0
