"""Benchmark 6: does the search beat random search, on real proxies?

``evolution``, ``random`` and ``optuna`` (TPE) each run campaigns in the Swish space on the
same real proxies with the same budget, for several seeds. Everything runs through the real
campaign loop, storage and the Ray evaluator pool; functionally equal candidates share one
result across all campaigns (the evaluation is seeded by the proxy, not the campaign, so
the shared result is exact).

Reported: hypervolume against evaluations (mean over seeds, and a PNG plot), the number of
evaluations until the first candidate that beats the ReLU baseline on every proxy, and the
best functions found, re-trained with several seeds and compared to ReLU on the same seeds.

Goals (issue 7): evolution reaches random search's final hypervolume in half the
evaluations; and finds candidates that beat ReLU on both proxies by more than twice the seed
standard deviation.

The baseline in the same process is random search itself (the study's control arm), plus
ReLU re-trained with the same seeds as the winners.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL = (
    "evolution reaches random search's final hypervolume in half the evaluations, and "
    "finds candidates beating ReLU on both proxies by > 2 seed standard deviations"
)

CONFIG: dict[str, Any] = {
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 4, "max_depth": 4},
    # Two proxies that tell activations apart (measured on this machine, 3 seeds each,
    # 20,000 generated mnist1d samples so the validation set is 4,000): a 2x128 MLP for 1000
    # steps (ReLU 71.4 +- 0.3%, SiLU 64.5 +- 0.4, GELU 67.6 +- 0.5, tanh 69.2 +- 1.0,
    # cos(x) - x 75.6 +- 1.2, max(x, sigmoid(x)) 58.8 +- 0.4) and a deeper 3x256 MLP for 600
    # steps (ReLU 72.3 +- 0.7, SiLU 51.4 +- 0.7, GELU 61.5 +- 1.1, tanh 62.0 +- 0.3, cos(x) - x
    # diverges). Longer runs (1500 / 1000 steps) separate them as well and cost 1.6x, which
    # took `make bench` past 30 minutes. Runs before 2026-12-01 used 400 steps on 5,000
    # samples (seed SD about 2%) and a synthetic sequence task on which the built-ins were
    # within 3 points of each other (SD 2%): neither could show a 2-SD win.
    "proxies": [
        {
            "arch": "mlp",
            "dataset": "mnist1d",
            "steps": 1000,
            "batch_size": 128,
            "dataset_options": {"num_samples": 20000},
        },
        {
            "arch": "mlp",
            "dataset": "mnist1d",
            "steps": 600,
            "batch_size": 128,
            "scale": 0.5,
            "dataset_options": {"num_samples": 20000},
        },
    ],
    "rejection": {"quality_steps": 60, "quality_min_accuracy": 0.15},
    "strategies": {
        "evolution": {"name": "evolution", "population": 32, "tournament": 8},
        "random": {"name": "random"},
        "optuna": {"name": "optuna", "sampler": "tpe"},
    },
    "seeds": [0, 1, 2],
    "budget": 150,
    "parallelism": 2,
    "workers": 2,
    "confirm_top": 3,
    "confirm_seeds": [11, 12, 13, 14],
    "builtins_for_spread": ["relu", "silu", "gelu", "tanh"],
}

#: How to read the winners; attached to every result.
NOTE = (
    "The MLP proxies keep PyTorch's default Linear initialisation (kaiming_uniform, a = "
    "sqrt(5)), under which a Linear layer followed by ReLU keeps about a sixth of the "
    "signal's second moment (a third through the weights, half through ReLU). An "
    "activation's output scale at initialisation therefore counts: rescaled members of the "
    "ReLU family (2 relu(x), and x - |x| = 2 min(x, 0), the same function mirrored) beat "
    "ReLU by a wide margin (about 11 points in the committed run) for that reason alone, "
    "and a proxy with He initialisation or normalization layers would not reward them. "
    "Read the winners with that in mind; the hypervolume comparison between strategies is "
    "unaffected, since all of them search the same proxies."
)

QUICK: dict[str, Any] = {
    **CONFIG,
    "proxies": [
        {"arch": "mlp", "dataset": "mnist1d", "steps": 60, "batch_size": 64},
        {"arch": "mlp", "dataset": "digits", "steps": 40, "batch_size": 64},
    ],
    "rejection": {"quality_steps": 20, "quality_min_accuracy": 0.1},
    "strategies": {
        "evolution": {"name": "evolution", "population": 6, "tournament": 3},
        "random": {"name": "random"},
    },
    "seeds": [0],
    "budget": 10,
    "confirm_top": 1,
    "confirm_seeds": [11, 12],
    "builtins_for_spread": ["relu", "tanh"],
}


def _campaign_spec(config: dict[str, Any], strategy: dict[str, Any], seed: int):
    from layerforge.search.spec import validate_spec

    return validate_spec(
        {
            "name": f"efficiency-{strategy['name']}-{seed}",
            "space": config["space"],
            "strategy": strategy,
            "proxies": config["proxies"],
            "objectives": ["accuracy"],
            "rejection": config["rejection"],
            "budget": {"max_candidates": config["budget"], "max_seconds": 10_000},
            "parallelism": config["parallelism"],
            "seed": seed,
        }
    )


def _curve(url: str, campaign_id: int) -> list[tuple[int, float]]:
    from layerforge.storage import get_engine, session_scope
    from layerforge.storage import repository as repo

    with session_scope(get_engine(url), readonly=True) as s:
        return [
            (p.evaluations, p.hypervolume)
            for p in repo.list_hypervolume(s, campaign_id=campaign_id)
        ]


def _first_beating_baseline(url: str, campaign_id: int) -> int | None:
    """Evaluations (candidate order) until one beats the ReLU baseline on every proxy."""
    from sqlalchemy import select

    from layerforge.storage import get_engine, session_scope
    from layerforge.storage import repository as repo
    from layerforge.storage.models import Candidate

    with session_scope(get_engine(url), readonly=True) as s:
        candidates = s.scalars(
            select(Candidate).where(Candidate.campaign_id == campaign_id).order_by(Candidate.seq)
        ).all()
        values = {c.id: repo.get_objective_values(s, candidate_id=c.id) for c in candidates}
        baseline = next((values[c.id] for c in candidates if c.origin == "baseline"), None)
        if not baseline:
            return None
        for c in candidates:
            v = values[c.id]
            if c.origin != "baseline" and v and all(v[k] > baseline[k] for k in baseline):
                return c.seq + 1
    return None


def _value_at(curve: list[tuple[int, float]], evaluations: int) -> float:
    best = 0.0
    for n, hv in curve:
        if n <= evaluations:
            best = hv
    return best


def _mean_curve(curves: list[list[tuple[int, float]]], budget: int) -> list[float]:
    return [statistics.fmean(_value_at(c, n) for c in curves) for n in range(1, budget + 1)]


def _confirm(evaluator, graph_dicts: dict[str, dict], config: dict[str, Any]) -> dict[str, Any]:
    """Re-train each graph on every proxy with the confirmation seeds; mean and SD per proxy."""
    jobs = {}
    rejection = {"stages": ["full"], "measure_costs": False}
    for label, graph in graph_dicts.items():
        for seed in config["confirm_seeds"]:
            job = f"confirm:{label}:{seed}"
            jobs[job] = label
            evaluator.submit(
                job,
                {
                    "graph": graph,
                    "proxies": config["proxies"],
                    "rejection": rejection,
                    "seed": seed,
                    "kind": "transfer",
                },
            )
    accs: dict[str, list[list[float]]] = {label: [] for label in graph_dicts}
    while evaluator.in_flight():
        for outcome in evaluator.poll(1.0):
            label = jobs.get(outcome.job_id)
            if label is None or outcome.status != "ok":
                continue
            # a run that diverged or stopped early reports fewer proxies: those score 0
            got = [float(p.get("val_accuracy") or 0.0) for p in outcome.result.get("proxies", [])]
            accs[label].append(got + [0.0] * (len(config["proxies"]) - len(got)))
    summary = {}
    for label, rows in accs.items():
        per_proxy = list(zip(*rows)) if rows else []
        summary[label] = {
            "runs": len(rows),
            "mean": [statistics.fmean(col) for col in per_proxy],
            "std": [statistics.stdev(col) if len(col) > 1 else 0.0 for col in per_proxy],
        }
    return summary


def _plot(curves: dict[str, list[list[tuple[int, float]]]], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, runs), colour in zip(curves.items(), ["tab:green", "tab:grey", "tab:blue"]):
        for run in runs:
            xs = list(range(1, budget + 1))
            ax.plot(xs, [_value_at(run, n) for n in xs], color=colour, alpha=0.25, lw=1)
        ax.plot(
            range(1, budget + 1),
            _mean_curve(runs, budget),
            color=colour,
            lw=2.5,
            label=f"{name} (mean of {len(runs)})",
        )
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (accuracy on both proxies)")
    ax.set_title("Search efficiency in the Swish space")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(figures: dict[str, Any], budget: int) -> dict[str, Any]:
    """The summary row of the study, derived from its figures."""
    reach = figures["evaluations_to_reach_random_final_hv"]
    reached = " / ".join(str(reach.get(n, "-")) for n in ("evolution", "optuna", "random"))

    def worst_margin(winner: dict[str, Any]) -> float:
        return min(winner["margin_in_2sd_units"] or [0.0])

    evolution = [w for w in figures["best_functions"] if w["found_by"] == "evolution"]
    best = max(evolution, key=worst_margin, default=None)
    versus = "none"
    if best:
        gains = zip(best["confirm_mean"], figures["relu_confirmed"]["mean"])
        versus = (
            f"{best['text']}: "
            + ", ".join(f"{m - r:+.3f}" for m, r in gains)
            + f" accuracy, {worst_margin(best):.1f}x 2 SD"
        )
    return {
        "evaluations to random's final hypervolume (evolution / optuna / random)": f"{reached} of {budget}",
        "evolution's best vs ReLU": versus,
    }


def run(quick: bool = False, results_dir: Path | None = None) -> dict[str, Any]:
    """Run the study; returns the result dict (and writes the PNG plot)."""
    from benchmarks.common import RESULTS_DIR
    from layerforge.grammar import Graph, fingerprint, get_builtin
    from layerforge.search.campaign import CampaignRunner, create_campaign, pareto_of_campaign
    from layerforge.search.evaluators import CachingEvaluator, RayEvaluator
    from layerforge.storage import get_engine, session_scope, upgrade_database
    from layerforge.storage.models import Candidate

    config = QUICK if quick else CONFIG
    results_dir = results_dir or RESULTS_DIR
    started = time.perf_counter()
    evaluator = CachingEvaluator(
        RayEvaluator(num_actors=config["workers"], num_cpus=1, task_timeout_s=600)
    )
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    first_beats: dict[str, list[int | None]] = {}
    best: dict[str, tuple[float, str, dict, str]] = {}
    campaign_seconds: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/efficiency.db"
            upgrade_database(url)
            for name, strategy in config["strategies"].items():
                for seed in config["seeds"]:
                    campaign_id = create_campaign(url, _campaign_spec(config, strategy, seed))
                    t0 = time.perf_counter()
                    status = CampaignRunner(url, campaign_id, evaluator, poll_s=0.5).run()
                    campaign_seconds.setdefault(name, []).append(time.perf_counter() - t0)
                    print(
                        f"search_efficiency: {name} seed {seed}: {status} in "
                        f"{time.perf_counter() - t0:.0f} s ({evaluator.hits} cache hits)",
                        file=sys.stderr,
                        flush=True,
                    )
                    if status != "completed":
                        raise RuntimeError(f"{name} seed {seed} ended {status}")
                    curves.setdefault(name, []).append(_curve(url, campaign_id))
                    first_beats.setdefault(name, []).append(
                        _first_beating_baseline(url, campaign_id)
                    )
                    front = pareto_of_campaign(url, campaign_id)
                    with session_scope(get_engine(url), readonly=True) as s:
                        for point in front["front"] + front["dominated"]:
                            if point["origin"] == "baseline":
                                continue
                            candidate = s.get(Candidate, point["candidate_id"])
                            mean = statistics.fmean(point["values"].values())
                            key = candidate.fingerprint
                            if key not in best or mean > best[key][0]:
                                best[key] = (mean, point["text"], candidate.graph, name)
            budget = config["budget"]
            mean_curves = {name: _mean_curve(runs, budget) for name, runs in curves.items()}
            random_final = mean_curves.get("random", [0.0])[-1]
            reach = {}
            for name, curve in mean_curves.items():
                reach[name] = next(
                    (i + 1 for i, v in enumerate(curve) if v >= random_final - 1e-12), None
                )
            ranked = sorted(best.values(), key=lambda t: -t[0])
            top = ranked[: config["confirm_top"]]
            # the goal is about evolution's finds: its best is confirmed even when outranked
            top += (
                [t for t in ranked if t[3] == "evolution"][:1]
                if all(t[3] != "evolution" for t in top)
                else []
            )
            graphs = {"relu": get_builtin("relu").to_dict()}
            for _mean, text, graph, _origin in top:
                graphs[text] = graph
            for name in config["builtins_for_spread"]:
                graphs.setdefault(f"builtin:{name}", get_builtin(name).to_dict())
            confirmed = _confirm(evaluator, graphs, config)
            relu = confirmed["relu"]
            winners = []
            for mean, text, graph, origin in top:
                c = confirmed[text]
                margins = (
                    [
                        (cm - rm) / max(2 * max(cs, rs), 1e-9)
                        for cm, cs, rm, rs in zip(c["mean"], c["std"], relu["mean"], relu["std"])
                    ]
                    if c["mean"] and relu["mean"]
                    else []
                )
                winners.append(
                    {
                        "text": text,
                        "found_by": origin,
                        "search_mean_accuracy": mean,
                        "confirm_mean": c["mean"],
                        "confirm_std": c["std"],
                        "beats_relu_by_2sd_on_every_proxy": bool(margins)
                        and all(m > 1 for m in margins),
                        "margin_in_2sd_units": margins,
                        "fingerprint": fingerprint(Graph.from_dict(graph)),
                    }
                )
            spread = {
                label.split(":", 1)[1]: confirmed[label]
                for label in confirmed
                if label.startswith("builtin:")
            }
            plot_path = results_dir / "search_efficiency.png"
            results_dir.mkdir(parents=True, exist_ok=True)
            _plot(curves, budget, plot_path)
    finally:
        evaluator.shutdown()
    evolution_reach = reach.get("evolution")
    hv_goal = evolution_reach is not None and evolution_reach <= budget / 2
    winner_goal = any(
        w["beats_relu_by_2sd_on_every_proxy"] and w["found_by"] == "evolution" for w in winners
    )
    figures = {
        "final_hypervolume_mean": {n: c[-1] for n, c in mean_curves.items()},
        "final_hypervolume_per_seed": {
            n: [_value_at(r, budget) for r in runs] for n, runs in curves.items()
        },
        "evaluations_to_reach_random_final_hv": reach,
        # the plotted mean curves, every tenth evaluation, so the figure's numbers are here too
        "hypervolume_mean_every_10_evaluations": {
            "evaluations": list(range(10, budget + 1, 10)),
            **{
                n: [round(c[i - 1], 4) for i in range(10, budget + 1, 10)]
                for n, c in mean_curves.items()
            },
        },
        "evolution_reaches_random_final_in_half": hv_goal,
        "evaluations_until_first_beats_relu": first_beats,
        "best_functions": winners,
        "relu_confirmed": relu,
        "builtin_spread_vs_seed_noise": spread,
        "cache_hits": evaluator.hits,
        "campaign_seconds": campaign_seconds,
        "total_seconds": time.perf_counter() - started,
        "plot": str(plot_path.name),
    }
    return {
        "name": "search_efficiency",
        "goal": GOAL,
        "met": bool(hv_goal and winner_goal),
        "note": NOTE,
        "figures": {"headline": headline(figures, budget), **figures},
        "config": config,
    }
