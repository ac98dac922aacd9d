"""Named proxy presets: a spec's ``{"preset": NAME}`` expands to the preset's settings (its
own fields overriding them), the stored spec holds the expanded proxy, and an unknown name is
an error naming the ``preset`` field (422 through the API)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from layerforge.search.spec import SpecError, validate_spec
from layerforge.workers.errors import InvalidConfigError
from layerforge.workers.presets import PROXY_PRESETS, expand_preset
from layerforge.workers.tasks import ProxyTask
from tests.api.helpers import API, make_app


def _spec(proxy: dict) -> dict:
    return {"name": "presets", "space": {"kind": "normact", "ops": "evonorm"}, "proxies": [proxy]}


def test_a_preset_expands_to_its_settings_and_the_proxy_overrides_them():
    preset = PROXY_PRESETS["normact-small-batch"]
    task = ProxyTask.from_dict({"preset": "normact-small-batch", "steps": 50})
    assert (task.arch, task.dataset, task.batch_size) == (
        preset["arch"],
        preset["dataset"],
        preset["batch_size"],
    )
    assert task.steps == 50 and preset["steps"] != 50
    assert task.dataset_options == preset["dataset_options"]
    # expanding copies: changing the result leaves the preset as it was
    expanded = expand_preset({"preset": "normact-small-batch"})
    expanded["dataset_options"]["noise"] = 99.0
    assert PROXY_PRESETS["normact-small-batch"]["dataset_options"]["noise"] != 99.0
    assert expand_preset({"arch": "mlp", "dataset": "digits"}) == {
        "arch": "mlp",
        "dataset": "digits",
    }


def test_dataset_options_override_the_presets_one_by_one():
    """A held-out variant names only what differs (the data seed); the rest stays the
    preset's. Another dataset does not inherit the preset's options (they would not apply)."""
    preset = PROXY_PRESETS["normact-small-batch"]
    task = ProxyTask.from_dict(
        {"preset": "normact-small-batch", "dataset_options": {"data_seed": 99}}
    )
    assert task.dataset_options == {**preset["dataset_options"], "data_seed": 99}
    other = ProxyTask.from_dict({"preset": "normact-small-batch", "dataset": "digits"})
    assert other.dataset == "digits" and other.dataset_options == {}
    assert other.batch_size == preset["batch_size"]  # the rest of the preset still applies
    # the merged options are checked as a spec's are, naming the one that is wrong
    with pytest.raises(SpecError) as err:
        validate_spec(
            _spec({"preset": "normact-small-batch", "dataset_options": {"data_seed": -1}})
        )
    assert "proxies[0].dataset_options.data_seed" in str(err.value)


def test_the_stored_spec_holds_the_expanded_proxy_not_the_name():
    spec = validate_spec(_spec({"preset": "normact-small-batch", "batch_size": 2}))
    (proxy,) = spec.proxies
    assert "preset" not in proxy
    assert proxy["batch_size"] == 2 and proxy["dataset"] == "gratings"


@pytest.mark.parametrize("name", ["nope", 3, None])
def test_an_unknown_preset_is_an_error_naming_the_field(name):
    with pytest.raises(InvalidConfigError, match="preset"):
        ProxyTask.from_dict({"preset": name})
    with pytest.raises(SpecError) as err:
        validate_spec(_spec({"preset": name}))
    assert "proxies[0].preset: unknown proxy preset" in str(err.value)
    assert "normact-small-batch" in str(err.value)


def test_the_api_answers_422_naming_the_preset_field(tmp_path):
    app = make_app(tmp_path)
    with TestClient(app) as client:
        response = client.post(f"{API}/campaigns", json=_spec({"preset": "nope"}))
        assert response.status_code == 422
        assert "proxies[0].preset" in response.text


def test_the_norm_act_preset_trains_on_valid_gratings_options():
    """The preset's dataset options pass the checks a spec gets, spell out every option the
    loader takes (a loader default changing does not change the preset), and the held-out
    variant B10 uses differs only in its data seed."""
    from layerforge.workers import datasets

    preset = PROXY_PRESETS["normact-small-batch"]
    assert preset["dataset"] == "gratings"
    datasets.validate_dataset_options("gratings", preset["dataset_options"])
    assert set(preset["dataset_options"]) == set(datasets.DATASET_OPTIONS["gratings"])
    # (the option table is the loader's own: tests/api/test_spec_limits.py)
    held_out = ProxyTask.from_dict(
        {
            "preset": "normact-small-batch",
            "dataset_options": {**preset["dataset_options"], "data_seed": 99},
        }
    )
    assert held_out.dataset_options["data_seed"] != preset["dataset_options"]["data_seed"]
