"""The README's notebook session runs as written, so the README cannot drift from the code.

The ``python`` block of README.md's "In a notebook" section is extracted and run in a fresh
interpreter in an empty folder; its one change is the server URL, pointed at a live
``layerforge serve`` (simulated evaluator: the server half shows the client, not training).
The local half trains for real with the in-process evaluator.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.helpers import Server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8000"


def notebook_session() -> str:
    """The python code block of README.md's "In a notebook" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## In a notebook", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the notebook section holds one python block"
    assert README_URL in blocks[0]
    return blocks[0]


def test_the_readme_notebook_session_runs(tmp_path):
    code = notebook_session()
    server = Server(
        f"sqlite:///{tmp_path / 'server.db'}",
        tmp_path,
        env={"LAYERFORGE_EVALUATOR": "simulated"},
    )
    server.start(timeout=120)
    work = tmp_path / "notebook"
    work.mkdir()
    script = work / "session.py"
    script.write_text(code.replace(README_URL, server.base))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERFORGE_")}
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=work,
            env=env,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    assert "\\frac{x}{1 + e^{- \\beta x}}" in out  # the LaTeX of the parsed swish
    assert "'evonorm_b0'" in out
    assert "<CampaignResult campaign 1 'notebook': completed;" in out
    assert "[('budget.max_candidates', 'Input should be greater than or equal to 1')]" in out
    assert "404 not_found campaign 999999 does not exist" in out
    assert "def layer(x):" in out and "class " in out  # the numpy and pytorch exports
    assert (work / "notebook.db").exists()  # the database the session named, in its folder
