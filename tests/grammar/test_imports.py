"""grammar is the bottom layer: it never imports workers, search, storage or api."""

import json
import subprocess
import sys


def test_grammar_imports_nothing_above_it():
    code = (
        "import sys, json, grammar, grammar.builtins, grammar.export, grammar.compile;"
        "import grammar.fingerprint, grammar.generate;"
        "grammar.compile_graph(grammar.get_builtin('evonorm_b0'), 8);"
        "grammar.export(grammar.get_builtin('relu'), 'latex');"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mods = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "grammar" in mods
    assert not mods & {"workers", "search", "storage", "api", "ray", "sqlalchemy", "fastapi"}
