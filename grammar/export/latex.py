"""LaTeX export.  Activation: ``sympy.latex`` of the SymPy form (SymPy is the hub).
Norm-act: the op templates, with ``\\gamma`` / ``\\beta`` for weight / bias and ``v_0``, ``v_1``."""

from __future__ import annotations

from ..graph import Graph
from ..ops import OPS

_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 5, "neg": 3}
_PARAM = {"weight": "\\gamma", "bias": "\\beta", "v0": "v_{0}", "v1": "v_{1}"}


def _template_latex(graph: Graph) -> str:
    memo: dict[int, tuple[str, int]] = {}
    for i, n in enumerate(graph.nodes):
        if not graph.live[i]:
            continue
        if n.op == "x":
            memo[i] = ("x", 9)
        elif n.op == "param":
            memo[i] = (
                _PARAM.get(
                    str(n.name), "\\" + str(n.name) if str(n.name) == "beta" else str(n.name)
                ),
                9,
            )
        elif n.op == "const":
            v = float(n.value)  # type: ignore[arg-type]  # a const node always has a value (validated)
            s = repr(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
            memo[i] = (s, 3 if v < 0 else 9)
        else:
            spec = OPS[n.op]
            args = [memo[j] for j in n.inputs]
            p = _PREC.get(n.op, 9)
            strs = []
            for k, (s, sp) in enumerate(args):
                need = p + (1 if (k == 1 and n.op in ("sub", "add", "mul")) else 0)
                if n.op in ("div",) or (p == 9):
                    strs.append(s)
                else:
                    strs.append(s if sp >= need else f"\\left({s}\\right)")
            memo[i] = (spec.latex.format(*strs, axis="\\mathrm{" + str(n.axis) + "}"), p)
    return memo[len(graph.nodes) - 1][0]


def export_latex(graph: Graph) -> str:
    """LaTeX formula of ``graph`` (no surrounding $)."""
    if graph.space == "activation":
        import sympy

        from ..fingerprint import to_sympy

        return sympy.latex(to_sympy(graph))
    return _template_latex(graph)
