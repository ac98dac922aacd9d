"""The gain of an activation function: gamma_f = sqrt(E[f(z)^2]), z ~ N(0, 1).

Gain-fair evaluation trains ``f / gamma_f`` instead of ``f``: every candidate then passes a
unit-variance pre-activation on with unit second moment, so a proxy can no longer reward a
function for its output scale (``2 * relu`` and ``relu`` become the same function, as they
are for any network whose next layer can rescale). :func:`activation_gain` is the one
definition of the constant; workers divide by it and exports carry it.

The expectation is a Gauss-Hermite quadrature (probabilists' weights) on
:data:`QUADRATURE_POINTS` nodes, evaluated with the NumPy reference semantics in float64:
deterministic, a few hundred microseconds, exact for polynomials of degree < 2 * points and
accurate to ~1e-5 relative for functions with a kink (relu: 0.70711 against sqrt(1/2)).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .graph import Graph, Node
from .ops import ACTIVATION

__all__ = [
    "MIN_GAIN",
    "QUADRATURE_POINTS",
    "GainError",
    "activation_gain",
    "gain_normalized_graph",
    "gain_of_values",
    "quadrature",
]

QUADRATURE_POINTS = 161
# Below this the function is (almost) zero on N(0, 1): dividing by it would blow any
# numerical noise up to unit scale.
MIN_GAIN = 1e-6


class GainError(ValueError):
    """The gain is not usable (non-finite, or so small the function is zero on N(0, 1))."""


_nodes, _weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_POINTS)
_weights = _weights / math.sqrt(2.0 * math.pi)


def quadrature() -> tuple[np.ndarray, np.ndarray]:
    """The Gauss-Hermite nodes z_i and weights w_i with sum_i w_i g(z_i) ~= E[g(z)]."""
    return _nodes.copy(), _weights.copy()


def gain_of_values(values: np.ndarray) -> float:
    """gamma from a function's values on the quadrature nodes; :class:`GainError` when it
    is non-finite or below :data:`MIN_GAIN`, with a message that says which."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != _nodes.shape:
        raise ValueError(f"expected {_nodes.size} values (one per node), got {v.size}")
    with np.errstate(all="ignore"):
        second_moment = float(np.dot(_weights, v * v))
    if not math.isfinite(second_moment):
        raise GainError("gain gamma_f = sqrt(E[f(z)^2]) is not finite on z ~ N(0, 1)")
    gamma = math.sqrt(max(second_moment, 0.0))
    if gamma < MIN_GAIN:
        raise GainError(
            f"gain gamma_f = sqrt(E[f(z)^2]) = {gamma:.3g} is below {MIN_GAIN:g}: the function "
            "is (almost) zero on z ~ N(0, 1)"
        )
    return gamma


def gain_of_function(fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """gamma of an elementwise function of a float64 array (for layers outside the grammar)."""
    return gain_of_values(fn(_nodes.copy()))


def activation_gain(graph: Graph, params: dict[str, float] | None = None) -> float:
    """gamma_f of an activation graph at its parameters' init values (or ``params``)."""
    from .fingerprint import evaluate_numpy

    if graph.space != ACTIVATION:
        raise ValueError(f"the gain is defined for activation graphs, not {graph.space!r}")
    with np.errstate(all="ignore"):
        values = np.broadcast_to(evaluate_numpy(graph, _nodes.copy(), params), _nodes.shape)
    return gain_of_values(values)


def gain_normalized_graph(graph: Graph, gamma: float) -> Graph:
    """``graph`` with its output multiplied by the constant ``1 / gamma``: the layer gain-fair
    evaluation trained, as a graph every exporter can translate."""
    if graph.space != ACTIVATION:
        raise ValueError(f"gain normalization applies to activation graphs, not {graph.space!r}")
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be finite and > 0, got {gamma!r}")
    n = len(graph.nodes)
    nodes = (*graph.nodes, Node("const", value=1.0 / float(gamma)), Node("mul", (n - 1, n)))
    return Graph(graph.space, nodes, graph.eps, graph.momentum, graph.groups)
