"""Benchmark 6: which strategy reaches a good front on the fewest evaluations, on real proxies?

``surrogate``, ``evolution``, ``random``, Optuna's TPE and Optuna's NSGA-II each run
campaigns in the Swish space on the same real, gain-fair proxies with the same budget, for
several seeds, all in one run. Everything goes through the real campaign loop, storage and
the Ray evaluator pool; functionally equal candidates share one result across all campaigns
(the evaluation is seeded by the proxy, not the campaign, so the shared result is exact,
and a campaign is charged the CPU-seconds the shared evaluation cost, as if it had run it).

Reported: hypervolume against evaluations and against evaluation CPU-seconds (mean over
seeds, and a PNG plot); per seed and as the median over seeds, the evaluations and the
CPU-seconds each strategy needs to reach random search's final hypervolume (the mean of
random's per-seed finals); and the surrogate's prediction quality as the campaign goes:
the leave-one-out Spearman correlation of each refit (from its ``surrogate`` events) and
the out-of-sample Spearman correlation between what it predicted for the candidates it
proposed and what they scored.

Goal (issue 16): the surrogate reaches random's final hypervolume in <= 1/4 of random's
evaluations and in fewer than TPE (medians over seeds).

Proxies: a benchmark on proxies that cannot tell functions apart measures noise, so the run
first trains a panel of built-ins (:data:`PANEL`) with three seeds on its proxies and on the
previous run's proxies, and reports each proxy's discrimination (SD of the panel's means over
the median seed SD), over the whole panel and over its better half (where the front is: the
figure that matters for reaching a hypervolume). The previous proxies (MNIST-1D 100 steps and
digits 60 steps, batches of 64) could not separate the better half: digits saturates near 97%
and the top functions lay within about one seed SD on both. The proxies now are two MNIST-1D
MLPs on 20,000 samples (a 3x128 MLP at 300 steps and a 2x128 MLP at 600 steps, batches of
128, gain-fair as the product's default): a larger validation split and longer runs halve
the seed SD. Then a study of the init-time Fisher features (:func:`fisher_feature_study`):
what they cost per candidate and what they add to the surrogate's leave-one-out rank
correlation on random functions trained on the first proxy. Only the cheap rejection stages
run (static, probe, duplicate); the winners are not re-trained with more seeds here
(benchmarks 8 and 9 do that), this study compares strategies on one shared cost scale.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL = (
    "surrogate reaches random's final hypervolume in <= 1/4 of random's evaluations and "
    "in fewer evaluations than Optuna TPE (median over seeds)"
)

PROXIES: list[dict[str, Any]] = [
    {
        "arch": "mlp",
        "dataset": "mnist1d",
        "steps": 300,
        "batch_size": 128,
        "scale": 0.25,
        "dataset_options": {"num_samples": 20000},
    },
    {
        "arch": "mlp",
        "dataset": "mnist1d",
        "steps": 600,
        "batch_size": 128,
        "dataset_options": {"num_samples": 20000},
    },
]
#: the previous run's proxies, kept for the discrimination comparison
PREVIOUS_PROXIES: list[dict[str, Any]] = [
    {"arch": "mlp", "dataset": "mnist1d", "steps": 100, "batch_size": 64},
    {"arch": "mlp", "dataset": "digits", "steps": 60, "batch_size": 64},
]
#: the fidelity panel of every activation campaign, plus three functions the searches find
PANEL = (
    "max(x, 0)",
    "x * sigmoid(x)",
    "gelu(x)",
    "tanh(x)",
    "elu(x)",
    "softplus(x)",
    "x * tanh(softplus(x))",
    "sin(x)",
    "sigmoid(x)",
)

CONFIG: dict[str, Any] = {
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4, "max_depth": 4},
    "proxies": PROXIES,
    "gain": "fair",
    # the cheap checks only (stability is the slope-growth test of an activation, about a
    # millisecond): on proxies this short the quality and trainability stages would cost as
    # much as the run they screen
    "rejection": {"stages": ["static", "probe", "duplicate", "stability"]},
    "strategies": {
        "surrogate": {"name": "surrogate", "surrogate": {"screen": 500}},
        "random": {"name": "random"},
        "optuna_tpe": {"name": "optuna", "sampler": "tpe"},
        "evolution": {"name": "evolution", "population": 32, "tournament": 8},
        "optuna_nsga2": {"name": "optuna", "sampler": "nsga2"},
    },
    "seeds": [0, 1, 2, 3, 4],
    "panel": PANEL,
    "panel_seeds": [0, 1, 2],
    # random functions of the Fisher-feature study (on the first proxy)
    "fisher_functions": 160,
    "previous_proxies": PREVIOUS_PROXIES,
    # no campaign starts when it would likely end after this: on a loaded machine the run
    # then has fewer seeds (of the later strategies first), and says how many per strategy
    "max_seconds": 6600,
    "budget": 150,
    # one more in flight than workers, so a worker never waits for the controller's ask
    "parallelism": 3,
    "workers": 2,
}

QUICK: dict[str, Any] = {
    **CONFIG,
    "proxies": [
        {"arch": "mlp", "dataset": "mnist1d", "steps": 60, "batch_size": 64},
        {"arch": "mlp", "dataset": "digits", "steps": 40, "batch_size": 64},
    ],
    "rejection": {"quality_steps": 20, "quality_min_accuracy": 0.1},
    "strategies": {
        "surrogate": {"name": "surrogate", "surrogate": {"screen": 200, "min_fit": 4}},
        "random": {"name": "random"},
        "optuna_tpe": {"name": "optuna", "sampler": "tpe"},
    },
    "seeds": [0],
    "panel": PANEL[:4],
    "panel_seeds": [0, 1],
    "fisher_functions": 12,
    "previous_proxies": [],
    "budget": 12,
}

COLOURS = {
    "surrogate": "tab:red",
    "evolution": "tab:green",
    "random": "tab:grey",
    "optuna_tpe": "tab:blue",
    "optuna_nsga2": "tab:purple",
}


def _proxy_name(proxy: dict[str, Any]) -> str:
    width = "3x128" if proxy.get("scale") == 0.25 else "2x128"
    samples = (proxy.get("dataset_options") or {}).get("num_samples")
    return (
        f"{proxy['arch']} {width}/{proxy['dataset']}"
        + (f" ({samples:,} samples)" if samples else "")
        + f", {proxy['steps']} steps, batch {proxy['batch_size']}"
    )


def panel_discrimination(
    proxies: list[dict[str, Any]], panel: tuple[str, ...], seeds: list[int], gain: str = "fair"
) -> list[dict[str, Any]]:
    """Can each proxy tell the panel apart? Each function is trained on each proxy with each
    seed through the workers' protocol (one torch thread); per proxy: the accuracies, the
    discrimination ratio over the whole panel and over its better half (search/fidelity.py's
    ratio: SD of the means over the median seed SD), and the CPU-seconds per run."""
    import torch

    from layerforge.search.fidelity import discrimination
    from layerforge.workers.datasets import DatasetCache
    from layerforge.workers.rejection import evaluate_candidate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cache = DatasetCache()
    rows = []
    try:
        for proxy in proxies:
            table: dict[str, list[float]] = {}
            start = time.process_time()
            for text in panel:
                accuracies = []
                for seed in seeds:
                    result = evaluate_candidate(
                        {"text": text, "space": "activation"},
                        [{**proxy, "seed": seed, "gain": gain}],
                        {"stages": ["static", "full"], "measure_costs": False},
                        datasets_cache=cache,
                    )
                    runs = result.get("proxies") or []
                    ok = result["status"] == "completed" and runs
                    # a diverged run scores 0, never skipped
                    accuracies.append(float(runs[0]["val_accuracy"]) if ok else 0.0)
                table[text] = accuracies
            per_run = (time.process_time() - start) / (len(panel) * len(seeds))
            ranked = sorted(table, key=lambda t: -statistics.fmean(table[t]))
            better = {t: table[t] for t in ranked[: max(2, len(ranked) // 2)]}
            whole, top = discrimination(table), discrimination(better)
            rows.append(
                {
                    "proxy": _proxy_name(proxy),
                    "discrimination (panel)": round(whole["discrimination_ratio"], 2),
                    "discrimination (better half)": round(top["discrimination_ratio"], 2),
                    "better half spread SD (points)": round(100 * top["panel_spread_sd"], 2),
                    "median seed SD (points)": round(100 * whole["median_seed_sd"], 2),
                    "CPU-s per run": round(per_run, 3),
                    "accuracy (%, mean ± SD)": "; ".join(
                        f"{t} {100 * statistics.fmean(table[t]):.1f} ± "
                        f"{100 * statistics.stdev(table[t]) if len(table[t]) > 1 else 0:.1f}"
                        for t in ranked
                    ),
                }
            )
    finally:
        torch.set_num_threads(threads)
    return rows


def fisher_feature_study(proxy: dict[str, Any], count: int, seed: int = 0) -> dict[str, Any]:
    """What the init-time Fisher features (search/strategies/surrogate_fisher.py) cost and
    add: ``count`` distinct random functions of the benchmark's space are each given their
    probe features and their Fisher features on ``proxy``, then trained on it (one seed, one
    torch thread); over those that complete, the leave-one-out Spearman correlation of the
    strategy's two regressors (GP, k-NN ensemble) on the probe features' 6-dimensional PCA
    projection, with and without the standardized Fisher features appended."""
    import random

    import numpy as np
    import torch

    from layerforge.grammar import fingerprint, make_space, random_graph, to_text
    from layerforge.search.strategies.surrogate import (
        _GP,
        _KNNEnsemble,
        one_blas_thread,
        rank_correlations,
    )
    from layerforge.search.strategies.surrogate_features import activation_features
    from layerforge.search.strategies.surrogate_fisher import fisher_features
    from layerforge.workers.datasets import DatasetCache
    from layerforge.workers.rejection import evaluate_candidate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cache = DatasetCache()
    space = make_space(**CONFIG["space"])
    rng = random.Random(seed)
    seen: set[str] = set()
    probe, fisher, accuracy, fisher_cpu, train_cpu = [], [], [], [], []
    try:
        while len(fisher_cpu) < count:
            graph = random_graph(space, rng)
            features = activation_features(graph)
            key = fingerprint(graph, "fair")
            if key in seen or features is None:
                continue
            seen.add(key)
            start = time.process_time()
            spectrum = fisher_features(graph, {**proxy, "seed": 0}, cache=cache)
            fisher_cpu.append(time.process_time() - start)
            start = time.process_time()
            result = evaluate_candidate(
                {"text": to_text(graph), "space": "activation"},
                [{**proxy, "seed": 0, "gain": "fair"}],
                {"stages": ["static", "full"], "measure_costs": False},
                datasets_cache=cache,
            )
            train_cpu.append(time.process_time() - start)
            if result["status"] == "completed" and result.get("proxies"):
                probe.append(features)
                fisher.append(np.nan_to_num(spectrum))
                accuracy.append(float(result["proxies"][0]["val_accuracy"]))
    finally:
        torch.set_num_threads(threads)

    def standardized(x: np.ndarray) -> np.ndarray:
        spread = x.std(axis=0)
        spread[spread < 1e-9] = 1.0
        return (x - x.mean(axis=0)) / spread

    def projected(x: np.ndarray, dims: int) -> np.ndarray:
        z = standardized(x)
        _u, _s, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
        return z @ vt[:dims].T

    y = -np.array(accuracy)
    loo: dict[str, dict[str, float]] = {}
    if len(y) >= 8 and np.ptp(y) > 0:
        base = projected(np.array(probe), 6)
        sets = {
            "probe": base,
            "probe + fisher": np.hstack([base, standardized(np.array(fisher))]),
            "fisher": standardized(np.array(fisher)),
        }
        with one_blas_thread():
            for name, z in sets.items():
                loo[name] = {
                    model: round(rank_correlations(y, kind(z, y).leave_one_out())["spearman"], 3)
                    for model, kind in (("gp", _GP), ("knn", _KNNEnsemble))
                }
    return {
        "proxy": _proxy_name(proxy),
        "functions": count,
        "completed": len(y),
        "fisher_cpu_s_median": round(statistics.median(fisher_cpu), 4),
        "training_cpu_s_median": round(statistics.median(train_cpu), 4),
        "loo_spearman": loo,
    }


def _campaign_spec(config: dict[str, Any], label: str, strategy: dict[str, Any], seed: int):
    from layerforge.search.spec import validate_spec

    return validate_spec(
        {
            "name": f"efficiency-{label}-{seed}",
            "space": config["space"],
            "strategy": strategy,
            "proxies": config["proxies"],
            "objectives": ["accuracy"],
            "rejection": config["rejection"],
            "budget": {"max_candidates": config["budget"], "max_seconds": 10_000},
            "parallelism": config["parallelism"],
            "gain": config["gain"],
            "fidelity": {"enabled": False},
            "seed": seed,
        }
    )


def _evaluation_seconds(result: dict[str, Any] | None) -> float:
    """What one evaluation cost the worker: the sum of its stages' seconds (one thread)."""
    return sum(float(stage.get("seconds") or 0.0) for stage in (result or {}).get("stages") or [])


def campaign_trace(url: str, campaign_id: int) -> dict[str, Any]:
    """The campaign replayed in candidate order: for each evaluated candidate, the
    hypervolume of the front so far and the CPU-seconds spent so far; and, for candidates
    the surrogate proposed, its predicted and the observed values."""
    from layerforge.search.pareto import hypervolume
    from layerforge.storage import get_engine, session_scope
    from layerforge.storage import repository as repo

    with session_scope(get_engine(url), readonly=True) as s:
        campaign = repo.get_campaign(s, campaign_id=campaign_id)
        reference = list(campaign.reference_point)
        names = [n for n in _objective_names(campaign.spec)]
        ids, table = repo.objective_table(s, campaign_id=campaign_id, names=names)
        values = {cid: [-v for v in row] for cid, row in zip(ids, table)}  # accuracies: minimize
        rows = []
        for c in repo.all_candidates(s, campaign_id=campaign_id):
            if c.status == "duplicate":
                continue
            evaluation = repo.latest_evaluation(s, candidate_id=c.id, kind="search")
            rows.append(
                (
                    c.id,
                    c.text,
                    c.status,
                    _evaluation_seconds(evaluation.result if evaluation else None),
                    dict(c.strategy_data or {}).get("surrogate"),
                )
            )
        events = [
            e.payload
            for e in repo.list_events(s, campaign_id=campaign_id, kind="surrogate", limit=10_000)
        ]
    front: list[list[float]] = []
    curve, seconds, spent = [], [], 0.0
    predicted, observed = [], []
    best: list[tuple[float, str]] = []
    for cid, text, _status, cost, guess in rows:
        spent += cost
        point = values.get(cid)
        if point is not None:
            front.append(point)
            best.append((-statistics.fmean(point), text))
            if guess:
                predicted.append(guess["mean"])
                observed.append(point)
        curve.append(hypervolume(front, reference) if front else 0.0)
        seconds.append(spent)
    return {
        "hypervolume": curve,
        "cpu_seconds": seconds,
        "predicted": predicted,
        "observed": observed,
        "events": events,
        "best": sorted(best, reverse=True)[:3],
    }


def _objective_names(spec: dict[str, Any]) -> list[str]:
    from layerforge.search.objectives import campaign_objectives
    from layerforge.search.spec import CampaignSpec

    return [o.name for o in campaign_objectives(CampaignSpec.model_validate(spec))]


def _reach(trace: dict[str, Any], target: float) -> tuple[int | None, float | None]:
    """Evaluations and CPU-seconds until the hypervolume first reaches ``target``."""
    for index, value in enumerate(trace["hypervolume"]):
        if value >= target - 1e-12:
            return index + 1, round(trace["cpu_seconds"][index], 1)
    return None, None


def _median(values: list[float | None], budget_limit: float) -> float | None:
    """The median where a run that never reached counts as above every run that did (None
    when more than half never did)."""
    ranked = sorted(math.inf if v is None else v for v in values)
    middle = statistics.median(ranked)
    return None if math.isinf(middle) else round(middle, 1)


def _value_at(xs: list[float], ys: list[float], x: float) -> float:
    best = 0.0
    for xi, yi in zip(xs, ys):
        if xi <= x:
            best = yi
        else:
            break
    return best


def _prediction_quality(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """The surrogate's figures over its campaigns: out-of-sample Spearman of predicted
    against observed per objective (pooled over seeds, and per seed), and the leave-one-out
    Spearman of its refits, averaged over seeds by stage of the campaign."""
    import numpy as np

    from layerforge.search.strategies.surrogate import rank_correlations

    per_seed = []
    pooled_p: list[list[float]] = []
    pooled_o: list[list[float]] = []
    for trace in traces:
        p, o = np.array(trace["predicted"]), np.array(trace["observed"])
        pooled_p += trace["predicted"]
        pooled_o += trace["observed"]
        per_seed.append(
            [round(rank_correlations(o[:, j], p[:, j])["spearman"], 3) for j in range(p.shape[1])]
            if len(p) > 2
            else None
        )
    p, o = np.array(pooled_p), np.array(pooled_o)
    pooled = [rank_correlations(o[:, j], p[:, j]) for j in range(p.shape[1])] if len(p) > 2 else []
    stages: dict[int, dict[str, list[float]]] = {}
    chosen: dict[str, int] = {}
    fallbacks = 0
    fit_seconds: list[float] = []
    for trace in traces:
        for event in trace["events"]:
            if event.get("state") != "fitted":
                fallbacks += 1
                continue
            fit_seconds.append(float(event.get("fit_seconds") or 0.0))
            stage = min(int(event["evaluated"]) // 25 * 25, 125)
            for objective in event["objectives"]:
                chosen[objective["chosen"]] = chosen.get(objective["chosen"], 0) + 1
                for model, score in (objective.get("loo") or {}).items():
                    if "spearman" in score:
                        stages.setdefault(stage, {}).setdefault(model, []).append(score["spearman"])
    return {
        "out_of_sample_spearman_pooled": [round(c["spearman"], 3) for c in pooled],
        "out_of_sample_kendall_pooled": [round(c["kendall"], 3) for c in pooled],
        "out_of_sample_spearman_per_seed": per_seed,
        "proposals_with_predictions": len(pooled_p),
        "loo_spearman_by_members": {
            f"{stage}-{stage + 24}" if stage < 125 else "125+": {
                model: round(statistics.fmean(v), 3) for model, v in models.items()
            }
            for stage, models in sorted(stages.items())
        },
        "model_chosen_count": chosen,
        "exploring_events": fallbacks,
        "median_fit_seconds": round(statistics.median(fit_seconds), 3) if fit_seconds else None,
    }


def _plot(traces: dict[str, list[dict[str, Any]]], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_count, by_seconds) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, runs in traces.items():
        colour = COLOURS.get(name, "black")
        xs = list(range(1, budget + 1))
        curves = [
            [_value_at(list(range(1, len(r["hypervolume"]) + 1)), r["hypervolume"], x) for x in xs]
            for r in runs
        ]
        for curve in curves:
            by_count.plot(xs, curve, color=colour, alpha=0.2, lw=1)
        by_count.plot(
            xs,
            [statistics.fmean(c) for c in zip(*curves)],
            color=colour,
            lw=2.5,
            label=f"{name} (mean of {len(runs)})",
        )
        top = max(r["cpu_seconds"][-1] for r in runs)
        grid = [top * i / 200 for i in range(1, 201)]
        timed = [[_value_at(r["cpu_seconds"], r["hypervolume"], t) for t in grid] for r in runs]
        by_seconds.plot(
            grid, [statistics.fmean(c) for c in zip(*timed)], color=colour, lw=2.5, label=name
        )
    by_count.set_xlabel("evaluations")
    by_seconds.set_xlabel("evaluation CPU-seconds (sum of the workers' stage times)")
    for ax in (by_count, by_seconds):
        ax.set_ylabel("hypervolume (accuracy on both proxies)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    by_seconds.set_ylim(by_count.get_ylim())  # before the baseline's result the value is 0
    fig.suptitle("Search efficiency in the Swish space (gain-fair proxies)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _note(figures: dict[str, Any], discriminating: list[dict[str, Any]]) -> str:
    """The run's note, from its own figures: what the proxies can tell apart, how the
    medians compare, and how well the surrogate predicted."""
    parts = [
        "proxy discrimination (SD of a 9-function panel's means over the median seed SD; "
        "whole panel / its better half): "
        + "; ".join(
            f"{r['proxy']}{'' if r['used here'] else ' (previous run)'} "
            f"{r['discrimination (panel)']} / {r['discrimination (better half)']}"
            for r in discriminating
        )
    ]
    fisher = figures["fisher_feature_study"]
    parts.append(
        f"init-time Fisher features ({fisher['completed']} of {fisher['functions']} random "
        f"functions completed on {fisher['proxy']}): {fisher['fisher_cpu_s_median']} CPU-s "
        f"each against {fisher['training_cpu_s_median']} s of training; leave-one-out "
        f"Spearman {fisher['loo_spearman']} (not wired into the strategy)"
    )
    medians = figures["evaluations_to_random_final_hv_median"]
    parts.append(
        "median evaluations to random's final hypervolume: "
        + ", ".join(f"{n} {'-' if v is None else v}" for n, v in medians.items())
        + f" (the goal's quarter: {figures['random_evaluations_for_the_goal'] / 4:g})"
    )
    quality = figures.get("surrogate_prediction_quality")
    if quality:
        parts.append(
            "surrogate out-of-sample Spearman (per proxy, pooled over seeds): "
            f"{quality['out_of_sample_spearman_pooled']}; leave-one-out by members: "
            f"{quality['loo_spearman_by_members']}"
        )
    parts.append(
        "a result cache is shared by all campaigns (equal functions, equal results; each "
        "campaign is charged the shared evaluation's CPU-seconds); a run that never reached "
        "the target counts as above every run that did, and a median is '-' when more than "
        "half never did"
    )
    return ". ".join(parts)


def run(quick: bool = False, results_dir: Path | None = None) -> dict[str, Any]:
    """Run the study; returns the result dict (and writes the PNG plot)."""
    from benchmarks.common import RESULTS_DIR
    from layerforge.search.campaign import CampaignRunner
    from layerforge.search.evaluators import CachingEvaluator, RayEvaluator
    from layerforge.search.queries import create_campaign
    from layerforge.storage import upgrade_database

    config = QUICK if quick else CONFIG
    results_dir = results_dir or RESULTS_DIR
    budget = config["budget"]
    started = time.perf_counter()
    used = list(config["proxies"])
    discriminating = panel_discrimination(
        used + [p for p in config["previous_proxies"] if p not in used],
        tuple(config["panel"]),
        list(config["panel_seeds"]),
        config["gain"],
    )
    for row, proxy in zip(discriminating, used + config["previous_proxies"]):
        row["used here"] = proxy in used
    print(f"search_efficiency: proxy discrimination {discriminating}", file=sys.stderr, flush=True)
    fisher_study = fisher_feature_study(config["proxies"][0], int(config["fisher_functions"]))
    print(f"search_efficiency: Fisher features {fisher_study}", file=sys.stderr, flush=True)
    evaluator = CachingEvaluator(
        RayEvaluator(num_actors=config["workers"], num_cpus=1, task_timeout_s=600)
    )
    traces: dict[str, list[dict[str, Any]]] = {}
    campaign_seconds: dict[str, list[float]] = {}
    controller_cpu: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/efficiency.db"
            upgrade_database(url)
            # seeds outermost: a cut-short run still has every strategy on the same seeds
            runs = [
                (seed, item) for seed in config["seeds"] for item in config["strategies"].items()
            ]
            for index, (seed, (label, strategy)) in enumerate(runs):
                elapsed = time.perf_counter() - started
                if index and elapsed * (index + 1) / index > config.get("max_seconds", math.inf):
                    break  # the next campaign would likely end after the time limit
                spec = _campaign_spec(config, label, strategy, seed)
                campaign_id = create_campaign(url, spec)
                t0, c0 = time.perf_counter(), time.process_time()
                status = CampaignRunner(url, campaign_id, evaluator, poll_s=0.2).run()
                campaign_seconds.setdefault(label, []).append(round(time.perf_counter() - t0, 1))
                controller_cpu.setdefault(label, []).append(round(time.process_time() - c0, 1))
                print(
                    f"search_efficiency: {label} seed {seed}: {status} in "
                    f"{time.perf_counter() - t0:.0f} s, controller CPU "
                    f"{time.process_time() - c0:.0f} s ({evaluator.hits} cache hits, "
                    f"{time.perf_counter() - started:.0f} s so far)",
                    file=sys.stderr,
                    flush=True,
                )
                if status != "completed":
                    raise RuntimeError(f"{label} seed {seed} ended {status}")
                traces.setdefault(label, []).append(campaign_trace(url, campaign_id))
        plot_path = results_dir / "search_efficiency.png"
        results_dir.mkdir(parents=True, exist_ok=True)
        _plot(traces, budget, plot_path)
    finally:
        evaluator.shutdown()
    finals = {n: [r["hypervolume"][-1] for r in runs] for n, runs in traces.items()}
    target = statistics.fmean(finals["random"])
    reach_evals: dict[str, list[int | None]] = {}
    reach_seconds: dict[str, list[float | None]] = {}
    for name, runs in traces.items():
        for trace in runs:
            evaluations, seconds = _reach(trace, target)
            reach_evals.setdefault(name, []).append(evaluations)
            reach_seconds.setdefault(name, []).append(seconds)
    median_evals = {n: _median(v, budget) for n, v in reach_evals.items()}
    median_seconds = {n: _median(v, math.inf) for n, v in reach_seconds.items()}
    surrogate, tpe, rnd = (median_evals.get(k) for k in ("surrogate", "optuna_tpe", "random"))
    # random's final is its mean over seeds, which most of its runs reach only at the end
    # of the budget, if at all: its median is then the budget itself
    random_needs = rnd if rnd is not None else budget
    quarter = surrogate is not None and surrogate <= random_needs / 4
    beats_tpe = surrogate is not None and (tpe is None or surrogate < tpe)
    every_10 = list(range(10, budget + 1, 10))
    figures: dict[str, Any] = {
        "headline": {
            "median evaluations to random's final hypervolume": " / ".join(
                f"{n} {median_evals[n] if median_evals[n] is not None else '-'}" for n in traces
            )
            + f" (of {budget})",
            "median CPU-seconds to it": " / ".join(
                f"{n} {median_seconds[n] if median_seconds[n] is not None else '-'}" for n in traces
            ),
        },
        "proxy_discrimination": discriminating,
        "fisher_feature_study": fisher_study,
        "random_final_hypervolume_target": round(target, 4),
        "evaluations_to_random_final_hv_median": median_evals,
        "evaluations_to_random_final_hv_per_seed": reach_evals,
        "cpu_seconds_to_random_final_hv_median": median_seconds,
        "cpu_seconds_to_random_final_hv_per_seed": reach_seconds,
        "final_hypervolume_mean": {n: round(statistics.fmean(v), 4) for n, v in finals.items()},
        "final_hypervolume_per_seed": {n: [round(x, 4) for x in v] for n, v in finals.items()},
        "total_cpu_seconds_per_seed": {
            n: [round(r["cpu_seconds"][-1], 1) for r in runs] for n, runs in traces.items()
        },
        "hypervolume_mean_every_10_evaluations": {
            "evaluations": every_10,
            **{
                n: [
                    round(
                        statistics.fmean(
                            _value_at(
                                list(range(1, len(r["hypervolume"]) + 1)), r["hypervolume"], x
                            )
                            for r in runs
                        ),
                        4,
                    )
                    for x in every_10
                ]
                for n, runs in traces.items()
            },
        },
        "surrogate_prediction_quality": (
            _prediction_quality(traces["surrogate"]) if "surrogate" in traces else None
        ),
        "best_functions": {
            n: sorted({t for r in runs for t in r["best"]}, reverse=True)[:3]
            for n, runs in traces.items()
        },
        "random_evaluations_for_the_goal": random_needs,
        "surrogate_quarter_of_random": quarter,
        "surrogate_fewer_than_tpe": beats_tpe,
        "seeds_run": {n: len(v) for n, v in finals.items()},
        "cache_hits": evaluator.hits,
        "campaign_seconds": campaign_seconds,
        "controller_cpu_seconds": controller_cpu,
        "total_seconds": round(time.perf_counter() - started, 1),
        "plot": str(plot_path.name),
    }
    return {
        "name": "search_efficiency",
        "goal": GOAL,
        "met": bool(quarter and beats_tpe),
        "note": _note(figures, discriminating),
        "figures": figures,
        "config": config,
    }
