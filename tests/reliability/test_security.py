"""User text is never evaluated: an AST scan of the package for dynamic-code calls.

Walks every module of grammar, workers, search, storage, api and the facade with :mod:`ast` and fails,
listing ``file:line``, on a call to

* the builtins ``eval``, ``exec``, ``compile`` (not ``grammar.compile``, not ``re.compile``
  or any ``x.compile``) or ``__import__``,
* ``sympify`` / ``parse_expr`` (sympy's string evaluators) in any spelling,
* ``pickle.loads`` / ``pickle.load`` / ``cloudpickle.loads`` / ``marshal.loads`` /
  ``dill.loads``, or ``torch.load`` without ``weights_only=True``,
* ``importlib.import_module``,

unless every argument is a constant string (those are harmless), or the call site is in
``REVIEWED`` below with the reason it cannot see user text. A new call site fails the
test until someone reviews it and adds it here.

The other security promises are tested elsewhere: every mutating route rejects a missing or
wrong token (tests/api/test_auth_and_limits.py walks the router, so a new route cannot
slip through); the default bind is loopback (test_soak.py checks the live server's
listening sockets; tests/api/test_service_basics.py checks the setting).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("grammar", "workers", "search", "storage", "api", "layerforge")

BUILTINS = {"eval", "exec", "compile", "__import__"}
ANY_SPELLING = {"sympify", "parse_expr", "S"}  # S("...") is sympify too
MODULE_CALLS = {
    ("pickle", "loads"),
    ("pickle", "load"),
    ("cloudpickle", "loads"),
    ("cloudpickle", "load"),
    ("marshal", "loads"),
    ("dill", "loads"),
    ("importlib", "import_module"),
    ("torch", "load"),
    ("yaml", "load"),
}

# (file, function, name) -> why it is safe. Keep this list short and the reasons honest.
REVIEWED = {
    (
        "grammar/compile.py",
        "_generated_class",
        "compile",
    ): "compiles grammar.codegen.torch_source(graph): code generated from whitelisted op "
    "templates; user text appears in it only through repr() (a string literal)",
    (
        "grammar/compile.py",
        "_generated_class",
        "exec",
    ): "executes the code object compiled just above, into a fresh module namespace",
    (
        "layerforge/__init__.py",
        "__getattr__",
        "import_module",
    ): "imports a module named in the facade's constant _LAZY table, only for a name in it",
    (
        "workers/rejection/__init__.py",
        "__getattr__",
        "import_module",
    ): "imports a submodule of the package named in its constant _LAZY table, only for a "
    "name in it",
}


def _module_names(tree: ast.Module) -> set[str]:
    """Names a module binds itself (imports, defs, assignments): these shadow builtins."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound


def _constant_strings(call: ast.Call) -> bool:
    args = [*call.args, *(k.value for k in call.keywords)]
    return all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args)


def _weights_only(call: ast.Call) -> bool:
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def dangerous_calls(path: Path, source: str | None = None) -> list[tuple[int, str, str]]:
    """``(line, function, name)`` of each flagged call in one file."""
    tree = ast.parse(source if source is not None else path.read_text(), str(path))
    shadowed = _module_names(tree)
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = (
                child.name
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                else function
            )
            if isinstance(child, ast.Call):
                func = child.func
                flagged = None
                if isinstance(func, ast.Name):
                    if func.id in BUILTINS and func.id not in shadowed:
                        flagged = func.id
                    elif func.id in ANY_SPELLING and func.id != "S":
                        flagged = func.id
                    elif func.id in {"loads", "import_module"} and func.id in shadowed:
                        flagged = func.id  # from pickle import loads, etc.
                elif isinstance(func, ast.Attribute):
                    owner = func.value.id if isinstance(func.value, ast.Name) else None
                    if func.attr in ANY_SPELLING - {"S"}:
                        flagged = func.attr
                    elif func.attr == "S" and owner in ("sympy", "sp"):
                        flagged = "S"
                    elif (owner, func.attr) in MODULE_CALLS:
                        if owner == "torch" and _weights_only(child):
                            flagged = None
                        else:
                            flagged = func.attr
                if flagged and not _constant_strings(child):
                    found.append((child.lineno, name, flagged))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_no_dynamic_evaluation_of_non_constant_text():
    problems, reviewed_seen = [], set()
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 40
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        for line, function, name in dangerous_calls(path):
            key = (relative, function, name)
            if key in REVIEWED:
                reviewed_seen.add(key)
                continue
            problems.append(f"{relative}:{line}: {name}(...) in {function}()")
    assert not problems, (
        "dynamic evaluation of non-constant input (review it, then add it "
        "to REVIEWED with the reason it is safe):\n" + "\n".join(problems)
    )
    stale = set(REVIEWED) - reviewed_seen
    assert not stale, f"REVIEWED lists call sites that no longer exist: {stale}"


def test_the_scanner_catches_what_it_should():
    bad = """
import pickle, sympy, importlib, torch
from sympy.parsing.sympy_parser import parse_expr
def f(text, blob):
    eval(text)
    exec(text)
    compile(text, "<x>", "exec")
    __import__(text)
    sympy.sympify(text)
    parse_expr(text)
    pickle.loads(blob)
    importlib.import_module(text)
    torch.load(blob)
"""
    names = [name for _, _, name in dangerous_calls(Path("bad.py"), bad)]
    assert names == [
        "eval",
        "exec",
        "compile",
        "__import__",
        "sympify",
        "parse_expr",
        "loads",
        "import_module",
        "load",
    ]
    fine = """
import re, torch
from layerforge.grammar import compile
def g(graph, text):
    re.compile(text)
    compile(graph)
    eval("1 + 1")
    torch.load(text, weights_only=True)
    model.eval()
"""
    assert dangerous_calls(Path("fine.py"), fine) == []
