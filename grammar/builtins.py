"""Built-in library: well-known activations and norm-act layers, each a Graph parsed from text.

Norm-act representation of the affine: the per-channel ``weight`` (init 1) and ``bias``
(init 0) are ordinary parameter leaves of the graph.  EvoNorm layers end with
``... * weight + bias`` (EvoNorm's gamma / beta); BN/GN/LN/IN-ReLU put the affine before the
ReLU, exactly as ``BatchNorm2d`` + ``ReLU`` do.  In exports and compiled modules,
``apply_act=False`` keeps only the affine part ``x * weight + bias`` (timm's EvoNorm semantics).
EvoNorm's learnable ``v1`` becomes the module attribute ``v`` (timm's name).

timm facts carried over: EvoNorm2dB0 (eps 1e-3, momentum 0.1, running_var with the unbiased
update, instance std uses the same eps), EvoNorm2dS0 / S1 (groups 32, eps 1e-5), EvoNorm2dB1
(right branch ``(x + 1) * instance_rms(x)``, eps 1e-5), S1 uses SiLU in place of S0's
``x * sigmoid(v * x)``.
"""

from __future__ import annotations

from .errors import GrammarError
from .graph import Graph
from .ops import ACTIVATION, KINDS, NORMACT
from .parser import parse

ACTIVATION_TEXT = {
    "relu": "max(x, 0)",
    "leaky_relu": "max(x, 0.01 * x)",
    "elu": "max(x, 0) + min(exp(x) - 1, 0)",
    "selu": "1.0507009873554805 * (max(x, 0) + min(1.6732632423543772 * (exp(x) - 1), 0))",
    "gelu": "0.5 * x * (1 + erf(x * 0.7071067811865476))",
    "silu": "x * sigmoid(x)",
    "swish": "x * sigmoid(x)",
    "mish": "x * tanh(softplus(x))",
    "softplus": "softplus(x)",
    "tanh": "tanh(x)",
    "sigmoid": "sigmoid(x)",
    "hardswish": "x * min(max(x + 3, 0), 6) / 6",
}
NORMACT_TEXT = {
    "bn_relu": "max((x - mean(x, batch)) / std(x, batch) * weight + bias, 0)",
    "gn_relu": "max((x - mean(x, group)) / std(x, group) * weight + bias, 0)",
    "ln_relu": "max((x - mean(x, layer)) / std(x, layer) * weight + bias, 0)",
    "in_relu": "max((x - mean(x, instance)) / std(x, instance) * weight + bias, 0)",
    "evonorm_b0": "x / max(std(x, batch), v1 * x + std(x, instance)) * weight + bias ; eps=0.001",
    "evonorm_b1": "x / max(std(x, batch), (x + 1) * rms(x, instance)) * weight + bias",
    "evonorm_s0": "x * sigmoid(v1 * x) / std(x, group) * weight + bias",
    "evonorm_s1": "x * sigmoid(x) / std(x, group) * weight + bias",
}
CLASS_NAMES = {
    "evonorm_b0": "EvoNorm2dB0",
    "evonorm_b1": "EvoNorm2dB1",
    "evonorm_s0": "EvoNorm2dS0",
    "evonorm_s1": "EvoNorm2dS1",
    "bn_relu": "BatchNormReLU",
    "gn_relu": "GroupNormReLU",
    "ln_relu": "LayerNormReLU",
    "in_relu": "InstanceNormReLU",
}


def _build() -> dict[str, Graph]:
    out = {name: parse(text, ACTIVATION) for name, text in ACTIVATION_TEXT.items()}
    out.update({name: parse(text, NORMACT) for name, text in NORMACT_TEXT.items()})
    return out


#: name -> Graph for every built-in (``swish`` is an alias of ``silu``).
BUILTINS: dict[str, Graph] = _build()


def list_builtins(kind: str | None = None) -> list[str]:
    """Names of the built-ins (sorted), optionally only those of space ``kind``."""
    if kind is not None and kind not in KINDS:
        raise GrammarError(f"unknown space kind {kind!r}; expected one of {', '.join(KINDS)}")
    names = list(ACTIVATION_TEXT) * (kind in (None, ACTIVATION)) + list(NORMACT_TEXT) * (
        kind in (None, NORMACT)
    )
    return sorted(names)


def get_builtin(name: str) -> Graph:
    """The built-in graph called ``name`` (GrammarError listing the names when unknown)."""
    g = BUILTINS.get(name)
    if g is None:
        raise GrammarError(f"unknown built-in {name!r}; built-ins: {', '.join(list_builtins())}")
    return g


def builtin_text(name: str) -> str:
    """The grammar text a built-in is defined by."""
    get_builtin(name)
    return ACTIVATION_TEXT.get(name) or NORMACT_TEXT[name]


def baseline(kind: str) -> str:
    """Name of the baseline layer of a space: ``relu`` (activation) or ``bn_relu`` (normact)."""
    if kind == ACTIVATION:
        return "relu"
    if kind == NORMACT:
        return "bn_relu"
    raise GrammarError(f"unknown space kind {kind!r}; expected one of {', '.join(KINDS)}")
