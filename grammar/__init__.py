"""layerforge grammar: search spaces, a safe parser, dedupe, compile to PyTorch, export.

Public API (see each module's docstring):

* graphs: :class:`Graph`, :class:`Node` (``graph.py``); spaces: :class:`Space`,
  :func:`make_space`, :func:`check_static` (``space.py``); ops: :data:`OPS`, :class:`Op`,
  :func:`get_op`, :func:`list_ops` (``ops.py``)
* text: :func:`parse`, :func:`to_text` (``parser.py``)
* search: :func:`random_graph`, :func:`mutate` (``generate.py``)
* dedupe: :func:`fingerprint`, :func:`canonical_key` (``fingerprint.py``)
* torch: :func:`compile_graph` (alias ``compile``), :func:`layer_factory` (``compile.py``)
* code: :func:`export` (``export/``); library: :mod:`grammar.builtins`

``grammar`` never imports ``workers``, ``search``, ``storage`` or ``api``.
"""

from . import builtins
from .builtins import BUILTINS, baseline, get_builtin, list_builtins
from .compile import LayerFactory, compile_graph, layer_factory
from .errors import GrammarError, ParseError
from .export import FORMATS, export, export_warning, formula_latex, with_provenance
from .fingerprint import canonical_key, evaluate_numpy, fingerprint, to_sympy
from .generate import mutate, random_graph
from .graph import Graph, Node
from .ops import OPS, Op, get_op, list_ops
from .parser import parse, to_text
from .space import PRESETS, Space, check_static, make_space, passes_static, uses_statistic

compile = compile_graph

__all__ = [
    "BUILTINS",
    "FORMATS",
    "OPS",
    "PRESETS",
    "GrammarError",
    "Graph",
    "LayerFactory",
    "Node",
    "Op",
    "ParseError",
    "Space",
    "baseline",
    "builtins",
    "canonical_key",
    "check_static",
    "compile",
    "compile_graph",
    "evaluate_numpy",
    "export",
    "export_warning",
    "fingerprint",
    "formula_latex",
    "get_builtin",
    "get_op",
    "layer_factory",
    "list_builtins",
    "list_ops",
    "make_space",
    "mutate",
    "parse",
    "passes_static",
    "uses_statistic",
    "random_graph",
    "to_sympy",
    "to_text",
    "with_provenance",
]
