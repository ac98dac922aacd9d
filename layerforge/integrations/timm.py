"""A layerforge layer as what timm's ``act_layer=`` and ``norm_layer=`` accept.

timm builds activations with ``act_layer(inplace=...)`` (through ``get_act_layer`` /
``create_act_layer``) and norm-act layers through ``get_norm_act_layer``, which takes a
string, one of timm's own norm-act classes or a plain function, and asserts on any other
class ("No equivalent norm_act layer"). So:

- :func:`act_layer` returns a class whose ``(inplace=False, **kwargs)`` constructor builds a
  fresh copy of the activation (the argument is accepted and ignored: the layer is computed
  out of place);
- :func:`norm_act_layer` returns a function ``(num_features, apply_act=True, **kwargs)`` that
  builds a fresh norm-act layer for that many channels. ``apply_act=False`` keeps only the
  layer's per-channel affine part, as timm's EvoNorm layers do. timm's ``eps``, ``momentum``,
  ``act_layer`` and ``inplace`` arguments are ignored: the layer keeps the constants and the
  nonlinearity it was evaluated with (that is the thing that was searched for).

Both accept what a user holds after a campaign: a :class:`layerforge.grammar.Graph`, the
expression text or a built-in's name, a class from an exported PyTorch file, a compiled
module (copied for each use) or a ``layer_factory``.

```python
from layerforge.integrations.timm import act_layer, norm_act_layer
model = timm.create_model("resnet50", act_layer=act_layer("x * sigmoid(x)"))
model = timm.create_model("efficientnet_b0", norm_layer=norm_act_layer("evonorm_s0"))
```
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeAlias

from torch import nn

from layerforge.grammar import (
    BUILTINS,
    GrammarError,
    Graph,
    compile_graph,
    parse,
)

__all__ = ["act_layer", "norm_act_layer"]

LayerLike: TypeAlias = Graph | str | type | nn.Module | Callable[..., nn.Module]


def _graph_of(layer: Graph | str, space: str) -> Graph:
    if isinstance(layer, Graph):
        graph = layer
    elif layer in BUILTINS:
        graph = BUILTINS[layer]
    else:
        graph = parse(layer, space)
    if graph.space != space:
        raise GrammarError(
            f"{layer!r} is a {graph.space} layer; "
            f"{'act_layer' if space == 'activation' else 'norm_act_layer'} needs a {space} layer"
        )
    return graph


def _builder(layer: LayerLike, space: str) -> Callable[..., nn.Module]:
    """``build(num_features, **kwargs) -> nn.Module`` making a fresh layer each call."""
    if isinstance(layer, (Graph, str)):
        graph = _graph_of(layer, space)
        return lambda num_features=None, **kwargs: compile_graph(graph, num_features, **kwargs)
    if isinstance(layer, type) and issubclass(layer, nn.Module):
        return lambda num_features=None, **kwargs: (
            layer(**kwargs) if num_features is None else layer(num_features, **kwargs)
        )
    if isinstance(layer, nn.Module):
        init = getattr(layer, "_lf_init", None)
        if space == "normact" and init is not None:  # a compiled layer: rebuild it per size
            cls = type(layer)
            fixed = {k: v for k, v in init.items() if k != "num_features"}
            return lambda num_features=None, **kwargs: cls(num_features, **{**fixed, **kwargs})
        if space == "normact":
            raise TypeError(
                "a norm-act module instance has a fixed channel count; pass its class, its "
                "graph, or a layer_factory so that each timm block gets its own width"
            )
        return lambda num_features=None, **kwargs: copy.deepcopy(layer)
    factory_graph = getattr(layer, "graph", None)
    if isinstance(factory_graph, Graph):  # a layer_factory: its graph and constructor arguments
        fixed = dict(getattr(layer, "kwargs", {}) or {})
        checked = _graph_of(factory_graph, space)
        return lambda num_features=None, **kwargs: compile_graph(
            checked, num_features, **{**fixed, **kwargs}
        )
    if callable(layer):
        return lambda num_features=None, **kwargs: layer(num_features, **kwargs)
    raise TypeError(
        f"cannot make a timm layer from {type(layer).__name__}: pass a Graph, an expression, "
        "a built-in's name, an exported class, a compiled module or a layer_factory"
    )


def act_layer(layer: LayerLike) -> type[nn.Module]:
    """A class for timm's ``act_layer=``: ``cls(inplace=False)`` builds a fresh activation."""
    build = _builder(layer, "activation")
    text = getattr(layer, "expression", None) or (layer if isinstance(layer, str) else None)

    class LayerforgeActivation(nn.Module):
        """A layerforge activation built for timm (``inplace`` is accepted and ignored)."""

        expression = text

        def __init__(self, inplace: bool = False, **kwargs: Any) -> None:
            super().__init__()
            self.layer = build()

        def forward(self, x):
            return self.layer(x)

    return LayerforgeActivation


def norm_act_layer(layer: LayerLike) -> Callable[..., nn.Module]:
    """A function for timm's ``norm_layer=`` (and ``get_norm_act_layer``):
    ``fn(num_features, apply_act=True, **timm_kwargs)`` builds a fresh norm-act layer."""
    build = _builder(layer, "normact")

    def layerforge_norm_act(
        num_features: int,
        apply_act: bool = True,
        act_layer: Any = None,
        eps: float | None = None,
        momentum: float | None = None,
        inplace: bool | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        # a plain factory may take only the width: apply_act is passed only when it matters
        return build(num_features, **({} if apply_act else {"apply_act": False}))

    layerforge_norm_act.__doc__ = (
        f"Norm-act layer {getattr(layer, 'expression', None) or layer!r} built by layerforge "
        "(timm's eps, momentum, act_layer and inplace arguments are ignored)."
    )
    return layerforge_norm_act
