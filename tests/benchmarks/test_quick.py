"""The benchmark suite runs end to end in --quick mode and writes well-formed results.

Checks the JSON files and the generated summary, never a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAST = ["proposal_throughput", "training_throughput"]


def _check_result(data: dict, name: str) -> None:
    assert data["name"] == name
    assert isinstance(data["goal"], str) and data["goal"]
    assert data["met"] is None or isinstance(data["met"], bool)
    assert isinstance(data["figures"], dict) and data["figures"]
    assert isinstance(data["config"], dict)
    machine = data["machine"]
    assert machine["cores"] and machine["torch"] and machine["cpu"]
    assert data["finished_at"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_suite_writes_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--results", str(tmp_path), "--only", *FAST],
        cwd=ROOT, capture_output=True, text=True, timeout=580,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in FAST:
        data = json.loads((tmp_path / f"{name}.json").read_text())
        _check_result(data, name)
        assert "error" not in data, data.get("error")
    md = (tmp_path / "RESULTS.md").read_text()
    assert "Machine" in md and "| Benchmark | Goal |" in md
    for name in FAST:
        assert f"(`{name}`)" in md
    # the committed results were not touched
    assert str(tmp_path) != str(ROOT / "benchmarks" / "results")


def test_crash_is_recorded_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of the repo, not installed
    import benchmarks.__main__ as runner

    class Boom:
        GOAL = "never"

        @staticmethod
        def run(quick: bool = False) -> dict:
            raise RuntimeError("kaboom")

    monkeypatch.setitem(sys.modules, "benchmarks.boom", Boom)
    assert runner.run_child("boom", True, tmp_path) == 1
    data = json.loads((tmp_path / "boom.json").read_text())
    _check_result(data, "boom")
    assert data["met"] is False and "kaboom" in data["error"]
    md = runner.write_results_md(tmp_path).read_text()
    assert "boom" in md and "error" in md


def test_unknown_benchmark_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--results", str(tmp_path), "--only", "nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown benchmark" in proc.stderr
