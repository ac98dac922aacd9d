"""Benchmark 8: proxy fidelity of the default activation proxy, raw against gain-fair.

Can the search proxy tell activation functions apart, and does its ranking hold on a larger
held-out proxy? A panel of distinct functions (built-ins, the Swish beta family, and the
rescaled / mirrored ReLUs that version 0.1's proxies rewarded) is trained through the
workers' own protocol (``workers.rejection.evaluate_candidate``, static and full stages) on:

* the search proxy P1: the default activation proxy (2x128 MLP on mnist1d), and
* the held-out proxy H: a 3x256 MLP, 3000 steps, 40k mnist1d samples,

each with several seeds, once with ``gain: raw`` (version 0.1: the raw function, PyTorch's
default init) and once with ``gain: fair`` (the default now: f / gamma_f, N(0, 1/fan_in)).

Figures per mode: mean and SD per function and proxy; the discrimination ratio of each proxy
(SD of the panel's means / median seed SD: below ~3 the proxy cannot tell the panel apart);
Kendall's tau between P1's and H's means; and the known-result checks: do SiLU and GELU beat
ReLU by more than 2 pooled seed SDs, and does 2·relu score like relu.

Goal: gain-fair tau >= 0.7 over at least 12 distinct functions.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

GOAL = "gain-fair Kendall tau(P1, held-out H) >= 0.7 over >= 12 distinct functions"
CONFIG: dict[str, Any] = {
    "functions": [
        "max(x, 0)",
        "x * sigmoid(x)",
        "x * sigmoid(1.5 * x)",
        "gelu(x)",
        "tanh(x)",
        "elu(x)",
        "softplus(x)",
        "max(x, 0.01 * x)",
        "x * tanh(softplus(x))",
        "sigmoid(x)",
        "abs(x)",
        "x * x",
        "sin(x)",
        "2 * max(x, 0)",
        "x - abs(x)",
        "x * sigmoid(3 * x)",
    ],
    "search_proxy": {
        "arch": "mlp",
        "dataset": "mnist1d",
        "steps": 1000,
        "batch_size": 128,
        "lr": 0.1,
        "dataset_options": {"num_samples": 20000},
    },
    "held_out_proxy": {
        "arch": "mlp",
        "dataset": "mnist1d",
        "steps": 3000,
        "batch_size": 128,
        "lr": 0.1,
        "scale": 0.5,
        "dataset_options": {"num_samples": 40000},
    },
    "seeds": [0, 1, 2],
    "modes": ["raw", "fair"],
    "quick_settings": {"functions": 4, "steps": 60, "held_out_steps": 100, "seeds": [0, 1]},
    "threads": 1,
}


DOUBLED = "2 * max(x, 0) vs max(x, 0)"
#: A function "trains" on a proxy when its mean accuracy there is at least this (mnist1d has
#: 10 classes: a diverged run scores 0, one that learnt nothing about 0.1).
TRAINS = 0.2


def _accuracy(text: str, proxy: dict[str, Any], mode: str, seed: int, cache: Any) -> float:
    from layerforge.workers.rejection import evaluate_candidate

    result = evaluate_candidate(
        {"text": text, "space": "activation"},
        [{**proxy, "seed": seed, "gain": mode}],
        {"stages": ["static", "full"], "measure_costs": False},
        datasets_cache=cache,
    )
    proxies = result.get("proxies") or []
    if result["status"] != "completed" or not proxies:
        return 0.0  # a diverged or failed run scores as chance-or-worse, never skipped
    return float(proxies[0]["val_accuracy"])


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def _proxy_figures(table: dict[str, list[float]]) -> dict[str, Any]:
    """Per-function mean and SD, and the proxy's discrimination (search/fidelity.py's, the
    figure every campaign's report gives)."""
    from layerforge.search.fidelity import discrimination

    return {"per_function": {f: _stats(v) for f, v in table.items()}, **discrimination(table)}


def _beats(stats: dict[str, dict[str, float]], a: str, b: str) -> dict[str, Any]:
    """Whether ``a``'s mean exceeds ``b``'s by more than two pooled seed SDs."""
    pooled = ((stats[a]["sd"] ** 2 + stats[b]["sd"] ** 2) / 2) ** 0.5
    gap = stats[a]["mean"] - stats[b]["mean"]
    return {"gap": gap, "pooled_sd": pooled, "beats": gap > 2 * pooled}


def run(quick: bool = False) -> dict[str, Any]:
    """Train the panel on both proxies in both modes; return the fidelity figures."""
    import torch

    from layerforge.search.fidelity import kendall_tau
    from layerforge.workers.datasets import DatasetCache

    torch.set_num_threads(CONFIG["threads"])
    functions = list(CONFIG["functions"])
    search, held = dict(CONFIG["search_proxy"]), dict(CONFIG["held_out_proxy"])
    seeds = list(CONFIG["seeds"])
    if quick:
        q = CONFIG["quick_settings"]
        functions = functions[: q["functions"]]
        search["steps"], held["steps"], seeds = q["steps"], q["held_out_steps"], q["seeds"]
    cache = DatasetCache()
    t0 = time.perf_counter()
    modes: dict[str, Any] = {}
    for mode in CONFIG["modes"]:
        tables: dict[str, dict[str, list[float]]] = {"search": {}, "held_out": {}}
        for text in functions:
            for name, proxy in (("search", search), ("held_out", held)):
                tables[name][text] = [_accuracy(text, proxy, mode, s, cache) for s in seeds]
        per_proxy = {name: _proxy_figures(table) for name, table in tables.items()}
        s_means = [per_proxy["search"]["per_function"][f]["mean"] for f in functions]
        h_means = [per_proxy["held_out"]["per_function"][f]["mean"] for f in functions]
        tau = kendall_tau(s_means, h_means)
        # the same, over the functions that train on both proxies (a run that diverges or
        # stays near chance says how stable a function is, not how good: the funnel's
        # stability stage, not the proxy, is meant to catch that)
        trained = [
            i for i, (a, b) in enumerate(zip(s_means, h_means, strict=True)) if min(a, b) >= TRAINS
        ]
        tau_trained = kendall_tau([s_means[i] for i in trained], [h_means[i] for i in trained])
        checks = {}
        for name in ("search", "held_out"):
            stats = per_proxy[name]["per_function"]
            checks[name] = {
                f"{a} vs max(x, 0)": _beats(stats, a, "max(x, 0)")
                for a in ("x * sigmoid(x)", "gelu(x)", "2 * max(x, 0)")
                if a in stats
            }
        modes[mode] = {
            "proxies": per_proxy,
            "kendall_tau": tau,
            "kendall_tau_trained": tau_trained,
            "trained_functions": [functions[i] for i in trained],
            "checks": checks,
        }
    return summarize(modes, functions, seeds, quick, time.perf_counter() - t0)


def summarize(
    modes: dict[str, Any], functions: list[str], seeds: list[int], quick: bool, seconds: float
) -> dict[str, Any]:
    """The result: tables for RESULTS.md (per function, per proxy, the known-result checks)
    and the raw per-mode figures under ``modes``."""

    def cell(mode: str, proxy: str, fn: str) -> str:
        st = modes[mode]["proxies"][proxy]["per_function"][fn]
        return f"{100 * st['mean']:.1f} ± {100 * st['sd']:.1f}"

    labels = {"search": "P1", "held_out": "H"}
    rows = [
        {
            "function": fn,
            **{
                f"{labels[p]} {m}": cell(m, p, fn)
                for m in CONFIG["modes"]
                for p in ("search", "held_out")
            },
        }
        for fn in functions
    ]
    proxies = [
        {
            "mode": m,
            "proxy": labels[p],
            "discrimination": modes[m]["proxies"][p]["discrimination_ratio"],
            "panel spread (points)": 100 * modes[m]["proxies"][p]["panel_spread_sd"],
            "median seed SD (points)": 100 * modes[m]["proxies"][p]["median_seed_sd"],
            "Kendall tau P1 vs H": modes[m]["kendall_tau"],
        }
        for m in CONFIG["modes"]
        for p in ("search", "held_out")
    ]
    checks = [
        {
            "mode": m,
            "proxy": labels[p],
            "comparison": name,
            "gap (points)": 100 * c["gap"],
            "pooled SD (points)": 100 * c["pooled_sd"],
            "> 2 pooled SD": c["beats"],
        }
        for m in CONFIG["modes"]
        for p in ("search", "held_out")
        for name, c in modes[m]["checks"][p].items()
    ]
    fair_tau = modes["fair"]["kendall_tau"]
    return {
        "name": "proxy_fidelity",
        "goal": GOAL,
        "met": (not quick) and fair_tau >= 0.7 and len(functions) >= 12,
        "quick": quick,
        "config": {**CONFIG, "functions_run": functions, "seeds_run": seeds},
        "figures": {
            "headline": {
                "tau raw": round(modes["raw"]["kendall_tau"], 3),
                "tau fair": round(fair_tau, 3),
                "tau fair over the functions that train on both proxies": (
                    f"{modes['fair']['kendall_tau_trained']:.3f} "
                    f"({len(modes['fair']['trained_functions'])} of {len(functions)})"
                ),
                "SiLU, GELU beat ReLU (fair, P1 and H)": all(
                    c["> 2 pooled SD"]
                    for c in checks
                    if c["mode"] == "fair" and "2 *" not in c["comparison"]
                ),
                "2·relu beats ReLU (raw / fair)": " / ".join(
                    str(modes[m]["checks"]["search"].get(DOUBLED, {}).get("beats", "not run"))
                    for m in ("raw", "fair")
                ),
            },
            "accuracy per function (%, mean ± SD over seeds)": rows,
            "proxies": proxies,
            "known results": checks,
            "seconds": seconds,
        },
        "modes": modes,
        "note": (
            "accuracy 0 is a run that diverged (NaN loss): on the deeper held-out MLP abs(x) "
            "and x*x diverge and sin(x) stays at chance (fair mode), while on P1 they train, "
            "so the goal's tau turns on them: on 2026-12-03 x*x also diverged on P1 in 2 of 3 "
            "seeds (tau fair 0.727; 0.693 without x*x), on 2026-12-07 (another machine) in "
            "none. Over the functions that train on both proxies tau fair was 0.927 on "
            "2026-12-03 (this run's is in the headline). The stability stage rejects x*x "
            "before any training, not abs(x) or sin(x). Fair mode makes 2·relu and x - |x| "
            "the same function as relu (identical runs), so the panel has fewer distinct "
            "functions in fair mode than texts and tau counts them as ties"
        ),
    }
