"""Source generation shared by :func:`grammar.compile.compile_graph` and the exports.

The torch source is a standalone module (imports only ``math`` and ``torch``): the helpers a
graph needs are copied from :mod:`grammar._rt_torch`, then one ``nn.Module`` class whose
``forward`` is straight-line code, one line per live node.  ``compile_graph`` executes exactly
this source, so the PyTorch export and the compiled module cannot drift apart.

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
from .ops import ACTIVATION, OPS
from .parser import to_text

_BUF = {"mean": "running_mean", "var": "running_var", "std": "running_var",
        "sqmean": "running_sqmean", "rms": "running_sqmean"}
_BUF_INIT = {"running_mean": 0.0, "running_var": 1.0, "running_sqmean": 1.0}


def check_name(name: str) -> str:
    """Validate a class / function name for generated code (GrammarError if not an identifier)."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or len(name) > 100:
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
    funcs = {n: f for n, f in vars(module).items() if n.startswith("_") and inspect.isfunction(f)
             and f.__module__ == module.__name__}
    srcs = {n: inspect.getsource(f) for n, f in funcs.items()}
    needed: list[str] = []
    todo = [body]
    while todo:
        text = todo.pop()
        for n in funcs:
            if n not in needed and re.search(r"\b" + re.escape(n) + r"\(", text):
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
    for i, n in enumerate(graph.nodes):
        if not graph.live[i] or n.is_leaf:
            continue
        spec = OPS[n.op]
        args = [names[j] for j in n.inputs]
        if spec.aggregate:
            a = args[0]
            if not full[n.inputs[0]]:
                a = f"{a}.expand_as(x)" if target == "torch" else f"{'np' if target == 'numpy' else 'jnp'}.broadcast_to({a}, x.shape)"
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
            expr = _torch_fast_path(graph, n, args) if target == "torch" else None
            expr = expr or tmpl.format(*args)
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


def _torch_fast_path(graph: Graph, node, args: list[str]) -> str | None:
    """A fused PyTorch kernel for a node whose pattern has one, else None.

    ``max(a, 0)`` is ``torch.relu(a)`` and ``a * sigmoid(a)`` is SiLU: the same function,
    one kernel instead of two or three in the forward and the backward pass (the
    benchmark's profile showed ``torch.maximum``'s tie handling dominating ReLU's cost).
    """
    nodes = graph.nodes
    if node.op == "max":
        for k, j in enumerate(node.inputs):
            if nodes[j].op == "const" and nodes[j].value == 0:
                return f"torch.relu({args[1 - k]})"
    if node.op == "mul":
        a, b = node.inputs
        for k, (u, v) in enumerate(((a, b), (b, a))):
            if nodes[v].op == "sigmoid" and nodes[v].inputs == (u,):
                return f"torch.nn.functional.silu({args[k]})"
    return None


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
            names[i] = attrs[n.name]  # type: ignore[index]
        elif n.op == "const":
            names[i] = const(i, float(n.value))
    return names


def torch_source(graph: Graph, name: str) -> str:
    """Standalone PyTorch module source for ``graph`` with class ``name``."""
    check_name(name)
    g = graph.pruned()
    text = to_text(g)
    attrs = param_attrs(g)
    names = _leaf_names(g, attrs, lambda i, value: f"c{i}")
    pre = [
        f"c{i} = x.new_full((), {float(n.value)!r})"
        for i, n in enumerate(g.nodes)
        if n.op == "const"
    ]
    body = _expr_lines(g, "torch", names)
    out = names[len(g.nodes) - 1]
    if not full_shape(g)[-1]:
        out = f"{out}.expand_as(x)"
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
        for p, a in attrs.items():
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
            cls.append(f"        self.{p} = nn.Parameter(torch.full((num_features,), {param_init(g.space, p)!r}))")
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
            cls.append(f"        self.register_buffer({b!r}, torch.full((num_features,), {_BUF_INIT[b.split('_')[0] + '_' + b.split('_')[1]]!r}))")
        cls.append("\n    def forward(self, x):")
        cls.append(ind + "shape = x.shape")
        cls.append(ind + "x = _as_4d(x)")
        cls.append(ind + "dtype = x.dtype")
        for p in affine:
            cls.append(ind + f"{p} = self.{p}.to(dtype).view(1, -1, 1, 1)")
        cls.append(ind + "if not self.apply_act:")
        plain = "x * weight + bias" if len(affine) == 2 else ("x * weight" if affine == ["weight"] else
                                                              ("x + bias" if affine == ["bias"] else "x"))
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
        lines.append(f"    {', '.join(attrs.values()) or 'no parameters'} (default: init values).  running: {{buffer: (C,) array}}")
        lines.append(f"    for {', '.join(sorted(set(bufs.values()))) or 'no buffers'}; when given, batch statistics are read from it")
        lines.append('    (eval mode), otherwise they come from the batch (training mode, no update)."""')
        lines.append(ind + f"shape = {xp}.shape(x)")
        lines.append(ind + f"x = _as_4d({xp}.asarray(x))")
        lines.append(ind + f"eps = {g.eps!r}")
        lines.append(ind + f"groups = _resolve_groups(x.shape[1], {g.groups})")
        lines.append(ind + "params = params or {}")
        for p, a in attrs.items():
            lines.append(ind + f"{a} = {xp}.asarray(params.get({a!r}, {xp}.full((x.shape[1],), {param_init(g.space, p)!r}))).reshape(1, -1, 1, 1)")
    lines += [ind + ln for ln in body]
    if not full_shape(g)[-1]:
        out = f"{xp}.broadcast_to({out}, x.shape)"
    lines.append(ind + (f"return {out}" if g.space == ACTIVATION else f"return {xp}.reshape({out}, shape)"))
    fn = "\n".join(lines) + "\n"
    if target == "numpy":
        helpers = helper_source(_rt_numpy, fn)
        head = f'"""{name}: generated by layerforge from `{text}`. Needs only numpy."""\n\nimport math\n\nimport numpy as np\n\n\n'
    else:
        helpers = _JAX_HELPERS.strip() + "\n\n\n" + inspect.getsource(_rt_numpy._resolve_groups) if g.space != ACTIVATION else ""
        head = (f'"""{name}: generated by layerforge from `{text}`. Needs jax."""\n\n'
                "import jax\nimport jax.numpy as jnp\nimport jax.scipy.special\n\n\n")
    return head + (helpers + "\n\n" if helpers else "") + fn
