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
COMMITTED = [ROOT / "benchmarks" / "RESULTS.md", ROOT / "benchmarks" / "results"]


def _committed_mtimes() -> dict[str, int]:
    """Modification times of the committed summary and every committed result file."""
    paths = [COMMITTED[0], *COMMITTED[1].iterdir()]
    return {p.name: p.stat().st_mtime_ns for p in paths}


def _check_result(data: dict, name: str) -> None:
    assert data["name"] == name
    assert isinstance(data["goal"], str) and data["goal"]
    assert data["met"] is None or isinstance(data["met"], bool)
    assert isinstance(data["figures"], dict) and data["figures"]
    assert isinstance(data["config"], dict)
    machine = data["machine"]
    assert machine["cores"] and machine["torch"] and machine["cpu"]
    assert machine["python_loop_ms"] > 0
    assert data["finished_at"]


def _check_figures(name: str, figures: dict, results: Path) -> None:
    """What each benchmark must report, whatever the numbers are."""
    if name == "proposal_throughput":
        spaces = {row["space"] for row in figures["rows"]}
        assert {"activation/swish", "normact/evonorm"} <= spaces
        assert all(
            row["proposals_per_s"] > 0 and row["proposals_timed"] > 0 for row in figures["rows"]
        )
    elif name == "layer_overhead":
        layers = {row["layer"] for row in figures["rows"]}
        assert {"silu", "relu", "bn_relu", "evonorm_b0", "evonorm_s0"} <= layers
        assert all(row["amortized_ratio"] > 0 for row in figures["rows"])
    elif name == "rejection_funnel":
        for space in ("normact", "activation"):
            # every candidate lands in exactly one stage of the funnel
            counts = [v["count"] for k, v in figures["funnel"].items() if k.startswith(space + "/")]
            assert sum(counts) == figures["summary"][space]["candidates"] > 0, (space, counts)
        assert figures["audit"]["normact"]["audited"] >= 1
        assert "normact/evonorm_b0" in figures["controls"]
    elif name == "controller_overhead":
        backends = {row["backend"] for row in figures["rows"]}
        assert backends == {"sqlite", "postgresql"}, figures["rows"]
        assert all(row["per_second"] > 0 for row in figures["rows"])
    elif name == "training_throughput":
        proxies = {row["proxy"] for row in figures["rows"]}
        assert {"mlp/mnist1d", "resnet/digits"} <= proxies
        assert all(
            row["ours_steps_per_s"] > 0 and row["plain_dataloader_steps_per_s"] > 0
            for row in figures["rows"]
        )
    elif name == "search_efficiency":
        assert set(figures["final_hypervolume_mean"]) >= {"evolution", "random"}
        assert figures["best_functions"] and figures["relu_confirmed"]["runs"] >= 2
        # the plot goes beside the JSON, never over the committed one
        assert (results / figures["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elif name == "api_load":
        assert figures["errors"] == 0, figures["error_samples"]
        assert set(figures["endpoints"]) == {
            "pareto",
            "candidates_by_id",
            "candidates_sorted",
            "candidate",
        }
        assert all(v["requests"] > 0 for v in figures["endpoints"].values())
        assert figures["stored_candidates"] > 0
        assert figures["background_campaign"]["status"] == "running"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_suite_runs_every_benchmark_and_writes_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of the repo, not installed
    from benchmarks.__main__ import BENCHMARKS

    every = [name for name, *_rest in BENCHMARKS]
    assert len(every) == 7
    before = _committed_mtimes()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--results", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.stem for p in tmp_path.glob("*.json")} == set(every)
    for name in every:
        data = json.loads((tmp_path / f"{name}.json").read_text())
        _check_result(data, name)
        assert "error" not in data, data.get("error")
        assert data["quick"] is True
        _check_figures(name, data["figures"], tmp_path)
    md = (tmp_path / "RESULTS.md").read_text()
    assert "Machine" in md and "| Benchmark | Goal |" in md and "quick" in md
    for name in every:
        assert f"(`{name}`)" in md
    # the committed results were not touched
    assert _committed_mtimes() == before


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
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--results", str(tmp_path), "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "unknown benchmark" in proc.stderr
