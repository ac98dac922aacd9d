"""JAX export: a standalone function over ``jax.numpy`` (same signature as the NumPy export)."""

from __future__ import annotations

from ..codegen import array_source
from ..graph import Graph


def export_jax(graph: Graph, name: str) -> str:
    """Standalone JAX function source named ``name`` (GrammarError for an op without jax form)."""
    return array_source(graph, name, "jax")
