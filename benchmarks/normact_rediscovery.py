"""Benchmark 10: rediscovery in the norm-act space, on the small-batch proxy preset.

An ``evolution`` campaign in the EvoNorm op space (the ``evonorm`` preset: no ``sub``, so
BN-ReLU itself is outside it, as in the EvoNorm paper) searched on the proxy preset
``normact-small-batch`` (workers/presets.py: the CPU-scale ResNet on the generated
``gratings`` task at batch 2, lr 0.01, 1200 steps, chosen by B10a,
benchmarks/normact_fidelity.py, as a setting where the panel spreads, a linear network is at
chance and a layer without batch statistics beats BN-ReLU), through the real campaign loop,
storage, evaluator and transfer stage. The search starts from random graphs and proposes only
mutations of what it evaluated. The held-out proxy is the same network, batch and schedule on
a *different* generated task (other samples and other class orientations: ``data_seed``);
the transfer stage re-evaluates the top K and the BN-ReLU baseline there with 3 seeds, and
search/confirm.py says which beat BN-ReLU by more than 2 pooled seed SDs.

The linear-network control (``x * weight + bias``) is trained on the same held-out runs: on
the ``synthetic`` task of the preset before it scored above every built-in, and the search's
"winners" there were activations with a learnt affine and no statistic (``tanh(x) * weight
+ bias``). On gratings a linear network is at chance, so a winner must add something. A
winner counts as a rediscovery only when it beats BN-ReLU, beats the linear network, and
uses a statistic (:func:`normalizes`).

EvoNorm-B0 and EvoNorm-S0 are never given to the search; they are trained on the same
held-out runs (same payload shape, same seeds) afterwards as references. Per winner:
how close it is to each of them in *structure* (Jaccard similarity of the sets of distinct
sub-expressions of the pruned graphs: 1 is the same expression tree, 0 shares nothing but
``x``; and of their op sets, statistics by axis: which ingredients they share) and in *score* (mean held-out accuracy minus the reference's, in points and pooled SDs).

Two arms, two campaigns each, side by side: the whole ``evonorm`` space, and the same space
with ``require_statistic`` (search/spec.py), where the search proposes only layers that use a
statistic. The first run had only the first arm: its confirmed winners were activations with
a learnt affine (the shallow CPU ResNet trains without normalization at batch 2).

Goal (issue 15, B10): at least one found layer beats BN-ReLU by > 2 SD at that batch size on
the held-out proxy, and (so that it is a norm-act layer and not an artifact of the proxy)
beats the linear network by > 2 SD and uses a statistic.
"""

from __future__ import annotations

import sys
import tempfile
import time
from typing import Any

from layerforge.workers.presets import GRATINGS_OPTIONS

GOAL = (
    "a found norm-act layer beats BN-ReLU by > 2 pooled SD (3 seeds) at the preset's batch "
    "size on a held-out proxy, beats the linear network (x * weight + bias) there by > 2 "
    "pooled SD and uses a statistic (mean / second moment / std over some axis)"
)
CONFIG: dict[str, Any] = {
    "space": {"kind": "normact", "ops": "evonorm", "max_nodes": 8, "max_depth": 8},
    # most random graphs are rejected (51 of 64 on the preset before), and a rejected
    # candidate never joins the population: a tournament of 4 starts selecting after 4
    # completions, the population of 16 keeps the last 16 of them
    "strategy": {"name": "evolution", "population": 16, "tournament": 4},
    "proxies": [{"preset": "normact-small-batch"}],
    # the same network, batch and schedule on a different generated task (other class
    # prototypes: data_seed), so a winner must carry over to data the search never saw
    "held_out": [
        {
            "preset": "normact-small-batch",
            "dataset_options": {**GRATINGS_OPTIONS, "data_seed": 99},
        }
    ],
    "lr_factors": [1.0],
    # the quality check looks at half the run (a prefix of it: nothing is trained twice): on
    # gratings a layer that has learnt nothing predicts about one class in 8 (0.125)
    "rejection": {"quality_steps": 600, "quality_min_accuracy": 0.15},
    # proposals, and each search's wall-clock limit (then the transfer stage runs): 200
    # proposals took 13 minutes of a 2-core machine shared with other jobs
    "budget": 200,
    "search_seconds": 900,
    "top_k": 3,
    # B10a trains the same panel on the preset with 3 seeds (normact_fidelity.json); the
    # campaign's own 2-seed report would repeat it, more CPU than this 2-core machine lends
    "fidelity": {"enabled": False},
    "transfer_seeds": 3,
    # two campaigns per arm: whether what one finds (or misses) is the search's or one seed's
    # luck
    "campaign_seeds": [0, 1],
    # the whole space, and (after the first run found only activations with an affine there)
    # the space that requires a statistic (space.require_statistic): what the search finds
    # among layers that normalize
    "arms": {"any layer": {}, "statistic required": {"require_statistic": True}},
    # campaigns run side by side, one per process and core
    "processes": 2,
    "references": ["evonorm_b0", "evonorm_s0"],
    # no normalization, no activation: a linear network (B10a: near chance on gratings; on
    # the synthetic preset before it scored 72.3%, above every built-in). A winner that does
    # not beat it has found a layer that hurts training less than BN-ReLU at batch 2, not one
    # that adds what a linear network lacks
    "controls": {"linear network (x * weight + bias)": "x * weight + bias"},
    "quick_settings": {
        "budget": 6,
        "steps": 20,
        "held_out_steps": 20,
        "top_k": 1,
        "quality_min_accuracy": 0.0,
        "campaign_seeds": [0],
    },
    "threads": 1,
}


def _spec(config: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    return {
        "name": f"normact-rediscovery-{arm.replace(' ', '-')}-{seed}",
        "space": {**config["space"], **config["arms"][arm]},
        "strategy": config["strategy"],
        "proxies": config["proxies"],
        "objectives": ["accuracy"],
        "budget": {"max_candidates": config["budget"], "max_seconds": config["search_seconds"]},
        "rejection": config["rejection"],
        "fidelity": config["fidelity"],
        "transfer": {
            "top_k": config["top_k"],
            "seeds": config["transfer_seeds"],
            "proxies": config["held_out"],
            "lr_factors": config["lr_factors"],
        },
        "parallelism": 1,
        "seed": seed,
    }


def subexpressions(graph: Any) -> set[str]:
    """Structural hashes of the live non-leaf nodes of the pruned graph: its distinct
    sub-expressions (commutative inputs sorted, so ``a + b`` and ``b + a`` are one)."""
    pruned = graph.pruned()
    return {
        h
        for node, h, live in zip(pruned.nodes, pruned.node_hashes, pruned.live, strict=True)
        if live and not node.is_leaf
    }


def normalizes(graph: Any) -> bool:
    """Whether the layer uses a statistic (:func:`grammar.uses_statistic`)."""
    from layerforge.grammar import uses_statistic

    return uses_statistic(graph)


def structural_similarity(a: Any, b: Any) -> float:
    """Jaccard similarity of two graphs' sub-expression sets (1: the same expression)."""
    sa, sb = subexpressions(a), subexpressions(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def op_labels(graph: Any) -> set[str]:
    """The ops a graph's live nodes use, statistics labelled with their axis (``std:batch``)."""
    pruned = graph.pruned()
    labels = set()
    for node, live in zip(pruned.nodes, pruned.live, strict=True):
        if live and not node.is_leaf:
            axis = getattr(node, "axis", None)
            labels.add(f"{node.op}:{axis}" if axis else node.op)
    return labels


def op_similarity(a: Any, b: Any) -> float:
    """Jaccard similarity of two graphs' op sets (statistics by axis): which ingredients they
    share, whatever the wiring."""
    la, lb = op_labels(a), op_labels(b)
    return len(la & lb) / len(la | lb) if la | lb else 1.0


def real_winner(row: dict[str, Any]) -> bool:
    """Whether a transfer row is a rediscovery: a found layer (not the baseline) that beats
    BN-ReLU by > 2 pooled SD on every held-out proxy, beats the linear-network control by
    > 2 pooled SD, and uses a statistic."""
    linear = [v for k, v in row.items() if k.startswith("score vs linear network")]
    return (
        row["origin"] != "baseline"
        and row["beats BN-ReLU"] is True
        and bool(row["normalizes (uses a statistic)"])
        and bool(linear)
        and all((v.get("pooled_sds") or 0) > 2 for v in linear)
    )


def _gap(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    pooled = (((mine["sd"] or 0) ** 2 + (theirs["sd"] or 0) ** 2) / 2) ** 0.5
    gap = mine["mean"] - theirs["mean"]
    return {"points": 100 * gap, "pooled_sds": gap / pooled if pooled > 0 else None}


def _references(
    spec: Any, campaign_id: int, evaluator: Any, graphs: dict[str, Any]
) -> dict[str, Any]:
    """Layers never given to the search (EvoNorm-B0/S0, the linear-network control) trained
    on the transfer stage's held-out runs with its seeds and payload shape
    (search/campaign.py's ``_payload``), as (held-out run stats) per label."""
    from layerforge.search import confirm
    from layerforge.search.campaign import worker_rejection_config
    from layerforge.search.spec import with_gain

    held = confirm.held_out_runs(spec.transfer.proxies or spec.proxies, spec.transfer.lr_factors)
    labels = list(graphs)
    for index, label in enumerate(labels):
        for seed in range(spec.transfer.seeds):
            evaluator.submit(
                f"reference:{index}:{seed}",
                {
                    "graph": graphs[label].to_dict(),
                    "proxies": with_gain(held, spec.gain),
                    "rejection": worker_rejection_config(spec, transfer=True),
                    "seed": seed,
                    "kind": "transfer",
                    "campaign_id": campaign_id,
                },
            )
    runs: dict[str, list[list[float | None]]] = {n: [] for n in labels}
    while evaluator.in_flight():
        for outcome in evaluator.poll(0.5):
            name = labels[int(outcome.job_id.split(":")[1])]
            proxies = (outcome.result or {}).get("proxies") or []
            accuracies = [p.get("val_accuracy") for p in proxies]
            runs[name].append(confirm.scored(accuracies, len(held)))
    return {n: confirm.proxy_stats(r, len(held)) for n, r in runs.items()}


def _run_campaign(config: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    """One campaign of ``arm`` with campaign seed ``seed`` on a database of its own, then its
    transfer ranking, the references and controls on its held-out runs."""
    import torch

    from layerforge.grammar import get_builtin, parse
    from layerforge.search.campaign import CampaignRunner
    from layerforge.search.evaluators import CachingEvaluator, LocalEvaluator
    from layerforge.search.queries import create_campaign, transfer_ranking
    from layerforge.search.spec import validate_spec
    from layerforge.storage import get_engine, session_scope, upgrade_database
    from layerforge.storage import repository as repo

    torch.set_num_threads(config["threads"])
    references = {n: get_builtin(n) for n in config["references"]}
    controls = {label: parse(text, "normact") for label, text in config["controls"].items()}
    evaluator = CachingEvaluator(LocalEvaluator())
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/normact_rediscovery.db"
        upgrade_database(url)
        spec = validate_spec(_spec(config, arm, seed))
        campaign_id = create_campaign(url, spec)
        started = time.perf_counter()
        status = CampaignRunner(url, campaign_id, evaluator, poll_s=0.2).run()
        seconds = time.perf_counter() - started
        print(
            f"normact_rediscovery: {arm}, seed {seed}: {status} in {seconds:.0f} s",
            file=sys.stderr,
        )
        ranking = transfer_ranking(url, campaign_id)
        with session_scope(get_engine(url), readonly=True) as s:
            rows = repo.list_candidates(s, campaign_id=campaign_id, limit=10_000)
            report = repo.latest_event(s, campaign_id=campaign_id, kind="fidelity")
            counts = {
                "proposed": len(rows),
                "duplicates": sum(c.status == "duplicate" for c in rows),
                "rejected": sum(c.status == "rejected" for c in rows),
                "completed": sum(c.status == "completed" for c in rows),
            }
        ref_stats = _references(spec, campaign_id, evaluator, {**references, **controls})
        baseline = next((r for r in ranking if r["origin"] == "baseline"), None)
        winners = []
        for r in ranking:
            graph = parse(r["text"], "normact")
            row: dict[str, Any] = {
                "text": r["text"],
                "origin": r["origin"],
                "held-out": "; ".join(
                    f"{100 * p['mean']:.1f} ± {100 * (p['sd'] or 0):.1f}"
                    for p in r["proxies"]
                    if p["mean"] is not None
                ),
                "margins vs BN-ReLU (pooled SDs)": r.get("margins"),
                "beats BN-ReLU": r.get("beats_baseline"),
                "normalizes (uses a statistic)": normalizes(graph),
            }
            for label in controls:
                if r["proxies"][0]["mean"] is not None and ref_stats[label][0]["mean"] is not None:
                    row[f"score vs {label} (points, SDs)"] = _gap(
                        r["proxies"][0], ref_stats[label][0]
                    )
            for name, ref in references.items():
                row[f"structure vs {name}"] = round(structural_similarity(graph, ref), 3)
                row[f"ops vs {name}"] = round(op_similarity(graph, ref), 3)
                if r["proxies"][0]["mean"] is not None and ref_stats[name][0]["mean"] is not None:
                    row[f"score vs {name} (points, SDs)"] = _gap(
                        r["proxies"][0], ref_stats[name][0]
                    )
            winners.append(row)
        reference_rows = []
        for name, stats in ref_stats.items():
            if name in controls:
                continue
            entry: dict[str, Any] = {
                "reference": name,
                "held-out": f"{100 * stats[0]['mean']:.1f} ± {100 * (stats[0]['sd'] or 0):.1f}"
                if stats[0]["mean"] is not None
                else None,
            }
            if baseline is not None and stats[0]["mean"] is not None:
                entry["vs BN-ReLU (points, SDs)"] = _gap(stats[0], baseline["proxies"][0])
            reference_rows.append(entry)
        control_rows = [
            {
                "control": label,
                "held-out": f"{100 * ref_stats[label][0]['mean']:.1f} ± "
                f"{100 * (ref_stats[label][0]['sd'] or 0):.1f}"
                if ref_stats[label][0]["mean"] is not None
                else None,
                **(
                    {"vs BN-ReLU (points, SDs)": _gap(ref_stats[label][0], baseline["proxies"][0])}
                    if baseline is not None and ref_stats[label][0]["mean"] is not None
                    else {}
                ),
            }
            for label in controls
        ]
        fidelity = report.payload if report is not None else {}
        confirmed = [
            w["text"] for w in winners if w["beats BN-ReLU"] is True and w["origin"] != "baseline"
        ]
        return {
            "arm": arm,
            "seed": seed,
            "status": status,
            "seconds": round(seconds, 1),
            **counts,
            "confirmed (beat BN-ReLU by > 2 SD)": confirmed,
            "fidelity discrimination": [
                p.get("discrimination_ratio") for p in fidelity.get("proxies", [])
            ],
            "fidelity tau": [a.get("kendall_tau") for a in fidelity.get("rank_agreement", [])],
            "fidelity warnings": fidelity.get("warnings", []),
            "fidelity panel (held-out means)": {
                n: round(100 * v["mean"], 1)
                for p in fidelity.get("proxies", [])[-1:]
                for n, v in p.get("per_function", {}).items()
            },
            "transfer": winners,
            "references": reference_rows,
            "controls": control_rows,
        }


def _headline(campaigns: list[dict[str, Any]], references: list[str]) -> dict[str, Any]:
    """The summary of some campaigns (one arm's): how many found a layer beating BN-ReLU,
    which count as rediscoveries, and how close the winners come to EvoNorm."""
    real = [
        {"seed": c["seed"], "text": w["text"], "held-out": w["held-out"]}
        for c in campaigns
        for w in c["transfer"]
        if real_winner(w)
    ]
    best_similarity = {
        name: max(
            (
                w[f"structure vs {name}"]
                for c in campaigns
                for w in c["transfer"]
                if w["origin"] != "baseline"
            ),
            default=None,
        )
        for name in references
    }
    return {
        "campaigns": len(campaigns),
        "campaigns with a layer beating BN-ReLU": sum(
            bool(c["confirmed (beat BN-ReLU by > 2 SD)"]) for c in campaigns
        ),
        "closest structure to EvoNorm (Jaccard)": best_similarity,
        "winners that count (beat BN-ReLU and the linear network by > 2 SD, use a statistic)": real,
        "confirmed winners that normalize (use a statistic)": sum(
            bool(w["normalizes (uses a statistic)"])
            for c in campaigns
            for w in c["transfer"]
            if w["beats BN-ReLU"] is True and w["origin"] != "baseline"
        ),
        "confirmed winners beating the linear network by > 2 SD": sum(
            (v.get("pooled_sds") or 0) > 2
            for c in campaigns
            for w in c["transfer"]
            if w["beats BN-ReLU"] is True and w["origin"] != "baseline"
            for k, v in w.items()
            if k.startswith("score vs linear network")
        ),
        "EvoNorm references vs BN-ReLU on the held-out run (pooled SDs)": {
            r["reference"]: round(r["vs BN-ReLU (points, SDs)"]["pooled_sds"], 2)
            for c in campaigns
            for r in c["references"]
            if r.get("vs BN-ReLU (points, SDs)", {}).get("pooled_sds") is not None
        },
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Run the campaigns (every arm, every seed); return the confirmed winners and their
    distance to EvoNorm."""
    import multiprocessing
    import os

    config = dict(CONFIG)
    if quick:
        q = config["quick_settings"]
        config["budget"], config["top_k"] = q["budget"], q["top_k"]
        config["campaign_seeds"] = q["campaign_seeds"]
        config["proxies"] = [{**p, "steps": q["steps"]} for p in config["proxies"]]
        config["held_out"] = [{**p, "steps": q["held_out_steps"]} for p in config["held_out"]]
        config["rejection"] = {
            **config["rejection"],
            "quality_min_accuracy": q["quality_min_accuracy"],
        }
    jobs = [(config, arm, seed) for arm in config["arms"] for seed in config["campaign_seeds"]]
    t0 = time.perf_counter()
    processes = min(len(jobs), config["processes"], os.cpu_count() or 1)
    if quick or processes < 2:
        campaigns = [_run_campaign(*job) for job in jobs]
    else:
        # one campaign per process, each on one thread with its own database
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            campaigns = pool.starmap(_run_campaign, jobs)
    references = config["references"]
    real = [
        {"arm": c["arm"], "seed": c["seed"], "text": w["text"], "held-out": w["held-out"]}
        for c in campaigns
        for w in c["transfer"]
        if real_winner(w)
    ]
    met = (not quick) and bool(real)
    return {
        "name": "normact_rediscovery",
        "goal": GOAL,
        "met": met,
        "quick": quick,
        "config": config,
        "figures": {
            "headline": {
                arm: _headline([c for c in campaigns if c["arm"] == arm], references)
                for arm in config["arms"]
            },
            "campaigns": [
                {k: v for k, v in c.items() if k not in ("transfer", "references", "controls")}
                for c in campaigns
            ],
            "transfer (every campaign)": [
                {"arm": c["arm"], "seed": c["seed"], **w} for c in campaigns for w in c["transfer"]
            ],
            "EvoNorm references on the held-out runs": [
                {"arm": c["arm"], "seed": c["seed"], **r}
                for c in campaigns
                for r in c["references"]
            ],
            "controls on the held-out runs": [
                {"arm": c["arm"], "seed": c["seed"], **r} for c in campaigns for r in c["controls"]
            ],
            "seconds": time.perf_counter() - t0,
        },
        "note": (
            "the campaign's own fidelity panel is off (config.fidelity): B10a trains the same "
            "panel on the same preset with 3 seeds; "
            "structure: Jaccard similarity of distinct sub-expressions (1 = same expression "
            "tree); ops: Jaccard similarity of the op sets, statistics by axis; EvoNorm-B0/S0 are references trained after the search, never proposed to it"
        ),
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    result = run(quick="--quick" in sys.argv)
    print(json.dumps(result["figures"], indent=1, default=str)[:8000])
