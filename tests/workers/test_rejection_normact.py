"""The norm-act side of the rejection protocol: layers affine in their input are rejected at
the probe (every proxy network built from them is linear), known-good layers are not."""

from __future__ import annotations

import pytest

from layerforge.grammar import get_builtin, parse
from layerforge.workers.candidates import GraphLayerFactory
from layerforge.workers.rejection import evaluate_candidate
from layerforge.workers.rejection.checks import nonlinearity
from tests.workers.helpers import one_thread  # noqa: F401 - autouse fixture

PROBE_ONLY = {"measure_costs": False, "stages": ["static", "probe"]}
SHAPE = (16, 8, 6, 6)
BUILTINS = (
    "bn_relu",
    "gn_relu",
    "ln_relu",
    "in_relu",
    "evonorm_b0",
    "evonorm_b1",
    "evonorm_s0",
    "evonorm_s1",
)
AFFINE = (
    "x * weight + bias",
    "(v1 + x) * weight + bias",
    "x * sigmoid(v0) * weight + bias",
    # a batch mean is a linear function of the batch: still affine in the whole input
    "(x + mean(x, batch)) * weight + bias",
)


def _probe(text: str) -> dict:
    return evaluate_candidate({"text": text, "space": "normact"}, [], PROBE_ONLY)


@pytest.mark.parametrize("text", AFFINE)
def test_a_layer_affine_in_its_input_is_rejected_at_the_probe(text):
    out = _probe(text)
    assert (out["status"], out["stage"]) == ("rejected", "probe")
    assert "affine in its input" in out["reason"]


@pytest.mark.parametrize(
    "text",
    [
        "tanh(x) * weight + bias",
        # affine at its initial parameters (v0 = 0) only: training can move v0
        "(x * v1 + tanh(v0 * x)) * weight + bias",
        "sqmean(x, batch) * weight + bias",
    ],
)
def test_a_nonlinear_layer_passes_the_probe(text):
    out = _probe(text)
    assert out["status"] == "completed", out["reason"]


@pytest.mark.parametrize("name", BUILTINS)
def test_no_norm_act_built_in_is_called_affine(name):
    graph = get_builtin(name)
    assert nonlinearity(GraphLayerFactory(graph), SHAPE) > 1e-2
    # outside the evonorm op preset for some: the probe alone, without the static check
    out = evaluate_candidate(graph.to_dict(), [], {**PROBE_ONLY, "stages": ["probe"]})
    assert out["status"] == "completed", out["reason"]


def test_the_check_can_be_turned_off():
    out = evaluate_candidate(
        {"text": "x * weight + bias", "space": "normact"},
        [],
        {**PROBE_ONLY, "probe_min_nonlinearity": 0.0},
    )
    assert out["status"] == "completed", out["reason"]
    assert nonlinearity(GraphLayerFactory(parse("x * weight + bias", "normact")), SHAPE) < 1e-9
