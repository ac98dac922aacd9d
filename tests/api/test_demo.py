"""`layerforge serve --demo` (what `make serve` runs) submits a demo campaign once."""

from __future__ import annotations

import httpx
import pytest

from layerforge.api.app import DEMO_SPEC, demo_spec
from layerforge.search.spec import validate_spec
from tests.api.helpers import API, live_server


def test_demo_spec_is_valid_and_sized_to_be_watched():
    spec = validate_spec(DEMO_SPEC)
    # 2-4 minutes on a 2-core CPU (see DEMO_SPEC): long enough to watch the front grow
    assert 200 <= spec.budget.max_candidates <= 600 and spec.parallelism == 2
    assert spec.proxies[0]["dataset"] == "mnist1d" and spec.proxies[0]["steps"] <= 1500
    assert "x * sigmoid(x)" in spec.seeds
    assert "relu" not in spec.seeds  # relu is the baseline: a seed would only duplicate it
    # its winners are checked on a held-out (deeper) proxy with 3 seeds, beside the controls
    assert spec.transfer.top_k == 3 and spec.transfer.seeds >= 3 and spec.transfer.controls
    assert spec.transfer.proxies and spec.transfer.proxies[0] != spec.proxies[0]


@pytest.mark.slow
def test_serve_demo_submits_one_campaign_and_runs_it(tmp_path):
    env = {"LAYERFORGE_EVALUATOR": "simulated"}
    with live_server(tmp_path, env=env, args=("--demo",)) as base:
        items = httpx.get(f"{base}{API}/campaigns").json()["items"]
        assert [c["name"] for c in items] == ["demo-swish"]
    with live_server(tmp_path, env=env, args=("--demo",)) as base:  # restart: no second one
        items = httpx.get(f"{base}{API}/campaigns").json()["items"]
        assert len(items) == 1
        assert items[0]["progress"]["candidates"] > 0


def test_demo_candidates_resizes_only_the_budget():
    short = validate_spec(demo_spec(40))
    default = validate_spec(demo_spec())
    assert short.budget.max_candidates == 40 and default.budget.max_candidates == 400
    # the same search, proxies and held-out check: only the number of proposals changes
    assert short.proxies == default.proxies and short.transfer == default.transfer
    assert short.strategy == default.strategy and short.seeds == default.seeds
    assert DEMO_SPEC["budget"]["max_candidates"] == 400  # the module's spec is not touched
    with pytest.raises(ValueError, match="between 16 and 1000, not 5"):
        demo_spec(5)
    with pytest.raises(ValueError, match="not 1001"):
        demo_spec(1001)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--demo-candidates", "40"], "--demo-candidates sizes the demo campaign: add --demo"),
        (["--demo", "--demo-candidates", "5"], "--demo-candidates must be between 16 and 1000"),
        (["--demo", "--demo-candidates", "1001"], "--demo-candidates must be between 16 and 1000"),
    ],
)
def test_serve_refuses_a_bad_demo_size_before_starting(args, message):
    from typer.testing import CliRunner

    from layerforge.cli import app

    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2
    assert message in result.output
