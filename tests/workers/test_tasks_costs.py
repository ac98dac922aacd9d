import pytest

from layerforge.workers.costs import measure_layer_cost
from layerforge.workers.errors import InvalidConfigError, UnknownNameError
from layerforge.workers.tasks import ProxyTask


def test_proxy_task_round_trip_and_defaults():
    t = ProxyTask.from_dict({"arch": "resnet", "dataset": "digits", "steps": 50})
    assert t.momentum == 0.9 and t.nesterov and t.scale == "cpu"
    assert ProxyTask.from_dict(t.to_dict()) == t


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"arch": "resnet", "dataset": "digits", "steps": 0}, "steps"),
        ({"arch": "resnet", "dataset": "digits", "lr": -1}, "lr"),
        ({"arch": "resnet", "dataset": "digits", "momentum": 1.5}, "momentum"),
        ({"arch": "resnet", "dataset": "digits", "batch_size": 2.5}, "batch_size"),
        ({"arch": "resnet", "dataset": "digits", "scale": "tpu"}, "scale"),
        ({"arch": "resnet", "dataset": "digits", "stesp": 10}, "stesp"),
        ({"arch": "resnet", "dataset": "digits", "nesterov": "yes"}, "nesterov"),
        ({"dataset": "digits"}, "arch"),
    ],
)
def test_proxy_task_bad_values_name_the_field(data, field):
    with pytest.raises(InvalidConfigError) as exc:
        ProxyTask.from_dict(data)
    assert exc.value.field == field and field in str(exc.value)


def test_proxy_task_unknown_names():
    with pytest.raises(UnknownNameError, match="mobilenetv2"):
        ProxyTask.from_dict({"arch": "vgg", "dataset": "digits"})
    with pytest.raises(UnknownNameError, match="mnist1d"):
        ProxyTask.from_dict({"arch": "mlp", "dataset": "imagenet"})


def test_layer_costs_of_builtins():
    from layerforge.grammar import get_builtin

    small = (16, 8, 8, 8)
    relu = measure_layer_cost(get_builtin("relu"), shape=small, repeats=3)
    # the baseline is the yardstick: it reads 1.0 against itself, however loaded the machine
    assert relu["num_params"] == 0 and relu["runtime_ratio"] == 1.0 and relu["seconds"] > 0
    bn = measure_layer_cost({"builtin": "bn_relu"}, shape=small, repeats=3)
    assert bn["num_params"] == 2 * 8 and bn["seconds"] > 0 and bn["runtime_ratio"] == 1.0
    other = measure_layer_cost({"text": "relu(x)", "space": "activation"}, shape=small, repeats=3)
    assert 0.2 < other["runtime_ratio"] < 5  # the same function, another graph: measured
    b0 = measure_layer_cost({"builtin": "evonorm_b0"}, shape=small, repeats=3)
    assert b0["num_params"] == 3 * 8
    gelu = measure_layer_cost(
        {"text": "x * sigmoid(x)", "space": "activation"}, shape=small, repeats=3
    )
    assert gelu["runtime_ratio"] > 0


def test_layer_cost_of_a_plain_factory_needs_kind():
    from torch import nn

    with pytest.raises(ValueError, match="kind"):
        measure_layer_cost(lambda c: nn.Tanh())
    out = measure_layer_cost(lambda c: nn.Tanh(), "activation", shape=(4, 4, 4, 4), repeats=2)
    assert set(out) >= {"runtime_ratio", "num_params", "seconds"}
