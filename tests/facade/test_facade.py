"""``import layerforge``: light to import, every public name resolves, layers from text.

The heavy names (``run``, ``Client``, the grammar) are resolved on first use (PEP 562), so
importing the facade loads nothing of the service, and importing ``layerforge.grammar``
through it loads none of search, storage or api.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import layerforge
from layerforge.errors import LayerforgeError

LOADED = (
    "import json, sys; {body};"
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in"
    " ('layerforge', 'torch', 'ray', 'sqlalchemy', 'fastapi', 'httpx', 'pydantic', 'sympy'))))"
)


def loaded_after(body: str) -> set[str]:
    """The modules of interest that a fresh interpreter holds after running ``body``."""
    out = subprocess.run(
        [sys.executable, "-c", LOADED.format(body=body)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_layerforge_loads_nothing_else():
    assert loaded_after("import layerforge; dir(layerforge); layerforge.__all__") == {"layerforge"}


def test_the_client_and_errors_load_no_service_and_no_torch():
    modules = loaded_after("import layerforge; layerforge.Client; layerforge.errors.ApiError")
    assert {"layerforge.client", "layerforge.errors", "httpx"} <= modules
    assert not {m for m in modules if m.split(".")[0] in ("torch", "ray", "sqlalchemy", "fastapi")}
    assert not {m for m in modules if m.startswith(("layerforge.search", "layerforge.api"))}


def test_grammar_names_load_no_search_storage_or_api():
    modules = loaded_after(
        "import layerforge; g = layerforge.parse('x * sigmoid(x)', 'activation');"
        "layerforge.compile(g); layerforge.export(g, 'latex'); layerforge.builtins.BUILTINS"
    )
    assert "layerforge.grammar" in modules
    for package in ("search", "storage", "api", "workers", "runs", "client"):
        assert f"layerforge.{package}" not in modules
    assert not {m.split(".")[0] for m in modules} & {"ray", "sqlalchemy", "fastapi"}


def test_every_public_name_resolves_and_dir_lists_them():
    assert sorted(dir(layerforge)) == sorted(layerforge.__all__)
    for name in layerforge.__all__:
        assert getattr(layerforge, name) is not None, name
    assert layerforge.compile is layerforge.grammar.compile_graph
    assert layerforge.errors.SpecError.__module__ == "layerforge.errors"
    assert isinstance(layerforge.__version__, str) and layerforge.__version__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        layerforge.nope  # noqa: B018 - the attribute access is the test


def test_layers_from_text_compile_and_export():
    swish = layerforge.parse("x * sigmoid(beta * x)", "activation")
    module = layerforge.compile(swish)
    x = torch.linspace(-3, 3, 7)
    assert torch.allclose(module(x), x * torch.sigmoid(x))
    assert [name for name, _ in module.named_parameters()] == ["beta"]
    assert "class " in layerforge.export(swish, "pytorch")
    assert set(layerforge.list_builtins("normact")) >= {"bn_relu", "evonorm_b0", "evonorm_s0"}
    b0 = layerforge.compile(layerforge.get_builtin("evonorm_b0"), 8)
    assert b0(torch.randn(4, 8, 5, 5)).shape == (4, 8, 5, 5)
    silu = layerforge.parse("x * sigmoid(x)", "activation")
    assert layerforge.builtins.BUILTINS["silu"].key == silu.key
    with pytest.raises(layerforge.grammar.ParseError, match="did you mean 'sigmoid'"):
        layerforge.parse("x * sigmod(x)", "activation")


def test_errors_form_one_hierarchy():
    errors = layerforge.errors
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type) and not issubclass(value, Warning):
            assert issubclass(value, LayerforgeError), name
    assert issubclass(errors.ExportWarning, UserWarning)
    assert issubclass(errors.ServerUnreachable, ConnectionError)
    assert issubclass(errors.SpecError, ValueError)
    assert issubclass(errors.RemoteSpecError, errors.ValidationError)
    assert issubclass(errors.RemoteSpecError, errors.SpecError)
    assert errors.error_class(404) is errors.NotFoundError
    assert errors.error_class(503) is errors.ServerError
    assert errors.error_class(418) is errors.ApiError
