"""Pareto fronts, crowding distance and hypervolume on values to MINIMIZE.

Everything here takes a 2-D array of objective values where smaller is better (the caller
negates objectives it maximizes, see :mod:`search.objectives`). Rows with a NaN are never
on a front and count for nothing in the hypervolume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_matrix(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    matrix = np.asarray(points, dtype=float)
    if matrix.size == 0:
        return matrix.reshape(0, matrix.shape[1] if matrix.ndim == 2 else 0)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array of objective values, got shape {matrix.shape}")
    return matrix


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is no worse than ``b`` everywhere and better somewhere (minimizing)."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a_arr <= b_arr) and np.any(a_arr < b_arr))


def _dominance_safe(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` (NaN-free) as moocore can rank it: moocore mistakes an infinite value
    (what a failed member scores) for its own sentinel with three or more objectives and
    calls such a point dominated when it is not. Replacing each column by its dense rank
    keeps every comparison, hence every dominance relation, and is finite; only matrices
    that hold an infinity pay for it."""
    if np.isfinite(matrix).all():
        return matrix
    ranked = np.empty(matrix.shape)
    for column in range(matrix.shape[1]):
        ranked[:, column] = np.unique(matrix[:, column], return_inverse=True)[1]
    return ranked


def non_dominated_sort(points: Sequence[Sequence[float]] | np.ndarray) -> list[list[int]]:
    """Indices of the points grouped into fronts: front 0 is non-dominated, and so on.

    Each front lists its indices in ascending order; equal points share a front, and rows
    with a NaN form a last front of their own. The ranks come from moocore's
    ``pareto_rank`` (O(N log N) for two objectives, one front at a time above), which never
    builds the N x N x M comparison a population of 10,000 could not hold in memory.
    """
    import moocore

    matrix = _as_matrix(points)
    if len(matrix) == 0:
        return []
    valid = ~np.isnan(matrix).any(axis=1)
    idx = np.flatnonzero(valid)
    fronts: list[list[int]] = []
    if idx.size:
        ranks = np.asarray(moocore.pareto_rank(_dominance_safe(matrix[idx])))
        order = np.argsort(ranks, kind="stable")  # by rank, ascending index within a rank
        boundaries = np.flatnonzero(np.diff(ranks[order])) + 1
        fronts = [idx[group].tolist() for group in np.split(order, boundaries)]
    invalid = np.flatnonzero(~valid)
    if invalid.size:
        fronts.append(invalid.tolist())
    return fronts


def pareto_front(points: Sequence[Sequence[float]] | np.ndarray) -> list[int]:
    """Indices of the non-dominated points, ascending (duplicates of a front point all kept).

    Only the first front is computed, by moocore's ``is_nondominated`` (``keep_weakly``
    keeps the duplicates); the API serves this on every request.
    """
    import moocore

    matrix = _as_matrix(points)
    if matrix.size == 0:
        return []
    valid = np.flatnonzero(~np.isnan(matrix).any(axis=1))
    if valid.size == 0:
        return []
    keep = np.asarray(moocore.is_nondominated(_dominance_safe(matrix[valid]), keep_weakly=True))
    return valid[keep].tolist()


def crowding_distance(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each point within one front (boundary points: inf)."""
    matrix = _as_matrix(points)
    n, m = matrix.shape if matrix.ndim == 2 else (0, 0)
    distance = np.zeros(n)
    if n <= 2:
        distance[:] = np.inf
        return distance
    for k in range(m):
        order = np.argsort(matrix[:, k], kind="stable")
        column = matrix[order, k]
        distance[order[0]] = distance[order[-1]] = np.inf
        if not np.isfinite(column).all():
            continue  # failed members (inf) share one rank; spacing says nothing there
        span = column[-1] - column[0]
        if span > 0:
            distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


#: The most objectives moocore's exact hypervolume takes; above, it is approximated.
EXACT_MAX_OBJECTIVES = 31


def hypervolume(
    points: Sequence[Sequence[float]] | np.ndarray, reference: Sequence[float]
) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (minimizing).

    Points that do not strictly dominate the reference point, and rows with NaN, add
    nothing. Uses moocore's exact algorithms up to :data:`EXACT_MAX_OBJECTIVES` objectives,
    a seeded Monte-Carlo estimate above (moocore's approximation has the same limit).
    """
    import moocore

    matrix = _as_matrix(points)
    ref = np.asarray(reference, dtype=float)
    if matrix.size == 0:
        return 0.0
    if matrix.shape[1] != ref.size:
        raise ValueError(f"reference point has {ref.size} values but points have {matrix.shape[1]}")
    keep = ~np.isnan(matrix).any(axis=1) & (matrix < ref).all(axis=1)
    if not keep.any():
        return 0.0
    if matrix.shape[1] > EXACT_MAX_OBJECTIVES:
        # moocore stops at 31 objectives (a spec of 32 proxies has more): beyond, a
        # Monte-Carlo estimate with a fixed seed (same points, same value).
        return _hypervolume_sampled(matrix[keep], ref)
    return float(moocore.hypervolume(matrix[keep], ref=ref))


def _hypervolume_sampled(points: np.ndarray, ref: np.ndarray, samples: int = 1 << 14) -> float:
    """Hypervolume estimated from ``samples`` uniform points of the box between the points'
    minimum and ``ref`` (deterministic: the generator's seed is fixed)."""
    low = points.min(axis=0)
    box = float(np.prod(ref - low))
    if box <= 0:
        return 0.0
    rng = np.random.default_rng(0)
    hits = 0
    for start in range(0, samples, 1024):
        draw = low + rng.random((min(1024, samples - start), ref.size)) * (ref - low)
        hits += int((points[None, :, :] <= draw[:, None, :]).all(axis=2).any(axis=1).sum())
    return box * hits / samples
