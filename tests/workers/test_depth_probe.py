"""The ``depth`` stage: a deeper MLP trained briefly on the first proxy's data and schedule.

``abs(x)`` is the case it exists for: it trains on the 2x128 search MLP (80% on mnist1d) and
diverges on the 3x256 held-out MLP (benchmarks/RESULTS.md, B8)."""

import pytest

from layerforge.workers.datasets import DatasetCache
from layerforge.workers.errors import InvalidConfigError
from layerforge.workers.rejection import RejectionConfig, evaluate_candidate
from tests.workers.helpers import KNOWN_GOOD_ACTIVATIONS

CACHE = DatasetCache()
#: the default activation proxy's data and schedule (search proxy P1 of benchmark 8)
P1 = {
    "arch": "mlp",
    "dataset": "mnist1d",
    "steps": 1000,
    "lr": 0.1,
    "dataset_options": {"num_samples": 20000},
}
TO_DEPTH = ["static", "probe", "stability", "depth"]


def run(cand, proxies=(P1,), stages=TO_DEPTH, **config):
    return evaluate_candidate(
        cand,
        list(proxies),
        {"measure_costs": False, "stages": stages, **config},
        datasets_cache=CACHE,
    )


def test_abs_trains_on_the_search_mlp_and_is_rejected_by_the_depth_probe():
    out = run({"text": "abs(x)", "space": "activation"})
    assert (out["status"], out["stage"]) == ("rejected", "depth"), out
    assert "diverged" in out["reason"] and "6x128 MLP on mnist1d, lr 0.1" in out["reason"]
    # the stability stage before it passes abs(x): its slope is bounded
    assert [s["name"] for s in out["stages"] if s["passed"]][-1] == "stability"


@pytest.mark.parametrize(
    "builtin",
    KNOWN_GOOD_ACTIVATIONS,
)
def test_no_activation_builtin_fails_the_depth_probe(builtin):
    out = run({"builtin": builtin})
    assert (out["status"], out["stage"]) == ("completed", "depth"), out
    assert (
        "loss" in out["stages"][-1]["reason"] and "after 100 steps" in out["stages"][-1]["reason"]
    )


def test_the_probe_leaves_no_trace_on_the_proxy_runs():
    short = {**P1, "steps": 150}
    with_probe = run({"builtin": "silu"}, [short], ["static", "probe", "quality", "depth", "full"])
    without = run({"builtin": "silu"}, [short], ["static", "probe", "quality", "full"])
    assert with_probe["status"] == without["status"] == "completed"
    assert with_probe["proxies"][0]["val_accuracy"] == without["proxies"][0]["val_accuracy"]
    assert with_probe["proxies"][0]["train_loss"] == without["proxies"][0]["train_loss"]


def test_the_probe_follows_the_proxy_settings():
    # a short proxy caps the probe's steps; its size comes from the config
    out = run({"builtin": "relu"}, [{**P1, "steps": 30}], depth_layers=3, depth_width=32)
    assert out["status"] == "completed", out
    assert (
        "3x32 MLP" in out["stages"][-1]["reason"]
        and "after 30 steps" in out["stages"][-1]["reason"]
    )


def test_normact_layers_are_not_probed():
    out = run({"builtin": "bn_relu"}, [{"arch": "resnet", "dataset": "digits", "steps": 20}])
    assert out["status"] == "completed" and "not applicable" in out["stages"][-1]["reason"]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("depth_layers", 0), ("depth_layers", 65), ("depth_width", 0), ("depth_steps", True)],
)
def test_bad_depth_settings_name_the_setting(setting, value):
    with pytest.raises(InvalidConfigError, match=setting):
        RejectionConfig.from_dict({setting: value})


def test_a_probe_the_known_good_functions_do_not_survive_rejects_nothing():
    # digits at batch 32 and lr 0.1: relu, silu and gelu all diverge in the 6x128 probe, so
    # it cannot tell a shallow-only function from a recipe too aggressive for deep networks
    digits = {"arch": "mlp", "dataset": "digits", "steps": 60, "batch_size": 32}
    for cand in ({"builtin": "silu"}, {"text": "abs(x)", "space": "activation"}):
        out = run(cand, [digits])
        assert (out["status"], out["stage"]) == ("completed", "depth"), out
        reason = out["stages"][-1]["reason"]
        assert "skipped: not informative on mlp/digits" in reason and "diverges in it too" in reason


def test_the_calibration_is_done_once_per_proxy_setting():
    from layerforge.workers.rejection import depth

    run({"builtin": "relu"})
    keys = set(depth._CALIBRATIONS)
    run({"builtin": "gelu"})
    assert set(depth._CALIBRATIONS) == keys  # the same proxy: no new calibration
    run({"builtin": "gelu"}, [{**P1, "lr": 0.05}])
    assert len(depth._CALIBRATIONS) == len(keys) + 1


def test_raw_evaluation_is_not_probed():
    # at PyTorch's default init six layers measure scale: 2·relu diverged, relu stayed at chance
    out = run({"text": "2 * max(x, 0)", "space": "activation"}, [{**P1, "gain": "raw"}])
    assert (out["status"], out["stage"]) == ("completed", "depth"), out
    assert "skipped under raw evaluation" in out["stages"][-1]["reason"]
