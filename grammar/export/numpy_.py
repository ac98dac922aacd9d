"""NumPy export: a standalone function (imports only numpy and math).

Activation: ``name(x, beta=1.0, ...)``.  Norm-act: ``name(x, params=None, running=None)`` with
params / running buffers keyed like the PyTorch module's state_dict.
"""

from __future__ import annotations

from ..codegen import array_source
from ..graph import Graph


def export_numpy(graph: Graph, name: str) -> str:
    """Standalone NumPy function source named ``name``."""
    return array_source(graph, name, "numpy")
