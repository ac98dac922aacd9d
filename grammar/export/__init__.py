"""Export a graph as code: one translator per target (SymPy is the hub for activation).

``export(graph, fmt, name=None)`` with fmt in :data:`FORMATS`; every export ends with a
newline. :func:`with_provenance` adds the header saying where an exported layer came from.
"""

from __future__ import annotations

import json

from ..errors import GrammarError
from ..graph import Graph
from ..ops import NORMACT
from . import jax_, latex, numpy_, pytorch, sympy_
from .provenance import export_warning, provenance_lines, with_provenance

FORMATS = ("pytorch", "numpy", "jax", "latex", "sympy", "json")


def export(graph: Graph, fmt: str, name: str | None = None) -> str:
    """Return ``graph`` as text in format ``fmt`` (see :data:`FORMATS`).

    ``name`` is the class (pytorch) or function (numpy, jax) name; defaults depend on the
    space.  Unknown formats and ops a target cannot express raise GrammarError.
    """
    if not isinstance(graph, Graph):
        raise GrammarError(f"expected a Graph, got {type(graph).__name__}")
    if fmt == "pytorch":
        default = "GeneratedNormAct" if graph.space == NORMACT else "GeneratedActivation"
        return pytorch.export_pytorch(graph, default if name is None else name)
    if fmt == "numpy":
        return numpy_.export_numpy(graph, "layer" if name is None else name)
    if fmt == "jax":
        return jax_.export_jax(graph, "layer" if name is None else name)
    if fmt == "latex":
        return latex.export_latex(graph) + "\n"
    if fmt == "sympy":
        return sympy_.export_sympy(graph, "expr" if name is None else name)
    if fmt == "json":
        return json.dumps(graph.to_dict(), indent=2) + "\n"
    raise GrammarError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")


def formula_latex(graph: Graph | dict) -> str | None:
    """The LaTeX formula of a graph (or of its ``to_dict`` form), or None when the graph
    cannot be read or has no LaTeX form. Never raises.

    What the detail view of a candidate shows. For activation graphs it goes through SymPy,
    which is slow (docs/measurements.md), so the evaluation workers compute it beside each
    result and the service reads it from there; the service computes it itself only for
    candidates no worker saw.
    """
    try:
        return latex.export_latex(graph if isinstance(graph, Graph) else Graph.from_dict(graph))
    except Exception:  # noqa: BLE001 - a graph the target cannot express: no formula
        return None


__all__ = [
    "FORMATS",
    "export",
    "export_warning",
    "formula_latex",
    "provenance_lines",
    "with_provenance",
]
