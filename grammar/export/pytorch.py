"""PyTorch export: a standalone .py (imports only torch and math) with one nn.Module class.

Norm-act classes take timm's constructor shape ``(num_features, apply_act=True, eps=...,
**kwargs)`` and timm's parameter / buffer names (``weight``, ``bias``, ``v``,
``running_var``), so timm EvoNorm state_dicts load.  Same source as :func:`grammar.compile`.
"""

from __future__ import annotations

from ..codegen import torch_source
from ..graph import Graph


def export_pytorch(graph: Graph, name: str) -> str:
    """Standalone PyTorch module source with class ``name``."""
    return torch_source(graph, name)
