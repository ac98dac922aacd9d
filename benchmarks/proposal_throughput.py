"""Benchmark 1: proposal throughput of the grammar on one core.

A *proposal* is one new candidate graph as the controller receives it: produced either by
``random_graph`` (a fresh sample) or by ``mutate`` of a parent drawn from a population (EvoNorm's
mutation), then fingerprinted (``grammar.fingerprint``: NumPy on fixed probe inputs) and
deduplicated against every fingerprint seen so far (a set lookup). The stream alternates
random and mutated proposals 1:1; mutated children join the population (capped, oldest out)
so parents stay realistic. Measured for each space: activation/swish, activation/full,
normact/evonorm, normact/full, with ``torch.set_num_threads(1)``.

Baseline (same process, same rng seed): the bare loop of ``random_graph`` alone; the figure
``ratio_to_bare_random_graph`` says how much of the bare generation rate the full pipeline keeps.
Also reported: the rate of each part alone (random_graph, mutate, fingerprint) and the share of
unique fingerprints (and the rate of proposals with a fingerprint not seen before), so a miss
points at the slow part and the dedupe rate is visible: the goal counts every proposal that went
through the pipeline, duplicates included.

Goal: >= 5,000 proposals/s for activation, >= 1,000/s for normact (each preset).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import random
import time
from typing import Any

GOAL = ">= 5,000 proposals/s (activation), >= 1,000/s (normact), one core"
GOALS = {"activation": 5000.0, "normact": 1000.0}
SPACES = [
    ("activation", "swish"),
    ("activation", "full"),
    ("normact", "evonorm"),
    ("normact", "full"),
]
CONFIG = {
    "seconds_per_measure": 3.0,
    "quick_seconds_per_measure": 0.5,
    "population": 64,
    "random_share": 0.5,
    "seed": 0,
    "threads": 1,
    "profile_top": 6,
}


def _rate(fn, seconds: float) -> tuple[float, int]:
    """Calls of ``fn`` per second over about ``seconds`` (checked every 64 calls)."""
    n = 0
    start = time.perf_counter()
    while True:
        for _ in range(64):
            fn()
        n += 64
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed, n


def _pipeline(space, rng: random.Random, population: int, random_share: float):
    from layerforge.grammar import fingerprint, mutate, random_graph

    pop = [random_graph(space, rng) for _ in range(population)]
    seen: set[str] = set()
    stats = {"proposals": 0, "unique": 0}

    def propose() -> None:
        if rng.random() < random_share:
            g = random_graph(space, rng)
        else:
            g = mutate(pop[rng.randrange(len(pop))], space, rng)
            pop.append(g)
            if len(pop) > population:
                pop.pop(0)
        fp = fingerprint(g)
        stats["proposals"] += 1
        if fp not in seen:
            seen.add(fp)
            stats["unique"] += 1

    return propose, stats


def _profile(space, seconds: float, top: int) -> list[str]:
    """The functions that dominate the pipeline (cumulative time), for the report."""
    rng = random.Random(1)
    propose, _ = _pipeline(space, rng, CONFIG["population"], CONFIG["random_share"])
    prof = cProfile.Profile()
    prof.enable()
    _rate(propose, seconds)
    prof.disable()
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    rows = []
    for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        where = file.rsplit("/", 1)[-1] if file != "~" else "builtin"
        rows.append((tt, f"{where}:{func}"))
    total = sum(t for t, _ in rows) or 1.0
    rows.sort(reverse=True)
    return [f"{name} {t / total:.0%} self-time" for t, name in rows[:top]]


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    from layerforge.grammar import fingerprint, make_space, mutate, random_graph

    torch.set_num_threads(CONFIG["threads"])
    secs = CONFIG["quick_seconds_per_measure"] if quick else CONFIG["seconds_per_measure"]
    rows = []
    for kind, preset in SPACES:
        space = make_space(kind, preset)
        rng = random.Random(CONFIG["seed"])
        bare, _ = _rate(lambda space=space, rng=rng: random_graph(space, rng), secs)
        parents = [random_graph(space, rng) for _ in range(CONFIG["population"])]
        it = iter(range(1 << 62))
        mut, _ = _rate(
            lambda p=parents, it=it, space=space, rng=rng: mutate(p[next(it) % len(p)], space, rng),
            secs / 2,
        )
        it2 = iter(range(1 << 62))
        fp, _ = _rate(lambda p=parents, it=it2: fingerprint(p[next(it) % len(p)]), secs / 2)
        rng = random.Random(CONFIG["seed"])
        propose, stats = _pipeline(space, rng, CONFIG["population"], CONFIG["random_share"])
        rate, n = _rate(propose, secs)
        rows.append(
            {
                "space": f"{kind}/{preset}",
                "kind": kind,
                "proposals_per_s": round(rate, 1),
                "goal_per_s": GOALS[kind],
                "met": rate >= GOALS[kind],
                "bare_random_graph_per_s": round(bare, 1),
                "ratio_to_bare_random_graph": round(rate / bare, 4),
                "mutate_per_s": round(mut, 1),
                "fingerprint_per_s": round(fp, 1),
                "unique_share": round(stats["unique"] / max(1, stats["proposals"]), 4),
                "new_fingerprints_per_s": round(
                    rate * stats["unique"] / max(1, stats["proposals"]), 1
                ),
                "proposals_timed": n,
            }
        )
    profiles = {}
    for row, (kind, preset) in zip(rows, SPACES):
        if not row["met"] or not quick:
            profiles[row["space"]] = _profile(
                make_space(kind, preset), min(secs, 1.0), CONFIG["profile_top"]
            )
    met = all(r["met"] for r in rows)
    slowest = min(rows, key=lambda r: r["proposals_per_s"] / r["goal_per_s"])
    return {
        "name": "proposal_throughput",
        "goal": GOAL,
        "met": met,
        "figures": {
            "rows": rows,
            "profiles": profiles,
            "headline": {r["space"]: r["proposals_per_s"] for r in rows},
            "worst_space": slowest["space"],
            "worst_ratio_to_goal": round(slowest["proposals_per_s"] / slowest["goal_per_s"], 3),
        },
        "config": {**CONFIG, "quick": quick, "spaces": [f"{k}/{p}" for k, p in SPACES]},
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick=True), indent=2))
