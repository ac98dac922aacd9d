"""Search spaces: which ops, axes and sizes a campaign may use, and the static check.

Presets: ``swish`` (the Swish paper's unary and binary lists; activation), ``evonorm``
(EvoNorm's primitives; normact), ``full`` (every op valid for the kind).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import GrammarError
from .graph import Graph
from .ops import ACTIVATION, AXES, EVONORM_OPS, KINDS, NORMACT, OPS, SWISH_OPS

PRESETS = ("swish", "evonorm", "full")
DEFAULT_LIMITS = {ACTIVATION: (8, 6), NORMACT: (12, 8)}
DEFAULT_AXES = {"evonorm": ("batch", "instance", "group"), "full": AXES}


@dataclass(frozen=True)
class Space:
    """A search space: kind, allowed ops, size limits and (normact) allowed statistic axes.

    ``require_statistic`` (normact only): every layer must use a statistic (a mean, second
    moment or std over some axis); without one a normact graph is an activation with a learnt
    affine, which a shallow proxy can prefer to any normalizer.
    """

    kind: str
    ops: tuple[str, ...]
    max_nodes: int
    max_depth: int
    axes: tuple[str, ...] = ()
    require_statistic: bool = False

    @property
    def leaf_names(self) -> tuple[str, ...]:
        """Names random graphs start from (EvoNorm: x, 0, v0, v1; activation: x, 0, 1, beta)."""
        return ("x", "0", "v0", "v1") if self.kind == NORMACT else ("x", "0", "1", "beta")


def make_space(
    kind: str,
    ops: str | Sequence[str] = "full",
    max_nodes: int | None = None,
    max_depth: int | None = None,
    axes: Sequence[str] | None = None,
    require_statistic: bool = False,
) -> Space:
    """Build a :class:`Space` from a preset name or an explicit op list (validated).

    Raises GrammarError on an unknown kind, preset, op or axis, an op not valid in ``kind``,
    or ``require_statistic`` outside a normact space or with no statistic op to meet it.
    """
    if kind not in KINDS:
        raise GrammarError(f"unknown space kind {kind!r}; expected one of {', '.join(KINDS)}")
    if isinstance(ops, str):
        if ops == "swish":
            if kind != ACTIVATION:
                raise GrammarError(
                    "preset 'swish' is an activation preset; use 'evonorm' or 'full' for normact"
                )
            names: tuple[str, ...] = SWISH_OPS
        elif ops == "evonorm":
            if kind != NORMACT:
                raise GrammarError(
                    "preset 'evonorm' is a normact preset; use 'swish' or 'full' for activation"
                )
            names = EVONORM_OPS
        elif ops == "full":
            names = tuple(sorted(n for n, op in OPS.items() if kind in op.kinds))
        else:
            raise GrammarError(
                f"unknown op preset {ops!r}; expected one of {', '.join(PRESETS)} or a list of ops"
            )
        preset = ops
    else:
        try:
            names = tuple(ops)
        except TypeError:
            raise GrammarError("ops must be a preset name or a list of op names") from None
        if not names:
            raise GrammarError("ops must not be empty")
        for n in names:
            if not isinstance(n, str) or n not in OPS:
                raise GrammarError(f"unknown op {n!r}; known ops: {', '.join(sorted(OPS))}")
            if kind not in OPS[n].kinds:
                raise GrammarError(f"op {n!r} is not valid in the {kind} space")
        names = tuple(dict.fromkeys(names))
        preset = "full"
    dn, dd = DEFAULT_LIMITS[kind]
    max_nodes = dn if max_nodes is None else max_nodes
    max_depth = dd if max_depth is None else max_depth
    for label, v in (("max_nodes", max_nodes), ("max_depth", max_depth)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
            raise GrammarError(f"{label} must be an integer in [1, 64], got {v!r}")
    if kind == NORMACT:
        ax = tuple(axes) if axes is not None else DEFAULT_AXES.get(preset, AXES)
        for a in ax:
            if a not in AXES:
                raise GrammarError(f"unknown axis {a!r}; expected one of {', '.join(AXES)}")
        if any(OPS[n].aggregate for n in names) and not ax:
            raise GrammarError("a normact space with aggregations needs at least one axis")
        if max_nodes < 3:
            raise GrammarError(
                "normact spaces need max_nodes >= 3 (body plus the weight/bias affine)"
            )
        if require_statistic and not any(OPS[n].aggregate for n in names):
            raise GrammarError(
                "require_statistic needs a statistic op among the ops (one of "
                + ", ".join(sorted(n for n, op in OPS.items() if op.aggregate))
                + ")"
            )
    else:
        if axes:
            raise GrammarError("axes apply only to the normact space")
        if require_statistic:
            raise GrammarError("require_statistic applies only to the normact space")
        ax = ()
    return Space(
        kind=kind,
        ops=names,
        max_nodes=max_nodes,
        max_depth=max_depth,
        axes=ax,
        require_statistic=bool(require_statistic),
    )


def uses_statistic(graph: Graph) -> bool:
    """Whether the pruned graph uses a statistic (a mean, second moment or std over some
    axis): a normact layer without one is an activation with a learnt affine, not a
    normalizer."""
    pruned = graph.pruned()
    return any(
        live and not node.is_leaf and OPS[node.op].aggregate
        for node, live in zip(pruned.nodes, pruned.live, strict=True)
    )


def final_affine(graph: Graph) -> tuple[int, int] | None:
    """If the output is ``body * weight + bias`` return (mul index, add index), else None."""
    nodes = graph.nodes
    out = nodes[-1]
    if graph.space != NORMACT or out.op != "add":
        return None
    for a, b in (out.inputs, out.inputs[::-1]):
        if nodes[b].op == "param" and nodes[b].name == "bias" and nodes[a].op == "mul":
            for _c, d in (nodes[a].inputs, nodes[a].inputs[::-1]):
                if nodes[d].op == "param" and nodes[d].name == "weight":
                    return a, len(nodes) - 1
    return None


def check_static(graph: Graph, space: Space) -> None:
    """Static rejection stage: raise GrammarError with a readable reason, or return None.

    Rejects a graph of the wrong kind, one whose output ignores x, one over the node or depth
    limit, one using an op or axis the space does not allow (the final ``* weight + bias``
    affine of a normact graph is always allowed), or, where the space requires one, a layer
    that uses no statistic.
    """
    if not isinstance(graph, Graph):
        raise GrammarError(f"expected a Graph, got {type(graph).__name__}")
    if graph.space != space.kind:
        raise GrammarError(f"graph is a {graph.space} graph but the space is {space.kind}")
    if not graph.uses_x:
        raise GrammarError("the output does not depend on x")
    if graph.num_nodes > space.max_nodes:
        raise GrammarError(
            f"graph has {graph.num_nodes} op nodes, over the limit of {space.max_nodes}"
        )
    if graph.depth > space.max_depth:
        raise GrammarError(f"graph has depth {graph.depth}, over the limit of {space.max_depth}")
    allowed = set(space.ops)
    exempt = set(final_affine(graph) or ())
    for i, (n, lv) in enumerate(zip(graph.nodes, graph.live)):
        if not lv or n.is_leaf or i in exempt:
            continue
        if n.op not in allowed:
            raise GrammarError(
                f"op {n.op!r} is not allowed in this space (allowed: {', '.join(space.ops)})"
            )
        if n.axis is not None and n.axis not in space.axes:
            raise GrammarError(
                f"axis {n.axis!r} is not allowed in this space (allowed: {', '.join(space.axes)})"
            )
    if space.require_statistic and not uses_statistic(graph):
        raise GrammarError(
            "the layer uses no statistic (a mean, second moment or std over an axis), which "
            "this space requires (require_statistic)"
        )


def passes_static(graph: Graph, space: Space, valid_keys: set[str] | None = None) -> bool:
    """:func:`check_static` as a yes or no, memoized in ``valid_keys`` (the keys of graphs of
    ``space`` known to pass it; read and extended): a search that keeps meeting the same
    structures checks each once. The answer is the same with or without the memo."""
    if valid_keys is not None and graph.key in valid_keys:
        return True
    try:
        check_static(graph, space)
    except GrammarError:
        return False
    if valid_keys is not None:
        valid_keys.add(graph.key)
    return True
