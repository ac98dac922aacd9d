"""The storage contract is the only way to the database: no module outside ``storage/``
builds a query, runs SQL or imports the models module (the types and status names it
needs come from ``layerforge.storage``).

Version 0.1 had queries in the campaign loop and the API routes that bypassed the
repository; one changed evaluation statuses without the data-version bump the API's
response cache relies on. This test reads every module's syntax tree (not its text, so a
docstring that mentions ``select(`` is fine) and fails naming the file and line of any
import of SQLAlchemy's query builders or any session query call.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "search", "workers", "grammar", "layerforge")
# what builds or runs a query; ``Session`` (a type for dependency injection) is allowed
QUERY_BUILDERS = {"select", "update", "delete", "insert", "func", "text", "and_", "or_"}
SESSION_CALLS = {"query", "execute", "scalars", "scalar"}
MODELS = "layerforge.storage.models"


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            (node.module or "") == MODELS
            or (
                node.module == "layerforge.storage"
                and any(alias.name == "models" for alias in node.names)
            )
        ):
            found.append(f"{path}:{node.lineno}: imports {MODELS} (use layerforge.storage)")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            for alias in node.names:
                if alias.name in QUERY_BUILDERS:
                    found.append(f"{path}:{node.lineno}: imports sqlalchemy's {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sqlalchemy":
                    found.append(f"{path}:{node.lineno}: imports sqlalchemy")
                elif alias.name == MODELS:
                    found.append(f"{path}:{node.lineno}: imports {MODELS} (use layerforge.storage)")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SESSION_CALLS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in ("s", "session", "self.session", "connection")
        ):
            found.append(f"{path}:{node.lineno}: calls {node.func.value.id}.{node.func.attr}()")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SESSION_CALLS
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "session"
        ):
            found.append(f"{path}:{node.lineno}: calls .session.{node.func.attr}()")
    return found


def test_no_query_outside_storage():
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 50  # the tree was found
    violations = [v for path in files for v in _violations(path)]
    assert not violations, "queries outside storage/ (add a repository function):\n" + "\n".join(
        violations
    )


def test_the_check_finds_a_query(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from sqlalchemy import select\n"
        "from layerforge.storage.models import Campaign\n"
        "def f(session):\n"
        "    return session.scalars(select(1))\n"
        "def g(self):\n"
        "    return self.session.execute('x')\n"
        "from layerforge.storage import models\n"
        "import layerforge.storage.models as m\n"
    )
    found = _violations(bad)
    assert sorted(v.split(": ", 1)[1] for v in found) == [
        "calls .session.execute()",
        "calls session.scalars()",
        "imports layerforge.storage.models (use layerforge.storage)",
        "imports layerforge.storage.models (use layerforge.storage)",
        "imports layerforge.storage.models (use layerforge.storage)",
        "imports sqlalchemy's select",
    ]
