"""Graph: the immutable DAG both search spaces share.

A graph is a tuple of :class:`Node`; each node may only read earlier nodes and the last node is
the output (EvoNorm's representation).  Leaves are:

* ``Node("x")``: the layer input;
* ``Node("const", value=v)``: a literal constant (e.g. the ``0`` initial node of EvoNorm);
* ``Node("param", name=n)``: a trainable parameter.  Activation space: scalar ``beta``,
  ``beta1`` ... ``beta9`` (init 1).  Normact space: per-channel ``v0`` (init 0), ``v1``
  (init 1) (EvoNorm's initial nodes) and ``weight`` (init 1) / ``bias`` (init 0), the final
  per-channel affine (EvoNorm's gamma / beta).

Normact graphs also carry layer options: ``eps`` (added inside std / rms), ``momentum``
(running statistics EMA) and ``groups`` (group axis, shrunk to divide the channel count).

Nodes that do not reach the output are dead: they are ignored by :attr:`Graph.key`,
:attr:`Graph.num_nodes`, compilation and export.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import GrammarError
from .ops import ACTIVATION, AXES, KINDS, NORMACT, OPS

FORMAT = "layerforge.graph/1"
LEAF_OPS = ("x", "const", "param")
NORMACT_PARAMS = {"v0": 0.0, "v1": 1.0, "weight": 1.0, "bias": 0.0}
_BETA_RE = re.compile(r"^beta[1-9]?$")
DEFAULT_EPS = 1e-5
DEFAULT_MOMENTUM = 0.1
DEFAULT_GROUPS = 32
MAX_GRAPH_NODES = 256


class cached_property:
    """Compute once per instance and store in ``__dict__`` (works on frozen dataclasses)."""

    def __init__(self, fn):
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


def param_init(kind: str, name: str) -> float:
    """Initial value of trainable parameter ``name`` in space ``kind`` (GrammarError if invalid)."""
    if kind == NORMACT and name in NORMACT_PARAMS:
        return NORMACT_PARAMS[name]
    if kind == ACTIVATION and isinstance(name, str) and _BETA_RE.match(name):
        return 1.0
    valid = "v0, v1, weight, bias" if kind == NORMACT else "beta, beta1 ... beta9"
    raise GrammarError(f"unknown parameter {name!r} in {kind} space; valid: {valid}")


@dataclass(frozen=True)
class Node:
    """One node: a leaf (``x``, ``const``, ``param``) or an op applied to earlier nodes."""

    op: str
    inputs: tuple[int, ...] = ()
    value: float | None = None
    name: str | None = None
    axis: str | None = None

    @property
    def is_leaf(self) -> bool:
        """True for x, const and param nodes."""
        return self.op in LEAF_OPS

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of this node."""
        d: dict[str, Any] = {"op": self.op}
        if self.inputs:
            d["inputs"] = list(self.inputs)
        if self.value is not None:
            d["value"] = self.value
        if self.name is not None:
            d["name"] = self.name
        if self.axis is not None:
            d["axis"] = self.axis
        return d


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _to_float(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise GrammarError(f"{what} must be a number, got {v!r}")
    try:
        return float(v)
    except OverflowError:
        raise GrammarError(f"{what} is out of range: {v!r}") from None


def _check_node(i: int, node: Node, kind: str) -> None:
    """Validate one node at index ``i`` (GrammarError naming the node and the problem)."""
    where = f"node {i}"
    if not isinstance(node, Node):
        raise GrammarError(f"{where}: expected a Node, got {type(node).__name__}")
    op = node.op
    if op == "x":
        if node.inputs or node.value is not None or node.name is not None or node.axis is not None:
            raise GrammarError(f"{where}: the input node 'x' takes no inputs, value, name or axis")
        return
    if op == "const":
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v):
            raise GrammarError(f"{where}: const needs a finite numeric 'value', got {v!r}")
        if node.inputs or node.name is not None or node.axis is not None:
            raise GrammarError(f"{where}: const takes only a value")
        return
    if op == "param":
        if node.inputs or node.value is not None or node.axis is not None:
            raise GrammarError(f"{where}: param takes only a name")
        try:
            param_init(kind, node.name)  # type: ignore[arg-type]  # a param node always has a name (validated)
        except GrammarError as exc:
            raise GrammarError(f"{where}: {exc}") from None
        return
    spec = OPS.get(op) if isinstance(op, str) else None
    if spec is None:
        raise GrammarError(f"{where}: unknown op {op!r}; known ops: {', '.join(sorted(OPS))}")
    if kind not in spec.kinds:
        raise GrammarError(f"{where}: op {op!r} is not available in the {kind} space")
    if len(node.inputs) != spec.arity:
        raise GrammarError(
            f"{where}: op {op!r} takes {spec.arity} input(s), got {len(node.inputs)}"
        )
    for j in node.inputs:
        if isinstance(j, bool) or not isinstance(j, int) or j < 0 or j >= i:
            raise GrammarError(
                f"{where}: input {j!r} must be the index of an earlier node (0..{i - 1})"
            )
    if spec.aggregate:
        if node.axis not in AXES:
            raise GrammarError(
                f"{where}: aggregation {op!r} needs an axis in {', '.join(AXES)}, got {node.axis!r}"
            )
    elif node.axis is not None:
        raise GrammarError(f"{where}: op {op!r} takes no axis")
    if node.value is not None or node.name is not None:
        raise GrammarError(f"{where}: op {op!r} takes no value or name")


def _node_depth(n: Node, depths: list) -> int:
    return 1 + max(depths[j] for j in n.inputs) if n.inputs else 0


def _node_xdep(n: Node, deps: list) -> bool:
    return n.op == "x" or any(deps[j] for j in n.inputs)


def _node_hash(n: Node, hashes: list) -> str:
    if n.op == "x":
        return "x"
    if n.op == "const":
        return "c:" + repr(float(n.value) + 0.0)  # type: ignore[arg-type]  # a const node always has a value (validated)
    if n.op == "param":
        return "p:" + str(n.name)
    kids = [hashes[j] for j in n.inputs]
    if OPS[n.op].commutative:
        kids.sort()
    s = n.op + ("@" + n.axis if n.axis else "") + "(" + ",".join(kids) + ")"
    return hashlib.blake2b(s.encode(), digest_size=16).hexdigest()


#: Facts computed node by node from earlier nodes' facts (so they depend on a node's
#: subtree alone): the cached attribute of Graph and the function of one node.
_PER_NODE = {"node_hashes": _node_hash, "_depths": _node_depth, "_xdep": _node_xdep}


def _per_node(fn, nodes, prefix=()) -> tuple:
    values = list(prefix)
    for n in nodes:
        values.append(fn(n, values))
    return tuple(values)


@dataclass(frozen=True)
class Graph:
    """Immutable computation DAG; ``nodes[-1]`` is the output. See the module docstring."""

    space: str
    nodes: tuple[Node, ...]
    eps: float = DEFAULT_EPS
    momentum: float = DEFAULT_MOMENTUM
    groups: int = DEFAULT_GROUPS

    def __post_init__(self) -> None:
        if self.space not in KINDS:
            raise GrammarError(f"unknown space {self.space!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(self.nodes, tuple):
            object.__setattr__(self, "nodes", tuple(self.nodes))
        if not self.nodes:
            raise GrammarError("a graph needs at least one node")
        if len(self.nodes) > MAX_GRAPH_NODES:
            raise GrammarError(
                f"a graph may have at most {MAX_GRAPH_NODES} nodes, got {len(self.nodes)}"
            )
        for i, node in enumerate(self.nodes):
            _check_node(i, node, self.space)
        if (
            isinstance(self.eps, bool)
            or not isinstance(self.eps, (int, float))
            or not (0 < self.eps < 1)
        ):
            raise GrammarError(f"eps must be a number in (0, 1), got {self.eps!r}")
        if (
            isinstance(self.momentum, bool)
            or not isinstance(self.momentum, (int, float))
            or not (0 <= self.momentum <= 1)
        ):
            raise GrammarError(f"momentum must be a number in [0, 1], got {self.momentum!r}")
        if (
            isinstance(self.groups, bool)
            or not isinstance(self.groups, int)
            or not (1 <= self.groups <= 4096)
        ):
            raise GrammarError(f"groups must be an integer in [1, 4096], got {self.groups!r}")
        if self.space == ACTIVATION and (
            self.eps != DEFAULT_EPS
            or self.momentum != DEFAULT_MOMENTUM
            or self.groups != DEFAULT_GROUPS
        ):
            raise GrammarError(
                "eps, momentum and groups are normact options; activation graphs take none"
            )

    # ------------------------------------------------------------------ structure
    @property
    def output(self) -> int:
        """Index of the output node (the last one)."""
        return len(self.nodes) - 1

    @cached_property
    def live(self) -> tuple[bool, ...]:
        """For each node, whether it reaches the output."""
        live = [False] * len(self.nodes)
        live[-1] = True
        for i in range(len(self.nodes) - 1, -1, -1):
            if live[i]:
                for j in self.nodes[i].inputs:
                    live[j] = True
        return tuple(live)

    @cached_property
    def _depths(self) -> tuple[int, ...]:
        return _per_node(_node_depth, self.nodes)

    @cached_property
    def _xdep(self) -> tuple[bool, ...]:
        return _per_node(_node_xdep, self.nodes)

    @property
    def depth(self) -> int:
        """Longest op chain from a leaf to the output (a leaf output has depth 0)."""
        return self._depths[-1]

    @property
    def uses_x(self) -> bool:
        """Whether the output depends on the input x."""
        return self._xdep[-1]

    @cached_property
    def num_nodes(self) -> int:
        """Number of live op (non-leaf) nodes."""
        return sum(1 for n, lv in zip(self.nodes, self.live) if lv and not n.is_leaf)

    @cached_property
    def params(self) -> tuple[str, ...]:
        """Names of the trainable parameters the output uses, sorted."""
        return tuple(
            sorted(
                {
                    n.name
                    for n, lv in zip(self.nodes, self.live)
                    if lv and n.op == "param" and n.name is not None
                }
            )
        )

    @property
    def num_params(self) -> int:
        """Trainable parameters per channel (normact) or scalars (activation)."""
        return len(self.params)

    @cached_property
    def ops_used(self) -> tuple[str, ...]:
        """Sorted names of the ops used by live nodes."""
        return tuple(sorted({n.op for n, lv in zip(self.nodes, self.live) if lv and not n.is_leaf}))

    @classmethod
    def _trusted(
        cls,
        space: str,
        nodes: tuple[Node, ...],
        eps: float = DEFAULT_EPS,
        momentum: float = DEFAULT_MOMENTUM,
        groups: int = DEFAULT_GROUPS,
    ) -> Graph:
        """Build without validation: only for nodes valid by construction (generate, prune)."""
        g = object.__new__(cls)
        object.__setattr__(g, "space", space)
        object.__setattr__(g, "nodes", nodes)
        object.__setattr__(g, "eps", eps)
        object.__setattr__(g, "momentum", momentum)
        object.__setattr__(g, "groups", groups)
        return g

    def pruned(self) -> Graph:
        """Same graph without dead nodes (indices renumbered; returns self when none)."""
        if all(self.live):
            return self
        remap: dict[int, int] = {}
        nodes: list[Node] = []
        for i, (n, lv) in enumerate(zip(self.nodes, self.live)):
            if lv:
                remap[i] = len(nodes)
                nodes.append(Node(n.op, tuple(remap[j] for j in n.inputs), n.value, n.name, n.axis))
        g = Graph._trusted(self.space, tuple(nodes), self.eps, self.momentum, self.groups)
        # What is already known carries over: these depend on each node's subtree alone, and
        # the key on the output node, which is always live.
        for name in _PER_NODE:
            if name in self.__dict__:
                g.__dict__[name] = tuple(v for v, lv in zip(self.__dict__[name], self.live) if lv)
        if "key" in self.__dict__:
            g.__dict__["key"] = self.__dict__["key"]
        return g

    def _replaced(self, index: int, node: Node) -> Graph:
        """The graph with ``nodes[index]`` replaced by ``node`` (trusted: its inputs come
        before ``index``). Per-node facts of the unchanged prefix are reused, so trying many
        mutations of one graph costs only the nodes from ``index`` on."""
        nodes = self.nodes[:index] + (node,) + self.nodes[index + 1 :]
        g = Graph._trusted(self.space, nodes, self.eps, self.momentum, self.groups)
        for name, fn in _PER_NODE.items():
            if name in self.__dict__:
                g.__dict__[name] = _per_node(fn, nodes[index:], self.__dict__[name][:index])
        return g

    # ------------------------------------------------------------------ identity
    @cached_property
    def node_hashes(self) -> tuple[str, ...]:
        """Structural hash of each node (commutative ops sort their inputs)."""
        return _per_node(_node_hash, self.nodes)

    @cached_property
    def key(self) -> str:
        """Stable structural hash (hex): same for graphs equal up to node order, dead nodes,
        duplicated sub-expressions and the order of commutative inputs."""
        head = self.space
        if self.space == NORMACT:
            head += f"|eps={self.eps!r}|momentum={self.momentum!r}|groups={self.groups}"
        return hashlib.blake2b(
            (head + "|" + self.node_hashes[-1]).encode(), digest_size=16
        ).hexdigest()

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``format``, ``space``, ``nodes``, normact ``options``)."""
        d: dict[str, Any] = {
            "format": FORMAT,
            "space": self.space,
            "nodes": [n.to_dict() for n in self.nodes],
        }
        if self.space == NORMACT:
            d["options"] = {"eps": self.eps, "momentum": self.momentum, "groups": self.groups}
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Graph:
        """Build and validate a graph from :meth:`to_dict` output (GrammarError naming the fault)."""
        if not isinstance(d, dict):
            raise GrammarError(f"a graph must be a JSON object, got {type(d).__name__}")
        # "provenance" is the header a JSON export carries (grammar.export.with_provenance)
        unknown = set(d) - {"format", "space", "nodes", "options", "provenance"}
        if unknown:
            raise GrammarError(f"unknown graph field(s): {', '.join(sorted(map(str, unknown)))}")
        fmt = d.get("format", FORMAT)
        if fmt != FORMAT:
            raise GrammarError(f"unsupported graph format {fmt!r}; expected {FORMAT!r}")
        space = d.get("space")
        if space not in KINDS:
            raise GrammarError(f"field 'space' must be one of {', '.join(KINDS)}, got {space!r}")
        raw = d.get("nodes")
        if not isinstance(raw, list) or not raw:
            raise GrammarError("field 'nodes' must be a non-empty list")
        if len(raw) > MAX_GRAPH_NODES:
            raise GrammarError(
                f"field 'nodes' may hold at most {MAX_GRAPH_NODES} nodes, got {len(raw)}"
            )
        nodes = []
        for i, nd in enumerate(raw):
            if not isinstance(nd, dict):
                raise GrammarError(f"node {i}: must be an object, got {type(nd).__name__}")
            bad = set(nd) - {"op", "inputs", "value", "name", "axis"}
            if bad:
                raise GrammarError(f"node {i}: unknown field(s) {', '.join(sorted(map(str, bad)))}")
            op = nd.get("op")
            if not isinstance(op, str):
                raise GrammarError(f"node {i}: field 'op' must be a string, got {op!r}")
            inputs = nd.get("inputs", [])
            if not isinstance(inputs, list):
                raise GrammarError(f"node {i}: field 'inputs' must be a list of node indices")
            value = nd.get("value")
            if value is not None:
                value = _to_float(value, f"node {i}: field 'value'")
            name = nd.get("name")
            if name is not None and not isinstance(name, str):
                raise GrammarError(f"node {i}: field 'name' must be a string, got {name!r}")
            axis = nd.get("axis")
            if axis is not None and not isinstance(axis, str):
                raise GrammarError(f"node {i}: field 'axis' must be a string, got {axis!r}")
            nodes.append(Node(op, tuple(inputs), value, name, axis))
        opts = d.get("options", {})
        if not isinstance(opts, dict):
            raise GrammarError("field 'options' must be an object")
        bad = set(opts) - {"eps", "momentum", "groups"}
        if bad:
            raise GrammarError(f"unknown option(s): {', '.join(sorted(map(str, bad)))}")
        kw: dict[str, Any] = {}
        for k in ("eps", "momentum"):
            if k in opts:
                kw[k] = _to_float(opts[k], f"option {k!r}")
        if "groups" in opts:
            kw["groups"] = opts["groups"]
        return cls(space, tuple(nodes), **kw)

    @cached_property
    def text(self) -> str:
        """The graph's text form (:func:`grammar.to_text`), parseable back to the same key."""
        from .parser import to_text

        return to_text(self)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"Graph({self.space!r}, {self.text!r})"
