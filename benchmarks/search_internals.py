"""Optuna ask time against the number of members, and Pareto sorting on moocore.

* ``optuna``: the ``optuna`` strategy's ``ask(1)`` on a campaign of N members, before (the
  study rebuilt from every member on each ask, version 0.1's code, kept here as the
  baseline) and after (one study, told each outcome as it arrives). Same members, same
  sampler (multivariate TPE); the ratio is before / after.
* ``pareto``: :func:`search.pareto.non_dominated_sort` and :func:`pareto_front` on moocore
  against the NumPy code they replaced (kept here as the baseline: an N x N x M comparison),
  at N = 1,000 and 10,000 random points, M = 2 and 3; outputs checked equal.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import numpy as np

GOAL = (
    "optuna ask no longer grows with rebuilding the study (ratio before/after > 1 at 1,000 "
    "members); moocore Pareto sorting gives the same fronts, faster, without N x N x M "
    "temporaries"
)


# ----------------------------------------------------------------------------- baselines
def numpy_sort_before(matrix: np.ndarray) -> list[list[int]]:
    """Version 0.1's non-dominated sort (the N x N x M boolean comparison)."""
    valid = ~np.isnan(matrix).any(axis=1)
    idx = np.flatnonzero(valid)
    sub = matrix[idx]
    le = np.asarray(sub[:, None, :] <= sub[None, :, :]).all(axis=2)
    lt = np.asarray(sub[:, None, :] < sub[None, :, :]).any(axis=2)
    dom = np.logical_and(le, lt)
    dominated_by = dom.sum(axis=0)
    fronts: list[list[int]] = []
    current = np.flatnonzero(dominated_by == 0)
    remaining = dominated_by.copy()
    while current.size:
        fronts.append([int(idx[i]) for i in current])
        remaining[current] = -1
        remaining -= dom[current].sum(axis=0)
        current = np.flatnonzero(remaining == 0)
    invalid = np.flatnonzero(~valid)
    if invalid.size:
        fronts.append([int(i) for i in invalid])
    return fronts


def numpy_front_before(matrix: np.ndarray) -> list[int]:
    """Version 0.1's first front (lexicographic sweep against the front found so far)."""
    valid = np.flatnonzero(~np.isnan(matrix).any(axis=1))
    sub = matrix[valid]
    order = np.lexsort(sub.T[::-1])
    rows: list[int] = []
    front = np.empty((0, sub.shape[1]))
    for row in order:
        point = sub[row]
        if front.size and (((front <= point).all(axis=1)) & ((front < point).any(axis=1))).any():
            continue
        rows.append(int(row))
        front = np.vstack([front, point])
    return sorted(int(valid[r]) for r in rows)


def _best_of(fn, points: np.ndarray, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``fn(points)``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(points)
        best = min(best, time.perf_counter() - start)
    return best


def pareto_rows(quick: bool) -> list[dict[str, Any]]:
    """Speed of the moocore sort and front against the NumPy baselines."""
    from layerforge.search.pareto import non_dominated_sort, pareto_front

    rows = []
    for n in (1_000, 10_000):
        for m in (2, 3):
            rng = np.random.default_rng(n + m)
            points = rng.random((n, m))
            points[: n // 50] = points[n // 50 : 2 * (n // 50)]  # some duplicates
            repeats = 1 if n == 10_000 else 3
            new_sort = _best_of(non_dominated_sort, points, repeats)
            new_front = _best_of(pareto_front, points, repeats)
            row: dict[str, Any] = {
                "name": f"N={n:,} M={m}",
                "moocore_sort_s": new_sort,
                "moocore_front_s": new_front,
                "numpy_temporaries_mb": round(2 * n * n * m / 2**20, 1),
            }
            if not (quick and n == 10_000):
                old_sort = _best_of(numpy_sort_before, points, repeats)
                old_front = _best_of(numpy_front_before, points, repeats)
                assert non_dominated_sort(points) == numpy_sort_before(points)
                assert pareto_front(points) == numpy_front_before(points)
                row.update(
                    numpy_sort_s=old_sort,
                    numpy_front_s=old_front,
                    ratio=old_sort / new_sort,
                    front_ratio=old_front / new_front,
                )
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- optuna
def _rebuild_every_ask_class():
    """Version 0.1's ask: a new study from every member on each ask (the baseline)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from layerforge.search.strategies.base import Proposal
    from layerforge.search.strategies.optuna_search import OptunaSearch

    class RebuildEveryAsk(OptunaSearch):
        def _old_study(self, salt: int) -> optuna.Study:
            seed = self.rng(salt).randrange(2**31)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)
            study = optuna.create_study(
                directions=["minimize"] * self.num_objectives, sampler=sampler
            )
            for member_id in self.order:
                member = self.members[member_id]
                params = member.data.get("params")
                if not params or not member.finished:
                    continue
                if member.values is not None:
                    trial = create_trial(
                        params=params, distributions=self.distributions, values=list(member.values)
                    )
                else:
                    trial = create_trial(
                        params=params, distributions=self.distributions, state=TrialState.FAIL
                    )
                study.add_trial(trial)
            return study

        def ask(self, n: int) -> list[Proposal]:
            proposals: list[Proposal] = []
            taken: set[str] = set()
            study = self._old_study(0)
            salt = 0
            while len(proposals) < n and salt < int(self.settings.max_attempts):
                salt += 1
                trial = study.ask(self.distributions)
                params = dict(trial.params)
                graph = self.decode(params)
                ok, fp = self.is_new(graph, taken)
                study.tell(trial, state=TrialState.FAIL)
                if ok:
                    taken.add(fp)
                    proposals.append(Proposal(graph, "optuna", (), {"params": params}, fp))
                elif salt % 8 == 0:
                    study = self._old_study(salt)
            return proposals

    return RebuildEveryAsk


def _members(strategy, count: int) -> list:
    """``count`` members with random template parameters and made-up objective values."""
    from layerforge.grammar import fingerprint
    from layerforge.search.strategies import Member

    rng = random.Random(0)
    members, seen = [], set()
    for _ in range(200 * count):
        if len(members) == count:
            break
        params = {k: rng.choice(d.choices) for k, d in strategy.distributions.items()}
        graph = strategy.decode(params)
        fp = fingerprint(graph)
        if fp in seen:
            continue
        seen.add(fp)
        n = len(members) + 1
        values = (-rng.random(), float(graph.num_nodes))
        members.append(
            Member(n, n, graph, fp, "optuna", "completed", values, (), {"params": params})
        )
    return members


def optuna_rows(quick: bool) -> list[dict[str, Any]]:
    """Median ``ask(1)`` seconds of the baseline and the current strategy at N members."""
    from layerforge.grammar import make_space
    from layerforge.search.spec import StrategySpec
    from layerforge.search.strategies.optuna_search import OptunaSearch

    space = make_space("activation", ops="full", max_nodes=6, max_depth=6)
    settings = StrategySpec(name="optuna", population=64, tournament=4, max_attempts=48)
    baseline_class = _rebuild_every_ask_class()
    rows = []
    for count in (100, 1_000) if quick else (100, 300, 1_000):
        timings: dict[str, float] = {}
        for label, cls in (("before", baseline_class), ("after", OptunaSearch)):
            strategy = cls(space, settings, 2, 0)
            start = time.perf_counter()
            strategy.rebuild(_members(strategy, count))
            rebuild_s = time.perf_counter() - start
            samples = []
            for _ in range(3 if quick else 5):
                start = time.perf_counter()
                strategy.ask(1)
                samples.append(time.perf_counter() - start)
            timings[f"{label}_ask_s"] = statistics.median(samples)
            timings[f"{label}_rebuild_s"] = rebuild_s
        rows.append(
            {
                "name": f"{count:,} members",
                "members": count,
                **timings,
                "ratio": timings["before_ask_s"] / timings["after_ask_s"],
            }
        )
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    """Both measurements; met when the optuna ratio at 1,000 members and every Pareto sort
    ratio exceed 1."""
    optuna = optuna_rows(quick)
    pareto = pareto_rows(quick)
    at_1000 = next(r for r in optuna if r["members"] == 1_000)
    sort_ratios = [r["ratio"] for r in pareto if "ratio" in r]
    met = at_1000["ratio"] > 1 and all(ratio > 1 for ratio in sort_ratios)
    return {
        "name": "search_internals",
        "goal": GOAL,
        "met": met,
        "figures": {
            "headline": {
                "optuna ask before/after at 1,000 members": round(at_1000["ratio"], 2),
                **{
                    f"pareto sort speedup {r['name']}": round(r["ratio"], 1)
                    for r in pareto
                    if "ratio" in r
                },
            },
            "optuna": optuna,
            "pareto": pareto,
        },
        "config": {"quick": quick, "sampler": "tpe (multivariate)", "space": "activation/full"},
    }
