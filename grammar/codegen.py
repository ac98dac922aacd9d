"""Source generation shared by :func:`grammar.compile.compile_graph` and the exports.

The torch source is a standalone module (imports only ``math`` and ``torch``): the helpers a
graph needs are copied from :mod:`grammar._rt_torch`, then one ``nn.Module`` class whose
``forward`` is straight-line code, one line per live node (or per fused pattern).
``compile_graph`` executes exactly this source, so the PyTorch export and the compiled module
cannot drift apart.

Fast paths (torch only, found by pattern on the graph so that evolved candidates get them too,
each computing the grammar's value): ``(X - mean(X, axis)) / std(X, axis) [* p [+ q]]`` becomes
one ``F.batch_norm`` / ``F.group_norm`` (:func:`normalization_fusions`), a division by a
provably positive denominator drops the protected division's sign handling
(:func:`positive_floors`), and ``max`` / ``min``, ``a * p + q``, ``a * sigmoid(b * a)`` use the
lean helpers of :mod:`grammar._rt_torch` (see :func:`_torch_fast_path`).

Naming (so that timm state_dicts load): per-channel ``weight`` / ``bias``; ``v1`` is called
``v`` when ``v0`` is unused (timm's EvoNorm ``v``); batch statistics keep buffers
``running_mean`` (mean), ``running_var`` (var, std) or ``running_sqmean`` (sqmean, rms),
suffixed ``_1``, ``_2`` ... when a graph has several of one kind.
"""

from __future__ import annotations

import inspect
import keyword
import re
from collections.abc import Callable

from . import _rt_numpy, _rt_torch
from .errors import GrammarError
from .graph import Graph, param_init
from .ops import ACTIVATION, NORMACT, OPS
from .parser import to_text

_BUF = {
    "mean": "running_mean",
    "var": "running_var",
    "std": "running_var",
    "sqmean": "running_sqmean",
    "rms": "running_sqmean",
}
_BUF_INIT = {"running_mean": 0.0, "running_var": 1.0, "running_sqmean": 1.0}


def check_name(name: str) -> str:
    """Validate a class / function name for generated code (GrammarError if not an identifier)."""
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or keyword.iskeyword(name)
        or len(name) > 100
    ):
        raise GrammarError(f"name {name!r} is not a valid Python identifier")
    return name


def param_attrs(graph: Graph) -> dict[str, str]:
    """Map graph parameter names to module attribute names."""
    names = graph.params
    out = {}
    for p in names:
        out[p] = "v" if p == "v1" and "v0" not in names else p
    return out


def buffer_names(graph: Graph) -> dict[int, str]:
    """Map each live batch-statistic node index to its running buffer name."""
    out: dict[int, str] = {}
    count: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        if graph.live[i] and n.axis == "batch":
            base = _BUF[n.op]
            k = count.get(base, 0)
            count[base] = k + 1
            out[i] = base if k == 0 else f"{base}_{k}"
    return out


def full_shape(graph: Graph) -> list[bool]:
    """For each node, whether its value has the full input shape (else it broadcasts)."""
    full: list[bool] = []
    for n in graph.nodes:
        if n.op == "x":
            full.append(True)
        elif n.is_leaf or OPS[n.op].aggregate:
            full.append(False)
        else:
            full.append(any(full[j] for j in n.inputs))
    return full


def helper_source(module, body: str) -> str:
    """Source of the helpers of ``module`` that ``body`` calls (transitively)."""
    funcs = {
        n: f
        for n, f in vars(module).items()
        if n.startswith("_")
        and (inspect.isfunction(f) or inspect.isclass(f))
        and f.__module__ == module.__name__
    }
    srcs = {n: inspect.getsource(f) for n, f in funcs.items()}
    needed: list[str] = []
    todo = [body]
    while todo:
        text = todo.pop()
        for n in funcs:
            if n not in needed and re.search(r"\b" + re.escape(n) + r"[(.]", text):
                needed.append(n)
                todo.append(srcs[n])
    order = list(funcs)
    extra = ""
    if module is _rt_numpy and "_erf" in needed:
        extra = "_erf_vec = np.vectorize(math.erf, otypes=[float])\n\n\n"
    return extra + "\n\n".join(srcs[n] for n in sorted(needed, key=order.index))


def _expr_lines(graph: Graph, target: str, names: dict[int, str]) -> list[str]:
    """One assignment per live op node, for target 'torch', 'numpy' or 'jax'."""
    full = full_shape(graph)
    lines = []
    bufs = buffer_names(graph)
    fused, absorbed = normalization_fusions(graph) if target == "torch" else ({}, set())
    floors = positive_floors(graph) if target == "torch" else []
    users = _consumers(graph)
    for i, n in enumerate(graph.nodes):
        if not graph.live[i] or n.is_leaf or i in absorbed:
            continue
        spec = OPS[n.op]
        args = [] if i in fused else [names[j] for j in n.inputs]
        if i in fused:
            expr = _normalization_call(fused[i], names, bufs)
        elif spec.aggregate:
            a = args[0]
            if not full[n.inputs[0]]:
                a = (
                    f"{a}.expand_as(x)"
                    if target == "torch"
                    else f"{'np' if target == 'numpy' else 'jnp'}.broadcast_to({a}, x.shape)"
                )
            if n.axis == "batch" and target == "torch":
                expr = f"_batch_stat({a}, {n.op!r}, self.{bufs[i]}, self.training, self.momentum, self.eps)"
            elif n.axis == "batch":
                expr = f"_stat({a}, {n.op!r}, 'batch', groups, eps, None if running is None else running[{bufs[i]!r}])"
            elif target == "torch":
                expr = f"_stat({a}, {n.op!r}, {n.axis!r}, self.groups, self.eps)"
            else:
                expr = f"_stat({a}, {n.op!r}, {n.axis!r}, groups, eps)"
        else:
            tmpl = {"torch": spec.torch_src, "numpy": spec.numpy_src, "jax": spec.jax_src}[target]
            if tmpl is None:
                raise GrammarError(
                    f"op {n.op!r} has no {target} translation; rewrite the expression without "
                    f"{n.op!r} or add a {target} template for it in grammar/ops.py"
                )
            fast = _torch_fast_path(graph, i, names, floors, users) if target == "torch" else None
            expr = fast or tmpl.format(*args)
        names[i] = f"t{i}"
        lines.append(f"t{i} = {expr}")
    if target == "torch":
        lines = _drop_unused(lines, names.get(graph.output, ""))
    return lines


def _drop_unused(lines: list[str], output: str) -> list[str]:
    """Remove assignments nothing reads any more (inputs of a fused fast path)."""
    needed, kept = {output}, []
    for line in reversed(lines):
        target, expr = line.split(" = ", 1)
        if target in needed:
            kept.append(line)
            needed.update(re.findall(r"\bt\d+\b", expr))
    return kept[::-1]


def _torch_fast_path(
    graph: Graph, index: int, names: dict[int, str], floors: list, users: list[list[int]]
) -> str | None:
    """A cheaper PyTorch form of node ``index`` when its pattern has one, else None.

    Every form computes the grammar's value; the inner nodes of a fused pattern are only
    fused away when nothing else reads them (``_drop_unused`` then removes their lines).

    * ``max(a, 0)`` is ``torch.relu(a)``; other ``max`` / ``min`` use ``_maximum`` /
      ``_minimum`` (``torch.maximum``'s backward, ``where`` + ``masked_fill``, dominated its cost);
    * ``a * sigmoid(a)`` is SiLU and ``a * sigmoid(b * a)`` is ``_sigmoid_gate(a, b)``
      (``sigmoid_mul`` alike);
    * ``a * p + q`` (``a`` full-size) is ``_affine(a, p, q)``, one ``addcmul``;
    * ``div`` by a denominator that :func:`positive_floors` proves non-negative skips the
      sign test of the protected division, and its clamp too when the floor is clearly above it.
    """
    nodes, full = graph.nodes, full_shape(graph)
    node = nodes[index]
    args = [names[j] for j in node.inputs]

    def exclusive(j: int) -> bool:  # read by one node only (the one being fused into)
        return j != graph.output and len(users[j]) == 1

    if node.op in ("max", "min"):
        for k, j in enumerate(node.inputs):
            if node.op == "max" and nodes[j].op == "const" and nodes[j].value == 0:
                return f"torch.relu({args[1 - k]})"
        return f"_{'maximum' if node.op == 'max' else 'minimum'}({args[0]}, {args[1]})"
    if node.op in ("mul", "sigmoid_mul"):
        # (value, sigmoid argument, whether the sigmoid is computed for this node only)
        pairs = [(node.inputs[1], node.inputs[0], True)]
        if node.op == "mul":
            pairs = [
                (a, nodes[b].inputs[0], exclusive(b))
                for a, b in (node.inputs, node.inputs[::-1])
                if nodes[b].op == "sigmoid"
            ]
        for value, arg, own_sigmoid in pairs:
            if arg == value:
                return f"torch.nn.functional.silu({names[value]})"
            if (
                own_sigmoid
                and nodes[arg].op == "mul"
                and value in nodes[arg].inputs
                and full[value]
                and exclusive(arg)
            ):
                beta = [j for j in nodes[arg].inputs if j != value] or [value]
                return f"_sigmoid_gate({names[value]}, {names[beta[0]]})"
    if node.op == "add":
        for prod, shift in (node.inputs, node.inputs[::-1]):
            if nodes[prod].op == "mul" and exclusive(prod) and prod != shift:
                a, scale = nodes[prod].inputs
                if not full[a]:
                    a, scale = scale, a
                if full[a]:
                    return f"_affine({names[a]}, {names[scale]}, {names[shift]})"
    if node.op == "div" and floors[node.inputs[1]] is not None:
        const_floor, eps_coeff = floors[node.inputs[1]]
        floor = repr(const_floor)
        if eps_coeff > 0:
            floor = f"{eps_coeff!r} * math.sqrt(self.eps)" + (
                f" + {floor}" if const_floor > 0 else ""
            )
        return f"_div_positive({args[0]}, {args[1]}, {floor})"
    return None


#: Elementwise ops whose value is >= 0 for every input (in floating point too).
_NONNEGATIVE_OPS = frozenset(
    (
        "abs",
        "square",
        "relu",
        "exp",
        "sigmoid",
        "softplus",
        "gauss",
        "laplace_diff",
        "gauss_diff",
        "hard_sigmoid",
        "var",
        "sqmean",
    )
)


def positive_floors(graph: Graph) -> list[tuple[float, float] | None]:
    """For each node, a proven lower bound ``(c, k)``: the value is >= ``c + k * sqrt(eps)``
    >= 0 everywhere (``eps`` the layer's, so std and rms give ``(0, 1)``), or None when the
    node may be negative.

    Conservative interval reasoning on the graph: non-negative ops, constants, ``std`` /
    ``rms``, ``cosh >= 1``; sums and products of bounded nodes; ``max`` with one bounded
    input; ``min`` and ``mean`` of bounded inputs (a batch mean only >= 0: in eval mode it is
    the running mean, which starts at 0).  Used to drop the protected division's sign
    handling where it provably cannot trigger (e.g. EvoNorm's ``x / max(std(x, batch), ...)``).
    """
    floors: list[tuple[float, float] | None] = []
    for n in graph.nodes:
        ins = [floors[j] for j in n.inputs]
        floor: tuple[float, float] | None = None
        if n.op == "const":
            value = float(n.value or 0.0)
            floor = (value, 0.0) if value >= 0 else None
        elif n.op in ("std", "rms"):
            floor = (0.0, 1.0)
        elif n.op in _NONNEGATIVE_OPS:
            floor = (0.0, 0.0)
        elif n.op == "cosh":
            floor = (1.0, 0.0)
        elif (
            n.op == "mean" and ins[0] is not None
        ):  # eval-mode batch mean: the running mean, init 0
            floor = (0.0, 0.0) if n.axis == "batch" else ins[0]
        elif n.op == "sqrt" and ins[0] is not None or n.op == "sigmoid_mul" and ins[1] is not None:
            floor = (0.0, 0.0)
        elif n.op in ("add", "mul", "min", "div") and all(f is not None for f in ins[:2]):
            (c1, k1), (c2, k2) = (f for f in ins[:2] if f is not None)
            if n.op == "add":
                floor = (c1 + c2, k1 + k2)
            elif n.op == "mul":  # (c1 + k1 s)(c2 + k2 s) >= c1 c2 + (c1 k2 + k1 c2) s
                floor = (c1 * c2, c1 * k2 + k1 * c2)
            elif n.op == "min":
                floor = (min(c1, c2), min(k1, k2))
            else:
                floor = (0.0, 0.0)
        elif n.op == "max":
            bounded = [f for f in ins if f is not None]
            if bounded:  # either bound holds; keep the larger at the graph's eps
                floor = max(bounded, key=lambda f: f[0] + f[1] * graph.eps**0.5)
        floors.append(floor)
    return floors


def _consumers(graph: Graph) -> list[list[int]]:
    """For each node, the live nodes that read it (once per reading node)."""
    out: list[list[int]] = [[] for _ in graph.nodes]
    for i, n in enumerate(graph.nodes):
        if graph.live[i]:
            for j in dict.fromkeys(n.inputs):
                out[j].append(i)
    return out


def normalization_fusions(graph: Graph) -> tuple[dict[int, dict], set[int]]:
    """Find ``(X - mean(X, axis)) / std(X, axis)``, optionally followed by ``* p`` and then
    ``+ q`` (per-channel parameters), whose inner nodes nothing else reads.

    Returns ``{root: info}`` (the node whose value the fused call computes, ``info`` holding
    the indices of X, the mean and std nodes, the axis and the weight / bias leaves or None)
    and the set of inner nodes the fused call absorbs.  The generated code computes such a
    region with one ``F.batch_norm`` / ``F.group_norm`` (see ``_batch_norm`` and
    ``_group_norm`` in :mod:`grammar._rt_torch`), which matches the grammar's statistics.
    """
    if graph.space != NORMACT:
        return {}, set()
    nodes, full = graph.nodes, full_shape(graph)
    users = _consumers(graph)
    output = graph.output

    def only_user(i: int) -> int | None:
        return users[i][0] if len(users[i]) == 1 and i != output else None

    fused: dict[int, dict] = {}
    absorbed: set[int] = set()
    for i, n in enumerate(nodes):
        if not graph.live[i] or n.op != "div":
            continue
        centred, std = n.inputs
        if nodes[centred].op != "sub" or nodes[std].op != "std":
            continue
        source, mean = nodes[centred].inputs
        if (
            nodes[mean].op != "mean"
            or nodes[mean].inputs != (source,)
            or nodes[std].inputs != (source,)
            or nodes[mean].axis != nodes[std].axis
            or not full[source]
            or source == mean
        ):
            continue
        if only_user(mean) != centred or only_user(centred) != i or only_user(std) != i:
            continue
        root, inner = i, {mean, centred, std}
        weight = bias = None
        user = only_user(root)
        if user is not None and nodes[user].op == "mul":
            other = [j for j in nodes[user].inputs if j != root]
            if len(other) == 1 and nodes[other[0]].op == "param":
                inner.add(root)
                root, weight = user, other[0]
                user = only_user(root)
        # (a bias without a weight stays a separate add: torch's double backward of batch_norm /
        # group_norm is wrong for weight=None with a bias, as of torch 2.13)
        if weight is not None and user is not None and nodes[user].op == "add":
            other = [j for j in nodes[user].inputs if j != root]
            if len(other) == 1 and nodes[other[0]].op == "param":
                inner.add(root)
                root, bias = user, other[0]
        fused[root] = {
            "source": source,
            "mean": mean,
            "std": std,
            "axis": nodes[std].axis,
            "weight": weight,
            "bias": bias,
        }
        absorbed |= inner
    return fused, absorbed


def _normalization_call(info: dict, names: dict[int, str], bufs: dict[int, str]) -> str:
    """The ``_batch_norm`` / ``_group_norm`` call computing one fused normalisation region."""
    weight = "None" if info["weight"] is None else f"{names[info['weight']]}.view(-1)"
    bias = "None" if info["bias"] is None else f"{names[info['bias']]}.view(-1)"
    source = names[info["source"]]
    if info["axis"] == "batch":
        return (
            f"_batch_norm({source}, self.{bufs[info['mean']]}, self.{bufs[info['std']]}, {weight}, {bias}, "
            "self.training, self.momentum, self.eps)"
        )
    return f"_group_norm({source}, {info['axis']!r}, self.groups, {weight}, {bias}, self.eps)"


def _leaf_names(
    g: Graph, attrs: dict[str, str], const: Callable[[int, float], str]
) -> dict[int, str]:
    """Names of the graph's leaves: ``x``, each parameter's attribute, and ``const(i, value)``
    for the constant at node ``i``."""
    names: dict[int, str] = {}
    for i, n in enumerate(g.nodes):
        if n.op == "x":
            names[i] = "x"
        elif n.op == "param":
            names[i] = attrs[str(n.name)]
        elif n.op == "const":
            names[i] = const(i, float(n.value or 0.0))
    return names


def torch_source(graph: Graph, name: str) -> str:
    """Standalone PyTorch module source for ``graph`` with class ``name``."""
    check_name(name)
    g = graph.pruned()
    text = to_text(g)
    attrs = param_attrs(g)
    names = _leaf_names(g, attrs, lambda i, value: f"c{i}")
    pre = [
        f"c{i} = x.new_full((), {float(n.value or 0.0)!r})"
        for i, n in enumerate(g.nodes)
        if n.op == "const"
    ]
    body = _expr_lines(g, "torch", names)
    out = names[len(g.nodes) - 1]
    if not full_shape(g)[-1]:
        out = f"{out}.expand_as(x)"
    used = "\n".join(body + [out])  # constants a fast path made unnecessary are not built
    pre = [ln for ln in pre if re.search(r"\b" + ln.split(" = ", 1)[0] + r"\b", used)]
    ind = "        "
    cls: list[str] = []
    if g.space == ACTIVATION:
        cls.append(f"class {name}(nn.Module):")
        cls.append(f'    """Activation generated by layerforge: {text}"""\n')
        cls.append(f"    expression = {text!r}\n")
        cls.append("    def __init__(self, num_features=None, **kwargs):")
        cls.append("        super().__init__()")
        for p, a in attrs.items():
            cls.append(f"        self.{a} = nn.Parameter(torch.tensor({param_init(g.space, p)!r}))")
        cls.append("\n    def forward(self, x):")
        cls.append(ind + "dtype = x.dtype")
        for a in attrs.values():
            cls.append(ind + f"{a} = self.{a}.to(dtype)")
        cls += [ind + ln for ln in pre + body]
        cls.append(ind + f"return {out}")
    else:
        bufs = buffer_names(g)
        affine = [p for p in ("weight", "bias") if p in attrs]
        act_params = [p for p in attrs if p not in affine]
        cls.append(f"class {name}(nn.Module):")
        cls.append(f'    """Norm-act layer generated by layerforge: {text}\n')
        cls.append("    Input (N, C, H, W), (N, C, L) or (N, C).  apply_act=False keeps only the")
        cls.append('    per-channel affine (x * weight + bias), as timm\'s EvoNorm layers do."""\n')
        cls.append(f"    expression = {text!r}\n")
        cls.append(
            f"    def __init__(self, num_features, apply_act=True, eps={g.eps!r}, momentum={g.momentum!r}, "
            f"groups={g.groups}, group_size=None, **kwargs):"
        )
        cls.append("        super().__init__()")
        cls.append("        self.num_features = num_features")
        cls.append("        self.apply_act = apply_act")
        cls.append("        self.eps = eps")
        cls.append("        self.momentum = momentum")
        cls.append("        self.groups = _resolve_groups(num_features, groups, group_size)")
        for p in affine:
            cls.append(
                f"        self.{p} = nn.Parameter(torch.full((num_features,), {param_init(g.space, p)!r}))"
            )
        if act_params:
            cls.append("        if apply_act:")
            for p in act_params:
                cls.append(
                    f"            self.{attrs[p]} = nn.Parameter(torch.full((num_features,), {param_init(g.space, p)!r}))"
                )
            cls.append("        else:")
            for p in act_params:
                cls.append(f"            self.{attrs[p]} = None")
        for b in bufs.values():
            cls.append(
                f"        self.register_buffer({b!r}, torch.full((num_features,), {_BUF_INIT[b.split('_')[0] + '_' + b.split('_')[1]]!r}))"
            )
        cls.append("\n    def forward(self, x):")
        cls.append(ind + "shape = x.shape")
        cls.append(ind + "x = _as_4d(x)")
        cls.append(ind + "dtype = x.dtype")
        for p in affine:
            cls.append(ind + f"{p} = self.{p}.to(dtype).view(1, -1, 1, 1)")
        cls.append(ind + "if not self.apply_act:")
        plain = (
            "x * weight + bias"
            if len(affine) == 2
            else (
                "x * weight"
                if affine == ["weight"]
                else ("x + bias" if affine == ["bias"] else "x")
            )
        )
        cls.append(ind + f"    return ({plain}).reshape(shape)")
        for p in act_params:
            cls.append(ind + f"{attrs[p]} = self.{attrs[p]}.to(dtype).view(1, -1, 1, 1)")
        cls += [ind + ln for ln in pre + body]
        cls.append(ind + f"return {out}.reshape(shape)")
    cls_src = "\n".join(cls) + "\n"
    helpers = helper_source(_rt_torch, cls_src)
    head = (
        f'"""{name}: generated by layerforge from `{text}` ({g.space}).\n\n'
        'Standalone: needs only torch."""\n\n'
        "import math\n\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\n"
    )
    return head + (helpers + "\n\n" if helpers else "") + cls_src


_JAX_HELPERS = '''
def _moment(a, kind, dims, eps):
    """One statistic of ``a`` over ``dims``, keepdims."""
    if kind == "mean":
        return a.mean(axis=dims, keepdims=True)
    if kind in ("sqmean", "rms"):
        s = (a * a).mean(axis=dims, keepdims=True)
        return s if kind == "sqmean" else jnp.sqrt(s + eps)
    m = a.mean(axis=dims, keepdims=True)
    var = ((a - m) * (a - m)).mean(axis=dims, keepdims=True)
    return var if kind == "var" else jnp.sqrt(var + eps)


def _stat(a, kind, axis, groups, eps, running=None):
    """Statistic over batch/instance/group/layer axes; batch reads ``running`` when given."""
    n, c, h, w = a.shape
    if axis == "instance":
        return _moment(a, kind, (2, 3), eps)
    if axis == "layer":
        return _moment(a, kind, (1, 2, 3), eps)
    if axis == "group":
        out = _moment(a.reshape(n, groups, c // groups, h, w), kind, (2, 3, 4), eps)
        return jnp.repeat(out.reshape(n, groups, 1), c // groups, axis=2).reshape(n, c, 1, 1)
    if running is not None:
        val = jnp.asarray(running).reshape(1, -1, 1, 1)
        return jnp.sqrt(val + eps) if kind in ("std", "rms") else val
    return _moment(a, kind, (0, 2, 3), eps)


def _as_4d(x):
    """(N, C) -> (N, C, 1, 1); (N, C, L) -> (N, C, L, 1)."""
    if x.ndim == 2:
        return x.reshape(x.shape[0], x.shape[1], 1, 1)
    if x.ndim == 3:
        return x.reshape(x.shape[0], x.shape[1], x.shape[2], 1)
    return x
'''


def array_source(graph: Graph, name: str, target: str) -> str:
    """Standalone NumPy (``target='numpy'``) or JAX (``'jax'``) function source."""
    check_name(name)
    g = graph.pruned()
    text = to_text(g)
    attrs = param_attrs(g)
    bufs = buffer_names(g)
    xp = "np" if target == "numpy" else "jnp"
    names = _leaf_names(g, attrs, lambda i, value: repr(value))
    body = _expr_lines(g, target, names)
    out = names[len(g.nodes) - 1]
    ind = "    "
    lines = []
    if g.space == ACTIVATION:
        sig = ", ".join(["x"] + [f"{a}={param_init(g.space, p)!r}" for p, a in attrs.items()])
        lines.append(f"def {name}({sig}):")
        lines.append(f'    """Activation `{text}` (trainable scalars as keyword arguments)."""')
        lines.append(ind + f"x = {xp}.asarray(x)")
    else:
        lines.append(f"def {name}(x, params=None, running=None):")
        lines.append(f'    """Norm-act layer `{text}`.\n')
        lines.append("    x: (N, C, H, W), (N, C, L) or (N, C).  params: {name: (C,) array} for")
        lines.append(
            f"    {', '.join(attrs.values()) or 'no parameters'} (default: init values).  running: {{buffer: (C,) array}}"
        )
        lines.append(
            f"    for {', '.join(sorted(set(bufs.values()))) or 'no buffers'}; when given, batch statistics are read from it"
        )
        lines.append(
            '    (eval mode), otherwise they come from the batch (training mode, no update)."""'
        )
        lines.append(ind + f"shape = {xp}.shape(x)")
        lines.append(ind + f"x = _as_4d({xp}.asarray(x))")
        lines.append(ind + f"eps = {g.eps!r}")
        lines.append(ind + f"groups = _resolve_groups(x.shape[1], {g.groups})")
        lines.append(ind + "params = params or {}")
        for p, a in attrs.items():
            lines.append(
                ind
                + f"{a} = {xp}.asarray(params.get({a!r}, {xp}.full((x.shape[1],), {param_init(g.space, p)!r}))).reshape(1, -1, 1, 1)"
            )
    lines += [ind + ln for ln in body]
    if not full_shape(g)[-1]:
        out = f"{xp}.broadcast_to({out}, x.shape)"
    lines.append(
        ind + (f"return {out}" if g.space == ACTIVATION else f"return {xp}.reshape({out}, shape)")
    )
    fn = "\n".join(lines) + "\n"
    if target == "numpy":
        helpers = helper_source(_rt_numpy, fn)
        head = f'"""{name}: generated by layerforge from `{text}`. Needs only numpy."""\n\nimport math\n\nimport numpy as np\n\n\n'
    else:
        helpers = (
            _JAX_HELPERS.strip() + "\n\n\n" + inspect.getsource(_rt_numpy._resolve_groups)
            if g.space != ACTIVATION
            else ""
        )
        head = (
            f'"""{name}: generated by layerforge from `{text}`. Needs jax."""\n\n'
            "import jax\nimport jax.numpy as jnp\nimport jax.scipy.special\n\n\n"
        )
    return head + (helpers + "\n\n" if helpers else "") + fn
