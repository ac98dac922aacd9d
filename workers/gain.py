"""Gain-fair evaluation: the candidate trains as ``f / gamma_f`` in a scale-keeping network.

Why: with PyTorch's default Linear init and the raw function, an MLP proxy rewards output
scale: a constant factor (2·relu against relu) wins by more than the Swish family does
(figures: benchmarks/RESULTS.md, B8). Dividing each candidate by its gain
``gamma_f = sqrt(E[f(z)^2])`` (z ~ N(0, 1), :mod:`grammar.gain`) and initialising the MLP's
Linear weights N(0, 1/fan_in) with zero bias makes ``a * f`` and ``f`` the same function and
keeps the pre-activations at unit variance at init, whatever the candidate.

The constant is computed once per candidate when the job starts (a few hundred microseconds);
a candidate whose gain is non-finite or below :data:`grammar.gain.MIN_GAIN` is rejected at the
probe stage with that reason. Norm-act candidates normalise their own input and train as they
are. ``ProxyTask.gain = "raw"`` (a campaign's ``"gain": "raw"``) trains the raw function with
PyTorch's default init, version 0.1's behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "GainNormalized",
    "GainNormalizedFactory",
    "candidate_gain",
    "scale_keeping_init",
]

LayerFactory = Callable[[int], nn.Module]


class GainNormalized(nn.Module):
    """``layer(x) * (1 / gamma)``: the candidate as gain-fair evaluation trains it.

    The factor is a float32 buffer (it moves with the model and is saved in its state, never
    trained)."""

    def __init__(self, layer: nn.Module, gamma: float):
        super().__init__()
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be finite and > 0, got {gamma!r}")
        self.layer = layer
        self.gamma = float(gamma)
        self.register_buffer("inv_gamma", torch.tensor(1.0 / gamma, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped layer's output divided by its gain."""
        return self.layer(x) * self.inv_gamma.to(x.dtype)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma:.6g}"


class GainNormalizedFactory:
    """Picklable ``factory(num_features)`` building ``GainNormalized(factory(c), gamma)``."""

    def __init__(self, factory: LayerFactory, gamma: float):
        self.factory = factory
        self.gamma = float(gamma)

    def __call__(self, num_features: int) -> nn.Module:
        return GainNormalized(self.factory(num_features), self.gamma)

    def __repr__(self) -> str:
        return f"GainNormalizedFactory({self.factory!r}, gamma={self.gamma:.6g})"


def candidate_gain(candidate: Any) -> float:
    """gamma_f of an activation candidate (a :class:`workers.candidates.Candidate`).

    A grammar graph uses the grammar's definition (NumPy, float64: the same number the
    fingerprint and the exports use); any other layer is measured on the same quadrature
    nodes through its torch module. Raises :class:`grammar.gain.GainError` (non-finite or
    near-zero gain) with a message that says which."""
    from layerforge.grammar.gain import activation_gain, gain_of_values, quadrature

    if candidate.graph is not None:
        return activation_gain(candidate.graph)
    nodes, _weights = quadrature()
    # one sample whose features are the nodes: an elementwise layer computes f at each
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = candidate.factory(nodes.size)
    layer.eval()
    with torch.no_grad():
        values = layer(torch.from_numpy(nodes).reshape(1, -1).float())
    return gain_of_values(values.double().reshape(-1).numpy())


def scale_keeping_init(model: nn.Module) -> None:
    """Linear weights N(0, 1/fan_in), biases zero: a unit-gain activation then passes a
    unit-second-moment signal from layer to layer at init (PyTorch's default, kaiming_uniform
    with a = sqrt(5), has variance 1/(3 fan_in): the signal shrinks by 3x a layer)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=1.0 / math.sqrt(m.in_features))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
