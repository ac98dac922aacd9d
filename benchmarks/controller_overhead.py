"""Benchmark 4: controller and storage overhead with a zero-cost simulated evaluator.

Candidates per second through the whole loop (ask, store candidate + evaluation, dispatch,
store result + objectives + hypervolume point + events, tell) with 1,000 and 10,000
simulated workers in flight, on SQLite and PostgreSQL. The baseline in the same process is
the bare strategy loop (ask + tell with no storage), so the ratio shows what storage costs.
Goal: >= 500 candidates/s on SQLite.

The SQLite rows run twice: with ``evolution`` (the goal's rows, as before) and with the
``surrogate`` strategy (issue 16: its fits and screening included), each against its own
bare strategy loop, so the surrogate's cost is its rate and its ratio to evolution's.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from typing import Any

GOAL = ">= 500 candidates/s through the whole loop on SQLite (evolution and surrogate)"

#: The surrogate's rows: the default settings of its spec section, 2,000 candidates with 100
#: and 1,000 workers (10,000 in flight would propose all 2,000 before a single result, so it
#: would never fit: exploration only, which the evolution rows already measure).
SURROGATE = {"name": "surrogate"}
SURROGATE_CANDIDATES = 2000
SURROGATE_WORKERS = [100, 1000]

SPEC: dict[str, Any] = {
    "name": "controller-bench",
    "space": {"kind": "activation", "ops": "swish", "max_nodes": 8},
    "strategy": {"name": "evolution", "population": 256, "tournament": 16},
    "proxies": [{"arch": "mlp", "dataset": "mnist1d"}, {"arch": "mlp", "dataset": "digits"}],
    "objectives": ["accuracy", "nodes"],
    "budget": {"max_candidates": 2000, "max_seconds": 3600},
}

PG_ADMIN = os.environ.get(
    "LAYERFORGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_database() -> tuple[str, Any] | None:
    try:
        import psycopg
    except ImportError:
        return None
    dsn = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    name = f"lf_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception:  # noqa: BLE001 - no server: the PostgreSQL rows are skipped
        return None

    def drop() -> None:
        from layerforge.storage import dispose_engines

        dispose_engines()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, drop


def run_loop(
    url: str,
    workers: int,
    candidates: int,
    strategy: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, float]:
    """One campaign through the real loop with ``workers`` simulated workers (on the spec
    ``base``, default :data:`SPEC`, with its strategy or ``strategy``)."""
    from layerforge.search.campaign import CampaignRunner
    from layerforge.search.evaluators import SimulatedEvaluator
    from layerforge.search.queries import create_campaign
    from layerforge.search.spec import validate_spec
    from layerforge.storage import upgrade_database

    upgrade_database(url)
    base = base or SPEC
    spec = validate_spec(
        {
            **base,
            "strategy": strategy or base["strategy"],
            "parallelism": workers,
            "budget": {"max_candidates": candidates, "max_seconds": 3600},
        }
    )
    campaign_id = create_campaign(url, spec)
    runner = CampaignRunner(url, campaign_id, SimulatedEvaluator(workers=workers), poll_s=0.0)
    start = time.perf_counter()
    status = runner.run()
    seconds = time.perf_counter() - start
    assert status == "completed", status
    return {"candidates": candidates, "seconds": seconds, "per_second": candidates / seconds}


def bare_strategy_loop(
    candidates: int, batch: int, strategy: dict[str, Any] | None = None
) -> dict[str, float]:
    """The baseline: the same strategy asked and told with no storage at all."""
    from layerforge.search.evaluators import SimulatedEvaluator
    from layerforge.search.objectives import campaign_objectives, to_minimize
    from layerforge.search.spec import validate_spec
    from layerforge.search.strategies import Member, create_strategy

    spec = validate_spec({**SPEC, "strategy": strategy or SPEC["strategy"]})
    objectives = campaign_objectives(spec)
    proposer = create_strategy(
        spec.strategy.name, spec.space.build(), spec.strategy, len(objectives), 0
    )
    evaluator = SimulatedEvaluator(workers=batch)
    start = time.perf_counter()
    next_id = 0
    fit_seconds = screen_seconds = 0.0
    while next_id < candidates:
        proposals = proposer.ask(min(batch, candidates - next_id))
        for _kind, payload in proposer.drain_events():  # the surrogate's refits
            fit_seconds += float(payload.get("fit_seconds") or 0.0)
            screen_seconds += float(payload.get("screen_seconds") or 0.0)
        for p in proposals:
            p = p.with_fingerprint()
            proposer.observe(Member(next_id, next_id, p.graph, p.fingerprint, p.origin))
            evaluator.submit(str(next_id), {"graph": p.graph.to_dict(), "proxies": spec.proxies})
            next_id += 1
        for outcome in evaluator.poll(0):
            result = outcome.result
            if result["status"] == "completed":
                row = [p["val_accuracy"] for p in result["proxies"]] + [1.0]
                proposer.tell(int(outcome.job_id), to_minimize(objectives, [row])[0])
            else:
                proposer.tell(int(outcome.job_id), error="rejected", status="rejected")
    seconds = time.perf_counter() - start
    return {
        "candidates": candidates,
        "seconds": seconds,
        "per_second": candidates / seconds,
        "fit_seconds": round(fit_seconds, 3),
        "screen_seconds": round(screen_seconds, 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure every (backend, workers) pair; returns the result dict."""
    candidates = 300 if quick else 5000
    worker_counts = [100, 300] if quick else [1000, 10_000]
    rows = []
    baseline = bare_strategy_loop(candidates, worker_counts[0])
    with tempfile.TemporaryDirectory() as tmp:
        for workers in worker_counts:
            n = max(candidates, workers) if not quick else candidates
            url = f"sqlite:///{tmp}/bench-{workers}.db"
            rows.append(
                {
                    "backend": "sqlite",
                    "strategy": "evolution",
                    "workers": workers,
                    **run_loop(url, workers, n),
                }
            )
    # the surrogate imports scikit-learn's GP and SciPy's statistics on its first fit: once,
    # before anything is timed, as a running service has long done
    import scipy.stats  # noqa: F401 - imported for its import time, not its names
    import sklearn.gaussian_process  # noqa: F401 - likewise

    n = candidates if quick else SURROGATE_CANDIDATES
    surrogate_workers = worker_counts if quick else SURROGATE_WORKERS
    surrogate_baseline = bare_strategy_loop(n, surrogate_workers[0], SURROGATE)
    with tempfile.TemporaryDirectory() as tmp:
        for workers in surrogate_workers:
            url = f"sqlite:///{tmp}/surrogate-{workers}.db"
            row = run_loop(url, workers, n, SURROGATE)
            rows.append(
                {
                    "backend": "sqlite",
                    "strategy": "surrogate",
                    "workers": workers,
                    **row,
                    "ratio_to_bare_strategy": row["per_second"] / surrogate_baseline["per_second"],
                }
            )
    for workers in worker_counts:
        pg = _postgres_database()
        if pg is None:
            rows.append(
                {
                    "backend": "postgresql",
                    "strategy": "evolution",
                    "workers": workers,
                    "skipped": f"PostgreSQL at {PG_ADMIN} is unreachable",
                }
            )
            continue
        url, drop = pg
        try:
            n = max(candidates, workers) if not quick else candidates
            rows.append(
                {
                    "backend": "postgresql",
                    "strategy": "evolution",
                    "workers": workers,
                    **run_loop(url, workers, n),
                }
            )
        finally:
            drop()
    for row in rows:
        if "per_second" in row and "ratio_to_bare_strategy" not in row:
            row["ratio_to_bare_strategy"] = row["per_second"] / baseline["per_second"]
    sqlite_rates = [
        r["per_second"] for r in rows if r["backend"] == "sqlite" and r["strategy"] == "evolution"
    ]
    surrogate_rates = [r["per_second"] for r in rows if r["strategy"] == "surrogate"]
    met = min(sqlite_rates) >= 500 and min(surrogate_rates) >= 500
    kept = min(
        r["ratio_to_bare_strategy"]
        for r in rows
        if r["backend"] == "sqlite" and r["strategy"] == "evolution"
    )
    note = (
        f"the whole loop on SQLite keeps {kept:.0%} or more of the bare strategy's rate "
        f"({baseline['per_second']:.0f} candidates/s: proposals, no storage, no controller)"
    )
    if not met and baseline["per_second"] < 500:
        note += (
            "; the bare strategy alone is under the goal on this machine, so the limit is "
            "how fast proposals are made (Evolution.ask / mutate), not storage or the "
            "controller: see the machine's speed"
        )
    evolution_sqlite = max(sqlite_rates)
    note += (
        f"; with the surrogate strategy (fits and screening included) the whole loop on "
        f"SQLite runs at {min(surrogate_rates):.0f}-{max(surrogate_rates):.0f} candidates/s "
        f"({min(surrogate_rates) / evolution_sqlite:.2f}-"
        f"{max(surrogate_rates) / evolution_sqlite:.2f}x evolution's best SQLite row), its "
        f"bare loop at {surrogate_baseline['per_second']:.0f}/s "
        f"({surrogate_baseline['per_second'] / baseline['per_second']:.2f}x evolution's bare "
        "loop, a ratio the machine's load moves less; 0.07x before the shape schedule and "
        "the one-thread BLAS). Of its bare loop's "
        f"{surrogate_baseline['seconds']:.1f} s, {surrogate_baseline['fit_seconds']:.1f} s "
        f"are fits and {surrogate_baseline['screen_seconds']:.1f} s screening (mutations, "
        "fingerprints and features of up to `screen` candidates per ask, pure Python in "
        "grammar/): these, not storage, set its rate"
    )
    return {
        "name": "controller_overhead",
        "goal": GOAL,
        "met": met,
        "note": note,
        "figures": {
            "rows": rows,
            "bare_strategy": baseline,
            "bare_surrogate": surrogate_baseline,
        },
        "config": {
            "quick": quick,
            "candidates": candidates,
            "spec": SPEC,
            "surrogate_strategy": SURROGATE,
        },
    }
