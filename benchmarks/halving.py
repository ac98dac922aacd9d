"""Benchmark 12: successive-halving promotion, CPU-seconds to random search's final hypervolume.

Random search runs the same campaign twice per seed, through the real campaign loop,
storage (SQLite) and real training (the in-process evaluator, one torch thread): once with
every candidate trained to its full steps, once with promotion on (rungs at a few steps of
the full run; at each rung only the top fraction continues, the rest are stopped). The
evaluations' CPU-seconds are the evaluator thread's CPU time (:func:`time.thread_time`),
so the controller's own work is not counted; the hypervolume after each stored batch is read
from the campaign's progress, so each run gives hypervolume against CPU-seconds.

Reported per seed and as the median: the CPU-seconds each arm needs to reach the final
hypervolume of the run without halving, their ratio, both final hypervolumes, and the
candidates each arm completed, stopped and rejected. Random search proposes the same
candidates in both arms (its proposals depend on the seed and the population size only),
so the comparison is the promotion alone.

Goal (issue 16): with halving on, random's final hypervolume in <= 1/2 of the CPU-seconds
it needs without, with the same or better final hypervolume.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.search_efficiency import PROXIES as B6_PROXIES

GOAL = (
    "with successive halving, random search reaches its final hypervolume (without halving) "
    "in <= 1/2 of the evaluation CPU-seconds, with the same or better final hypervolume"
)

CONFIG: dict[str, Any] = {
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4, "max_depth": 4},
    "strategy": {"name": "random"},
    # the proxies of benchmark 6 (two MNIST-1D MLPs on 20,000 samples): the earlier runs
    # used digits (600 steps), which saturates near 98% for every decent function, so its
    # share of the front was decided by the last point of noise, which no rung can predict
    # (2026-12-07: at 50 and 150 steps, relu, silu, gelu, mish and sin all scored 97-99% there,
    # sin ending best at 99.2% after ranking below the others at 150 steps)
    "proxies": B6_PROXIES,
    "rejection": {"quality_steps": 50, "quality_min_accuracy": 0.15},
    # earlier runs (2026-12-03, same seeds, the digits proxy): fraction 0.5 ranking by the mean
    # accuracy spent 0.315 of the CPU-seconds but stopped front members; fraction 1/3 ranking
    # each proxy on its own spent 0.229 and reached seed 0's target only
    # on these proxies (2026-12-07, same seeds): fraction 1/3 spent 0.359 (median) of the
    # CPU-seconds to the target and 0.4 spent 0.413, but both stopped seed 2's lerp(beta, x, x)
    # at 150 steps (behind sin(x) and erf(x) there on the 600-step proxy), which ends 0.2
    # points above sin(x) on that proxy, under its seed SD (0.57 points): final hypervolume
    # 0.5954 against 0.5965.
    # Fraction 1/2 keeps every front member and spends 0.557 and 0.506 (two runs).
    "promotion": {"rungs": [50, 150], "fraction": 0.5, "floor": None},
    # 5 seeds since 2026-12-07 (evening), as benchmark 6 runs: with 3 the median was one seed
    "seeds": [0, 1, 2, 3, 4],
    "budget": 40,
    "parallelism": 2,
}

#: Earlier full runs of :data:`CONFIG` (3 seeds; 2026-12-07, the proxies of benchmark 6):
#: the medians of the CPU-s ratio, reported beside each new run's
EARLIER_RUNS_SEEDS = [0, 1, 2]
EARLIER_RUNS_MEDIANS = (0.557, 0.506, 0.529)

QUICK: dict[str, Any] = {
    **CONFIG,
    "proxies": [{"arch": "mlp", "dataset": "digits", "steps": 200, "batch_size": 64}],
    "rejection": {"quality_steps": 20, "quality_min_accuracy": 0.15},
    "promotion": {"rungs": [20, 60], "fraction": 0.5, "floor": None},
    "seeds": [0],
    "budget": 12,
}


class _TimedEvaluator:
    """The in-process evaluator, with the CPU time its jobs take in this thread summed."""

    def __init__(self) -> None:
        from layerforge.search.evaluators import LocalEvaluator

        self.inner = LocalEvaluator()
        self.synchronous = True
        self.cpu_seconds = 0.0

    def submit(self, job_id: str, job: Any) -> None:
        """Queue a job on the inner evaluator."""
        self.inner.submit(job_id, job)

    def poll(self, timeout_s: float) -> list[Any]:
        """Run the next job, adding its thread CPU time to :attr:`cpu_seconds`."""
        start = time.thread_time()
        try:
            return self.inner.poll(timeout_s)
        finally:
            self.cpu_seconds += time.thread_time() - start

    def in_flight(self) -> int:
        """Jobs queued on the inner evaluator."""
        return self.inner.in_flight()

    def cancel(self) -> None:
        """Cancel the inner evaluator's jobs."""
        self.inner.cancel()

    def shutdown(self) -> None:
        """Shut the inner evaluator down."""
        self.inner.shutdown()


def _spec(config: dict[str, Any], seed: int, halving: bool):
    from layerforge.search.spec import validate_spec

    return validate_spec(
        {
            "name": f"halving-{'on' if halving else 'off'}-{seed}",
            "space": config["space"],
            "strategy": config["strategy"],
            "proxies": config["proxies"],
            "objectives": ["accuracy"],
            "rejection": config["rejection"],
            "promotion": config["promotion"] if halving else {},
            "budget": {"max_candidates": config["budget"], "max_seconds": 10_000},
            "fidelity": {"enabled": False},
            "parallelism": config["parallelism"],
            "seed": seed,
        }
    )


def _run(config: dict[str, Any], seed: int, halving: bool, folder: Path) -> dict[str, Any]:
    """One campaign; its hypervolume against evaluation CPU-seconds and its outcome counts."""
    from layerforge.search.campaign import CampaignRunner
    from layerforge.search.queries import create_campaign
    from layerforge.storage import get_engine, session_scope, upgrade_database
    from layerforge.storage import repository as repo

    url = f"sqlite:///{folder / f'{seed}-{int(halving)}.db'}"
    upgrade_database(url)
    campaign_id = create_campaign(url, _spec(config, seed, halving))
    evaluator = _TimedEvaluator()
    curve: list[tuple[float, float]] = []
    runner = CampaignRunner(
        url,
        campaign_id,
        evaluator,
        poll_s=0.0,
        on_progress=lambda p: curve.append((evaluator.cpu_seconds, p.hypervolume)),
    )
    status = runner.run()
    with session_scope(get_engine(url), readonly=True) as s:
        counts = repo.count_candidates(s, campaign_id=campaign_id)
    return {
        "status": status,
        "curve": curve,
        "cpu_seconds": evaluator.cpu_seconds,
        "final_hypervolume": curve[-1][1] if curve else 0.0,
        "counts": counts,
    }


def _cpu_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """CPU-seconds at the first point whose hypervolume reaches ``target`` (None: never)."""
    return next((cpu for cpu, hv in curve if hv >= target - 1e-12), None)


def run(quick: bool = False) -> dict[str, Any]:
    """Both arms for every seed; the figures and whether the goal is met."""
    import torch

    torch.set_num_threads(1)
    config = QUICK if quick else CONFIG
    rows = []
    with tempfile.TemporaryDirectory(prefix="halving-bench-") as tmp:
        for seed in config["seeds"]:
            off = _run(config, seed, False, Path(tmp))
            on = _run(config, seed, True, Path(tmp))
            target = off["final_hypervolume"]
            off_cpu, on_cpu = _cpu_to(off["curve"], target), _cpu_to(on["curve"], target)
            rows.append(
                {
                    "seed": seed,
                    "final_hv_off": round(target, 4),
                    "final_hv_on": round(on["final_hypervolume"], 4),
                    "cpu_s_to_target_off": None if off_cpu is None else round(off_cpu, 2),
                    "cpu_s_to_target_on": None if on_cpu is None else round(on_cpu, 2),
                    "ratio": None
                    if off_cpu is None or on_cpu is None
                    else round(on_cpu / off_cpu, 3),
                    "cpu_s_total_off": round(off["cpu_seconds"], 2),
                    "cpu_s_total_on": round(on["cpu_seconds"], 2),
                    "completed_off": off["counts"].get("completed", 0),
                    "completed_on": on["counts"].get("completed", 0),
                    "stopped_on": on["counts"].get("stopped", 0),
                    "rejected": on["counts"].get("rejected", 0),
                }
            )
    return {
        "name": "halving",
        "goal": GOAL,
        **summarize(rows, config, quick),
        "config": {**config, "quick": quick},
    }


def summarize(rows: list[dict[str, Any]], config: dict[str, Any], quick: bool) -> dict[str, Any]:
    """``met``, ``note`` and ``figures`` from the per-seed rows (a result file's rows can be
    summarized again without rerunning them)."""
    # a seed whose halving arm never reached the target counts as an infinite ratio
    ratios = [r["ratio"] if r["ratio"] is not None else float("inf") for r in rows]
    median_ratio = statistics.median(ratios)
    same_or_better = all(r["final_hv_on"] >= r["final_hv_off"] - 1e-9 for r in rows)
    total_ratio = sum(r["cpu_s_total_on"] for r in rows) / max(
        1e-9, sum(r["cpu_s_total_off"] for r in rows)
    )
    note = (
        f"rungs {config['promotion']['rungs']} of {[p['steps'] for p in config['proxies']]} "
        f"steps, fraction {config['promotion']['fraction']:.3g}: per seed, the CPU-s ratio "
        "to the no-halving final hypervolume "
        + ", ".join("-" if r["ratio"] is None else f"{r['ratio']:.3g}" for r in rows)
        + f" (median {median_ratio:.3g}, goal <= 0.5), total CPU-s ratio {total_ratio:.3g}; "
        "final hypervolume off / on "
        + ", ".join(f"{r['final_hv_off']:.4g} / {r['final_hv_on']:.4g}" for r in rows)
        + f" ({'the same or better' if same_or_better else 'worse'} with halving); "
        "completed / stopped with halving "
        + ", ".join(f"{r['completed_on']} / {r['stopped_on']}" for r in rows)
    )
    figures: dict[str, Any] = {
        "headline": {
            "median CPU-s ratio to random's final HV (on/off)": median_ratio,
            "final HV same or better in every seed": same_or_better,
            "total CPU-s ratio (on/off)": round(total_ratio, 3),
        },
        "per_seed": rows,
    }
    if not quick:
        common_median = statistics.median(
            ratio for r, ratio in zip(rows, ratios, strict=True) if r["seed"] in EARLIER_RUNS_SEEDS
        )
        note += (
            f". The ratio sits at the goal's edge: earlier runs of this configuration on "
            f"seeds {EARLIER_RUNS_SEEDS} gave medians "
            + ", ".join(f"{m:.3g}" for m in EARLIER_RUNS_MEDIANS)
            + f" (this run's on those seeds: {common_median:.3g}); a seed's CPU-s to its "
            "target moved by up to 0.13 of the ratio between runs (their completed counts "
            "differ by at most one candidate per arm; seed 2 reaches its target after 2-4 "
            "CPU-s)"
        )
        figures["headline"]["earlier runs' medians (seeds 0-2)"] = list(EARLIER_RUNS_MEDIANS)
    return {
        "met": bool(median_ratio <= 0.5 and same_or_better),
        "note": note,
        "figures": figures,
    }


if __name__ == "__main__":
    import json

    from benchmarks.common import write_result

    result = run(quick="--quick" in __import__("sys").argv)
    write_result(result)
    print(json.dumps(result["figures"], indent=2, default=str))
