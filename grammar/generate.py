"""Random graphs and EvoNorm-style mutation, valid by construction and deterministic per rng.

Activation graphs start from the leaves ``x, 0, 1, beta``; normact graphs from EvoNorm's
``x, 0, v0, v1`` and always end with the per-channel affine ``* weight + bias`` (EvoNorm's
gamma / beta), which mutation never touches.
"""

from __future__ import annotations

import random

from .errors import GrammarError
from .graph import Graph, Node
from .ops import NORMACT, OPS
from .space import Space, final_affine, passes_static, uses_statistic


def _leaves(space: Space) -> list[Node]:
    if space.kind == NORMACT:
        return [
            Node("x"),
            Node("const", value=0.0),
            Node("param", name="v0"),
            Node("param", name="v1"),
        ]
    return [
        Node("x"),
        Node("const", value=0.0),
        Node("const", value=1.0),
        Node("param", name="beta"),
    ]


def _pick_op(space: Space, rng: random.Random, avoid: str | None = None) -> str:
    ops = space.ops
    if avoid is not None and len(ops) > 1:
        while True:
            op = ops[rng.randrange(len(ops))]
            if op != avoid:
                return op
    return ops[rng.randrange(len(ops))]


def _make_node(
    op: str, pool: list[int], xdep: list[int], need_x: bool, space: Space, rng: random.Random
) -> Node:
    spec = OPS[op]
    inputs = [pool[rng.randrange(len(pool))] for _ in range(spec.arity)]
    if need_x:
        inputs[rng.randrange(spec.arity)] = xdep[rng.randrange(len(xdep))]
    axis = space.axes[rng.randrange(len(space.axes))] if spec.aggregate else None
    return Node(op, tuple(inputs), axis=axis)


#: Draws :func:`random_graph` makes for a space that requires a statistic before it gives up.
STATISTIC_ATTEMPTS = 1000


def random_graph(space: Space, rng: random.Random) -> Graph:
    """A random valid graph of ``space``: depends on x, within the node and depth limits.

    The body has 1..max_nodes op nodes (normact: max_nodes - 2, then ``* weight + bias``);
    each op is drawn uniformly from ``space.ops`` and its inputs uniformly from earlier nodes
    shallow enough to respect ``max_depth``; the last op reads at least one x-dependent node.
    In a space that requires a statistic, graphs are drawn until one uses a live statistic.
    """
    if not space.require_statistic:
        return _draw_graph(space, rng)
    for _ in range(STATISTIC_ATTEMPTS):
        graph = _draw_graph(space, rng)
        if uses_statistic(graph):
            return graph
    raise GrammarError(
        f"no graph using a statistic in {STATISTIC_ATTEMPTS} random draws: raise max_nodes "
        "or add statistic ops to the space"
    )


def _draw_graph(space: Space, rng: random.Random) -> Graph:
    """One random graph of ``space`` (see :func:`random_graph`), statistic or not."""
    affine = space.kind == NORMACT
    body_max = space.max_nodes - 2 if affine else space.max_nodes
    depth_max = space.max_depth - 2 if affine else space.max_depth
    if body_max < 1 or depth_max < 1:
        raise GrammarError("space limits leave no room for an op node")
    nodes = _leaves(space)
    depth = [0] * len(nodes)
    dep = [n.op == "x" for n in nodes]
    n_ops = rng.randint(1, body_max)
    for k in range(n_ops):
        pool = [i for i, d in enumerate(depth) if d < depth_max]
        xdep = [i for i in pool if dep[i]]
        node = _make_node(_pick_op(space, rng), pool, xdep, k == n_ops - 1, space, rng)
        nodes.append(node)
        depth.append(1 + max(depth[j] for j in node.inputs))
        dep.append(any(dep[j] for j in node.inputs))
    if affine:
        body = len(nodes) - 1
        nodes += [Node("param", name="weight"), Node("param", name="bias")]
        nodes.append(Node("mul", (body, body + 1)))
        nodes.append(Node("add", (body + 3, body + 2)))
    return Graph._trusted(space.kind, tuple(nodes)).pruned()


def _with_leaves(graph: Graph, space: Space) -> list[Node]:
    """The graph's live nodes preceded by the space's standard leaves (shared, not duplicated)."""
    g = graph.pruned()
    nodes = _leaves(space)
    seen = {(n.op, n.value, n.name): i for i, n in enumerate(nodes)}
    remap: dict[int, int] = {}
    for i, n in enumerate(g.nodes):
        if n.is_leaf:
            k = (n.op, n.value, n.name)
            if k not in seen:
                seen[k] = len(nodes)
                nodes.append(n)
            remap[i] = seen[k]
    for i, n in enumerate(g.nodes):
        if not n.is_leaf:
            remap[i] = len(nodes)
            nodes.append(Node(n.op, tuple(remap[j] for j in n.inputs), n.value, n.name, n.axis))
    return nodes


def mutate(
    graph: Graph,
    space: Space,
    rng: random.Random,
    attempts: int = 25,
    valid_keys: set[str] | None = None,
) -> Graph:
    """EvoNorm mutation: pick an op node, replace its op, re-pick its inputs from earlier nodes.

    Tries up to ``attempts`` times for a result that passes :func:`check_static` and differs
    from ``graph``; falls back to :func:`random_graph` (e.g. for a seed outside the space).
    Deterministic given the rng state.

    ``valid_keys`` is :func:`grammar.space.passes_static`'s memo, kept by the caller across
    calls for one ``space``; the result is the same with or without it.
    """
    if graph.space != space.kind:
        raise GrammarError(f"cannot mutate a {graph.space} graph in a {space.kind} space")
    base = Graph._trusted(
        graph.space, tuple(_with_leaves(graph, space)), graph.eps, graph.momentum, graph.groups
    )
    skip = set(final_affine(base) or ())
    cands = [i for i, n in enumerate(base.nodes) if not n.is_leaf and i not in skip]
    if not cands:
        return random_graph(space, rng)
    depths = base._depths
    xd = base._xdep
    base.node_hashes  # noqa: B018 - computed once here, reused by every trial below
    for _ in range(attempts):
        i = cands[rng.randrange(len(cands))]
        lim = space.max_depth
        pool = [j for j in range(i) if depths[j] < lim]
        xdep = [j for j in pool if xd[j]]
        new = _make_node(
            _pick_op(space, rng, avoid=base.nodes[i].op), pool, xdep, bool(xdep), space, rng
        )
        g = base._replaced(i, new)
        if g.key == graph.key or not passes_static(g, space, valid_keys):
            continue
        return g.pruned()
    return random_graph(space, rng)
