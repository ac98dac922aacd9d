"""Compile a graph to a ``torch.nn.Module`` by generating its forward code.

The module's source is :func:`grammar.codegen.torch_source` (the same text the PyTorch export
writes), executed once per graph key and cached: forward is straight-line torch code, not a
per-node interpreter.  Compiled modules pickle by graph (they rebuild from the graph's JSON
plus their state), so they can cross process boundaries.
"""

from __future__ import annotations

import linecache
import sys
import types
import weakref
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch.nn as nn

from .codegen import torch_source
from .errors import GrammarError
from .graph import Graph
from .ops import NORMACT


@lru_cache(maxsize=512)
def _generated_class(graph: Graph) -> type:
    name = "NormActLayer" if graph.space == NORMACT else "ActivationLayer"
    src = torch_source(graph, name)
    filename = f"<layerforge-{graph.key}>"
    code = compile(src, filename, "exec")  # our generated source, never user text
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    # A real, registered module per graph: torch.compile (dynamo) resolves an inlined
    # function's globals by importing its ``__name__``, so a bare dict namespace breaks
    # compiling a whole model that contains generated layers.
    modname = f"grammar.generated.{name}_{graph.key}"
    module = types.ModuleType(modname)
    module.__file__ = filename
    ns: dict[str, Any] = module.__dict__
    exec(code, ns)  # noqa: S102 - generated from whitelisted templates
    sys.modules[modname] = module
    base = ns[name]

    graph_dict = graph.to_dict()

    def __reduce_ex__(self, protocol):  # noqa: N807
        return (_rebuild, (graph_dict, self._lf_init), self.__dict__)

    cls = type(name, (base,), {"__reduce_ex__": __reduce_ex__, "__module__": "grammar.generated",
                               "graph": graph, "source": src})
    # Once the class is gone (evicted from the cache, no instance left), its module and
    # source go too: a long campaign compiles hundreds of thousands of graphs.
    weakref.finalize(cls, _forget_module, modname, module, filename)
    return cls


def _forget_module(modname: str, module: types.ModuleType, filename: str) -> None:
    if sys.modules.get(modname) is module:
        del sys.modules[modname]
        linecache.cache.pop(filename, None)


def _rebuild(graph_dict: dict, init: dict) -> nn.Module:
    cls = _generated_class(Graph.from_dict(graph_dict))
    obj = cls.__new__(cls)
    return obj


def compile_graph(graph: Graph, num_features: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a fresh ``nn.Module`` computing ``graph`` (trainable leaves become Parameters).

    Activation graphs take no size (``num_features`` is accepted and ignored).  Normact graphs
    need ``num_features`` (channels); ``kwargs`` go to the constructor (``apply_act``, ``eps``,
    ``momentum``, ``groups``, ``group_size``).  Works in float32/float64 and under autocast;
    statistics are computed in at least float32.
    """
    if not isinstance(graph, Graph):
        raise GrammarError(f"expected a Graph, got {type(graph).__name__}")
    cls = _generated_class(graph.pruned())
    if graph.space == NORMACT:
        if num_features is None:
            raise GrammarError("normact graphs need num_features (channels); use layer_factory(graph)(C)")
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise GrammarError(f"num_features must be a positive integer, got {num_features!r}")
        mod = cls(num_features, **kwargs)
    else:
        mod = cls(num_features, **kwargs)
    mod._lf_init = {"num_features": num_features, **kwargs}
    return mod


class LayerFactory:
    """Picklable ``factory(num_features) -> nn.Module`` building fresh layers of one graph."""

    def __init__(self, graph: Graph, **kwargs: Any) -> None:
        self.graph = graph
        self.kwargs = kwargs

    def __call__(self, num_features: int | None = None) -> nn.Module:
        return compile_graph(self.graph, num_features, **self.kwargs)

    def __repr__(self) -> str:
        from .parser import to_text

        return f"LayerFactory({to_text(self.graph)!r})"


def layer_factory(graph: Graph, **kwargs: Any) -> Callable[[int], nn.Module]:
    """Drop-in layer constructor: ``factory(num_features)`` builds a fresh module of ``graph``
    (activation graphs ignore ``num_features``), for architectures that take a norm/act layer."""
    if not isinstance(graph, Graph):
        raise GrammarError(f"expected a Graph, got {type(graph).__name__}")
    return LayerFactory(graph, **kwargs)
