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
            summary = figures["summary"][space]
            assert sum(counts) == summary["drawn"] > 0, (space, counts)
            # duplicates of earlier draws are apart from the distinct proposals
            assert summary["distinct"] + summary["duplicates"] == summary["drawn"]
            assert 0 <= summary["distinct_rejected_cheaply_share"] <= 1
        assert figures["audit"]["normact"]["audited"] >= 1
        assert "normact/evonorm_b0" in figures["controls"]
    elif name == "controller_overhead":
        backends = {row["backend"] for row in figures["rows"]}
        assert backends == {"sqlite", "postgresql"}, figures["rows"]
        assert {row["strategy"] for row in figures["rows"]} == {"evolution", "surrogate"}
        assert all(row["per_second"] > 0 for row in figures["rows"])
    elif name == "training_throughput":
        proxies = {row["proxy"] for row in figures["rows"]}
        assert {"mlp/mnist1d", "resnet/digits"} <= proxies
        assert all(
            row["ours_steps_per_s"] > 0 and row["plain_dataloader_steps_per_s"] > 0
            for row in figures["rows"]
        )
    elif name == "search_efficiency":
        assert set(figures["final_hypervolume_mean"]) >= {"surrogate", "random", "optuna_tpe"}
        assert set(figures["evaluations_to_random_final_hv_per_seed"]) == set(
            figures["final_hypervolume_mean"]
        )
        assert figures["surrogate_prediction_quality"]["model_chosen_count"]
        # the plot goes beside the JSON, never over the committed one
        assert (results / figures["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elif name == "proxy_fidelity":
        proxies = figures["proxies"]
        assert {(r["mode"], r["proxy"]) for r in proxies} == {
            (m, p) for m in ("raw", "fair") for p in ("P1", "P1 campaign", "H")
        }
        assert all(-1.0 <= r["Kendall tau vs H"] <= 1.0 for r in proxies)
        assert "tau fair over the functions that train on both proxies" in figures["headline"]
        assert "tau fair, P1 as a campaign runs it (the goal's)" in figures["headline"]
        rows = figures["accuracy per function (%, mean ± SD over seeds)"]
        assert rows and {"function", "P1 fair", "P1 campaign fair", "H raw"} <= set(rows[0])
        # a function the funnel does not reject scores the same either way
        for row in rows:
            if row["rejected by (fair, per seed)"] == "none":
                assert row["P1 campaign fair"] == row["P1 fair"], row
    elif name == "init_signal":
        rows = figures["E[logit^2] at init"]
        assert {row["arch"] for row in rows} >= {"mlp", "resnet"}
        # gain-fair evaluation: a rescaled relu reaches the logits exactly as relu does
        assert all(row["fair: ratio 2·relu / relu"] == pytest.approx(1.0) for row in rows)
    elif name == "rediscovery":
        assert figures["headline"]["campaigns"] == len(figures["campaigns"]) >= 1
        assert all(c["status"] == "completed" for c in figures["campaigns"])
        origins = {row["origin"] for row in figures["transfer (every campaign)"]}
        assert {"baseline", "control"} <= origins
    elif name == "normact_fidelity":
        (row,) = figures["settings"]
        assert row["discrimination"] >= 0 and 1 <= row["BN-ReLU rank"] <= 6
        cells = figures["accuracy per built-in (%, mean ± SD over seeds)"]
        assert {"bn_relu", "evonorm_b0", "evonorm_s0"} <= set(cells[0])
    elif name == "normact_rediscovery":
        arms = figures["headline"]
        assert set(arms) == {"any layer", "statistic required"}
        assert sum(h["campaigns"] for h in arms.values()) == len(figures["campaigns"]) >= 2
        assert all(c["status"] == "completed" for c in figures["campaigns"])
        searched = [
            w
            for w in figures["transfer (every campaign)"]
            if w["arm"] == "statistic required" and w["origin"] not in ("baseline", "seed")
        ]
        assert all(w["normalizes (uses a statistic)"] for w in searched)
        references = {
            row["reference"] for row in figures["EvoNorm references on the held-out runs"]
        }
        assert references == {"evonorm_b0", "evonorm_s0"}
    elif name == "peers":
        assert any(k.startswith("ours / Optuna NSGA-II") for k in figures["headline"])
        rows = figures["optuna_same_storage"]
        assert {r["backend"] for r in rows} >= {"sqlite"}
        measured = [r for r in rows if "ratio_layerforge_to_optuna" in r]
        assert measured and all(r["ratio_layerforge_to_optuna"] > 0 for r in measured)
        tune = figures["ray_tune"]
        assert tune["overhead"]["tune_trials_per_s"] > 0
        assert tune["overhead"]["layerforge_trials_per_s"] > 0
        assert tune["search"]["layerforge"]["status"] == "completed"
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


def _registry() -> list[tuple[str, str, int, int]]:
    from benchmarks.__main__ import BENCHMARKS

    return BENCHMARKS


def test_every_benchmark_module_is_registered() -> None:
    """A benchmark module (one with a ``run`` and a ``GOAL``) that the runner does not list
    would never run in ``make bench``."""
    registered = {name for name, *_rest in _registry()}
    modules = {
        path.stem
        for path in (ROOT / "benchmarks").glob("*.py")
        if "\ndef run(" in path.read_text() and "\nGOAL" in path.read_text()
    }
    assert modules == registered, (modules - registered, registered - modules)


# one test per benchmark, so the two test workers share them out
@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", [name for name, *_rest in _registry()])
def test_quick_run_writes_results(name: str, tmp_path: Path) -> None:
    quick_limit = {n: q for n, _title, _full, q in _registry()}[name]
    before = _committed_mtimes()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", name, "--results", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=quick_limit + 300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.stem for p in tmp_path.glob("*.json")} == {name}
    data = json.loads((tmp_path / f"{name}.json").read_text())
    _check_result(data, name)
    assert "error" not in data, data.get("error")
    assert data["quick"] is True
    _check_figures(name, data["figures"], tmp_path)
    md = (tmp_path / "RESULTS.md").read_text()
    assert "Machine" in md and "| Benchmark | Goal |" in md and "quick" in md
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
