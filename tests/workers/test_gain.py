"""Gain-fair evaluation: the constant, the rejection of unusable gains, the scale-keeping
init, and the promise that matters: a rescaled function trains exactly like the original."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from layerforge.grammar import get_builtin, parse
from layerforge.grammar.gain import MIN_GAIN, GainError, activation_gain, quadrature
from layerforge.workers.candidates import Candidate, resolve_candidate
from layerforge.workers.gain import GainNormalized, candidate_gain, scale_keeping_init
from layerforge.workers.rejection import evaluate_candidate
from layerforge.workers.tasks import ProxyTask

A = "activation"
STAGES = {"stages": ["static", "probe", "full"]}


class _Reciprocal(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 / x  # inf at the quadrature's node z = 0


def _proxy(**extra):
    return {"arch": "mlp", "dataset": "digits", "steps": 60, "batch_size": 64, "seed": 1, **extra}


def test_gain_matches_closed_forms():
    assert activation_gain(get_builtin("relu")) == pytest.approx(math.sqrt(0.5), rel=1e-6)
    assert activation_gain(parse("x", A)) == pytest.approx(1.0, rel=1e-12)
    # E[z^4] = 3, so gamma(x^2) = sqrt(3)
    assert activation_gain(parse("x * x", A)) == pytest.approx(math.sqrt(3.0), rel=1e-10)
    assert activation_gain(parse("2 * max(x, 0)", A)) == pytest.approx(
        2 * activation_gain(get_builtin("relu")), rel=1e-12
    )
    nodes, weights = quadrature()
    assert weights.sum() == pytest.approx(1.0, rel=1e-12)
    assert np.dot(weights, nodes**2) == pytest.approx(1.0, rel=1e-12)


def test_unusable_gain_is_an_error_saying_which():
    with pytest.raises(GainError, match="is below"):
        activation_gain(parse("0 * x", A))
    # the grammar's ops are clamped (its gains stay finite); a torch layer need not be
    with pytest.raises(GainError, match="not finite"):
        candidate_gain(Candidate(kind=A, factory=lambda c: _Reciprocal()))
    assert MIN_GAIN > 0


def test_torch_candidates_get_the_same_gain_as_their_graph():
    graph_gain = candidate_gain(resolve_candidate({"builtin": "silu"}))
    torch_gain = candidate_gain(Candidate(kind=A, factory=lambda c: nn.SiLU()))
    assert torch_gain == pytest.approx(graph_gain, rel=1e-5)


def test_normalized_layer_has_unit_second_moment_on_standard_normal_input():
    layer = GainNormalized(
        nn.GELU(), candidate_gain(Candidate(kind=A, factory=lambda c: nn.GELU()))
    )
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    assert layer(z).pow(2).mean().item() == pytest.approx(1.0, abs=0.01)
    assert "inv_gamma" in layer.state_dict()


def test_scale_keeping_init_keeps_the_second_moment_through_a_deep_mlp():
    torch.manual_seed(0)
    gamma = activation_gain(get_builtin("relu"))
    layers: list[nn.Module] = []
    for _ in range(8):
        layers += [nn.Linear(256, 256), GainNormalized(nn.ReLU(), gamma)]
    net = nn.Sequential(*layers)
    scale_keeping_init(net)
    out = net(torch.randn(2048, 256))
    assert 0.5 < out.pow(2).mean().item() < 2.0
    default = nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(256, 256), nn.ReLU())])
    assert default(torch.randn(2048, 256)).pow(2).mean().item() < 0.01  # shrinks ~6x a layer


def test_rescaled_relu_trains_exactly_like_relu_under_gain_fair_evaluation():
    results = {
        text: evaluate_candidate({"text": text, "space": A}, [_proxy()], STAGES)
        for text in ("max(x, 0)", "2 * max(x, 0)", "x + abs(x)")
    }
    accuracies = {t: r["proxies"][0]["val_accuracy"] for t, r in results.items()}
    assert len(set(accuracies.values())) == 1, accuracies
    assert all(r["status"] == "completed" for r in results.values())
    assert results["2 * max(x, 0)"]["gain"]["gamma"] == pytest.approx(math.sqrt(2.0))
    assert results["max(x, 0)"]["gain"]["mode"] == "fair"
    # the raw mode keeps version 0.1's behaviour: a factor changes what is trained
    raw = {
        text: evaluate_candidate({"text": text, "space": A}, [_proxy(gain="raw")], STAGES)
        for text in ("max(x, 0)", "2 * max(x, 0)")
    }
    assert all(r["gain"] is None for r in raw.values())
    assert (
        raw["max(x, 0)"]["proxies"][0]["train_loss"]
        != raw["2 * max(x, 0)"]["proxies"][0]["train_loss"]
    )


def test_zero_gain_candidate_is_rejected_at_probe_with_the_reason():
    result = evaluate_candidate({"text": "0 * x", "space": A}, [_proxy()], STAGES)
    assert result["status"] == "rejected"
    assert result["stage"] == "probe"
    assert "gain gamma_f" in result["reason"] and "below" in result["reason"]
    assert result["stages"][-1] == {
        "name": "probe",
        "passed": False,
        "reason": result["reason"],
        "seconds": result["stages"][-1]["seconds"],
    }


def test_gain_mode_is_validated_naming_the_field():
    with pytest.raises(ValueError, match="gain"):
        ProxyTask.from_dict(_proxy(gain="loud"))
    assert ProxyTask.from_dict(_proxy()).gain == "fair"
