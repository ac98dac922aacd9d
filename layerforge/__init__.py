"""layerforge: discover activation functions and normalization-activation layers by evolution.

The notebook front door. Layers::

    import layerforge

    swish = layerforge.parse("x * sigmoid(beta * x)", "activation")   # a Graph (never eval'd)
    module = layerforge.compile(swish)                                 # a torch.nn.Module
    code = layerforge.export(layerforge.get_builtin("evonorm_b0"), "pytorch")
    layerforge.list_builtins("normact")                                # ['bn_relu', ...]

Campaigns, in this process (stored in a database, resumable) or on a server::

    result = layerforge.run("spec.yaml", database="runs.db", evaluator="local")
    result.front, result.best, result.candidates, result.export(format="pytorch")

    client = layerforge.Client("http://127.0.0.1:8000", token=None)
    campaign = client.create_campaign("spec.yaml")
    client.wait(campaign["id"])

Errors are in :mod:`layerforge.errors` (``SpecError``, ``ApiError`` and its subclasses,
``ServerUnreachable``). Every name here is resolved when first used (PEP 562), so
``import layerforge`` stays light and importing ``layerforge.grammar`` loads none of the
service. The packages install as one namespace: ``layerforge.grammar`` (layers as graphs),
``layerforge.workers`` (training and rejection), ``layerforge.search`` (the controller),
``layerforge.storage`` (the database), ``layerforge.api`` (the HTTP service) and
``layerforge.cli`` (the ``layerforge`` command).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerforge import errors as errors
    from layerforge.client import Client as Client
    from layerforge.grammar import Graph as Graph
    from layerforge.grammar import builtins as builtins
    from layerforge.grammar import compile_graph as compile
    from layerforge.grammar import export as export
    from layerforge.grammar import get_builtin as get_builtin
    from layerforge.grammar import list_builtins as list_builtins
    from layerforge.grammar import parse as parse
    from layerforge.runs import CampaignResult as CampaignResult
    from layerforge.runs import run as run
    from layerforge.specs import load_spec as load_spec
    from layerforge.specs import spec_schema as spec_schema
    from layerforge.specs import validate as validate_spec

# public name -> (module, attribute; None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "parse": ("layerforge.grammar", "parse"),
    "compile": ("layerforge.grammar", "compile_graph"),
    "export": ("layerforge.grammar", "export"),
    "builtins": ("layerforge.grammar.builtins", None),
    "get_builtin": ("layerforge.grammar", "get_builtin"),
    "list_builtins": ("layerforge.grammar", "list_builtins"),
    "Graph": ("layerforge.grammar", "Graph"),
    "run": ("layerforge.runs", "run"),
    "CampaignResult": ("layerforge.runs", "CampaignResult"),
    "Client": ("layerforge.client", "Client"),
    "errors": ("layerforge.errors", None),
    "load_spec": ("layerforge.specs", "load_spec"),
    "validate_spec": ("layerforge.specs", "validate"),
    "spec_schema": ("layerforge.specs", "spec_schema"),
}

__all__ = [
    "CampaignResult",
    "Client",
    "Graph",
    "__version__",
    "builtins",
    "compile",
    "errors",
    "export",
    "get_builtin",
    "list_builtins",
    "load_spec",
    "parse",
    "run",
    "spec_schema",
    "validate_spec",
]


def __getattr__(name: str) -> Any:
    """Resolve a public name on first use (PEP 562) and keep it in the module."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("layerforge")
        except PackageNotFoundError:  # a source tree without metadata
            value = "0+unknown"
    elif name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
    else:
        raise AttributeError(f"module 'layerforge' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, resolved or not (what tab completion offers)."""
    return sorted(__all__)
