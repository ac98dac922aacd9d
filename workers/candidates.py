"""What the workers evaluate: a candidate layer, resolved from its JSON form.

A candidate arrives as one of:

- a grammar graph dict (``Graph.to_dict()``), or a :class:`grammar.Graph`;
- ``{"builtin": "relu"}`` (a grammar built-in by name);
- ``{"text": "x * sigmoid(x)", "space": "activation"}`` (parsed by the grammar's safe parser);
- a :class:`Candidate` built directly from a torch layer factory (tests, benchmarks, baselines).

:func:`resolve_candidate` turns any of these into a :class:`Candidate` with a ``kind``
(``"activation"`` or ``"normact"``), a ``factory(num_features) -> nn.Module`` and, where it
came from the grammar, the graph (for the static check and the functional fingerprint).

Group statistics at proxy widths: a normact graph's ``groups`` option (32 for GN-ReLU and
EvoNorm-S0/S1, as in the GroupNorm and EvoNorm papers) is a count chosen for ResNet-50 widths,
where every group holds at least 2 channels (64 / 32). The grammar shrinks it to divide the
channel count, so at CPU proxy widths (8-32 channels) it becomes one group per channel: the
"group" moment turns into a per-channel instance moment over a few spatial positions (4 at a
2x2 feature map), a different and much less stable layer (EvoNorm-S0 then fails the quality
stage). The workers therefore build grammar layers with at least :data:`MIN_GROUP_SIZE`
channels per group: ``groups = min(graph.groups, C // MIN_GROUP_SIZE)`` (then shrunk to a
divisor of ``C``), which leaves every width >= 64 exactly as the graph says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layerforge.workers.errors import InvalidConfigError

__all__ = [
    "MIN_GROUP_SIZE",
    "Candidate",
    "GraphLayerFactory",
    "functional_fingerprint",
    "group_count",
    "resolve_candidate",
]

MIN_GROUP_SIZE = 2  # channels per group, at least (ResNet-50's smallest: 64 channels / 32 groups)


@dataclass
class Candidate:
    kind: str
    factory: Callable[[int], nn.Module]
    name: str = "candidate"
    graph: Any = None  # grammar.Graph when the candidate came from the grammar
    spec: Any = None  # the JSON form it came from

    def fingerprint(self, gain: str = "fair") -> str:
        """The grammar's functional fingerprint of the graph (under ``gain``, see
        :func:`grammar.fingerprint`), else one computed here."""
        if self.graph is not None:
            try:
                from layerforge.grammar import fingerprint

                return str(fingerprint(self.graph, gain))
            except ImportError:  # pragma: no cover - grammar always ships fingerprint
                pass
        return functional_fingerprint(self.factory, self.kind)


def functional_fingerprint(factory: Callable[[int], nn.Module], kind: str) -> str:
    """AutoML-Zero style: outputs on fixed probe inputs (train mode, fixed init), rounded, hashed."""
    gen = torch.Generator().manual_seed(12345)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = factory(4)
    shape = (8, 4, 3, 3) if kind == "normact" else (2, 4, 4, 4)
    x = torch.randn(shape, generator=gen) * 2.0
    layer.train()
    with torch.no_grad():
        y = layer(x).double()
    y = torch.nan_to_num(y, nan=1e300, posinf=1e301, neginf=-1e301)
    rounded = torch.round(y * 1e4) / 1e4
    digest = hashlib.sha256(kind.encode() + rounded.numpy().tobytes()).hexdigest()
    return "fn:" + digest[:20]


def _grammar():
    try:
        from layerforge import grammar
    except ImportError as exc:  # pragma: no cover
        raise InvalidConfigError(
            "candidate", f"the grammar package is not importable: {exc}"
        ) from exc
    return grammar


def group_count(channels: int, groups: int, min_group_size: int = MIN_GROUP_SIZE) -> int:
    """Groups for a group moment over ``channels``: at most ``groups``, and at least
    ``min_group_size`` channels in each (the grammar then shrinks it to a divisor)."""
    return max(1, min(int(groups), int(channels) // max(1, int(min_group_size))))


class GraphLayerFactory:
    """Picklable ``factory(num_features) -> nn.Module`` for a grammar graph, as the workers
    build it: a graph with a group moment gets :func:`group_count` groups at each width."""

    def __init__(self, graph: Any, min_group_size: int = MIN_GROUP_SIZE):
        self.graph = graph
        self.min_group_size = int(min_group_size)
        self.uses_groups = graph.space == "normact" and any(
            getattr(n, "axis", None) == "group" for n in graph.nodes
        )

    def __call__(self, num_features: int | None = None) -> nn.Module:
        g = _grammar()
        if self.uses_groups and isinstance(num_features, int) and num_features >= 1:
            groups = group_count(num_features, self.graph.groups, self.min_group_size)
            return g.layer_factory(self.graph, groups=groups)(num_features)
        return g.layer_factory(self.graph)(num_features)

    def __repr__(self) -> str:
        return (
            f"GraphLayerFactory({_graph_name(self.graph)!r}, min_group_size={self.min_group_size})"
        )


def _from_graph(graph: Any, spec: Any, name: str | None = None) -> Candidate:
    factory = GraphLayerFactory(graph)
    return Candidate(
        kind=graph.space,
        factory=factory,
        name=name or _graph_name(graph),
        graph=graph,
        spec=spec,
    )


def _graph_name(graph: Any) -> str:
    for attr in ("text", "to_text", "key"):
        v = getattr(graph, attr, None)
        try:
            v = v() if callable(v) else v
        except Exception:  # noqa: BLE001 - naming only
            v = None
        if isinstance(v, str) and v:
            return v[:200]
    return "graph"


def resolve_candidate(spec: Any, kind: str | None = None) -> Candidate:
    """Resolve any accepted candidate form (see the module docstring) to a :class:`Candidate`.

    Raises :class:`grammar.GrammarError` for a bad graph or text and
    :class:`InvalidConfigError` for a value of the wrong shape; the rejection protocol turns
    both into a ``static`` rejection.
    """
    if isinstance(spec, Candidate):
        return spec
    g = _grammar()
    if isinstance(spec, g.Graph):
        return _from_graph(spec, spec)
    if isinstance(spec, str):
        spec = {"builtin": spec} if kind is None else {"text": spec, "space": kind}
    if not isinstance(spec, dict):
        raise InvalidConfigError(
            "candidate",
            f"must be a graph dict, a Graph or a Candidate, got {type(spec).__name__}",
        )
    if "builtin" in spec:
        graph = g.get_builtin(spec["builtin"])
        return _from_graph(graph, spec, name=str(spec["builtin"]))
    if "text" in spec:
        space = spec.get("space") or spec.get("kind") or kind
        if space not in ("activation", "normact"):
            raise InvalidConfigError(
                "candidate.space", f"must be 'activation' or 'normact', got {space!r}"
            )
        graph = g.parse(spec["text"], space)
        return _from_graph(graph, spec, name=str(spec["text"])[:200])
    graph = g.Graph.from_dict(spec)
    return _from_graph(graph, spec)
