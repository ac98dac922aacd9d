"""Pareto sorting, crowding and hypervolume against answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerforge.search.pareto import (
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_sort,
    pareto_front,
)


def test_dominance():
    assert dominates([1, 1], [2, 2])
    assert dominates([1, 2], [1, 3])
    assert not dominates([1, 2], [1, 2])
    assert not dominates([1, 3], [2, 2])


def test_fronts_of_a_hand_made_set():
    points = [[1, 5], [2, 3], [4, 1], [3, 4], [5, 5], [2, 3], [math.nan, 0]]
    assert non_dominated_sort(points) == [[0, 1, 2, 5], [3], [4], [6]]
    assert pareto_front(points) == [0, 1, 2, 5]
    assert pareto_front([]) == []


def test_hypervolume_exact_2d():
    # staircase of (1,3), (2,2), (3,1) under reference (4,4): 3 + 2 + 1 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    # a dominated point and points outside the reference add nothing
    assert hypervolume([[1, 3], [2, 2], [3, 1], [3, 3], [5, 0], [0, 4]], [4, 4]) == 6.0
    assert hypervolume([], [1, 1]) == 0.0
    assert hypervolume([[math.nan, 0.0]], [1, 1]) == 0.0


def test_hypervolume_exact_3d_and_1d():
    # two boxes [0,2]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1] overlap in a unit cube: 2 + 2 - 1
    assert hypervolume([[0, 1, 1], [1, 0, 1]], [2, 2, 2]) == pytest.approx(3.0)
    assert hypervolume([[0.25], [0.5]], [1.0]) == pytest.approx(0.75)


def test_hypervolume_rejects_mismatched_reference():
    with pytest.raises(ValueError, match="reference point has 3 values"):
        hypervolume([[1, 2]], [3, 3, 3])


def test_crowding_distance_hand_computed():
    points = np.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0]])
    d = crowding_distance(points)
    assert np.isinf(d[0]) and np.isinf(d[3])
    # point 1: (2-0)/4 + (4-1)/4 = 1.25 ; point 2: (4-1)/4 + (2-0)/4 = 1.25
    assert d[1] == pytest.approx(1.25) and d[2] == pytest.approx(1.25)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=25))
def test_front_members_are_exactly_the_undominated(points):
    front = set(pareto_front(points))
    for i, p in enumerate(points):
        dominated = any(dominates(q, p) for q in points)
        assert (i in front) == (not dominated)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_hypervolume_matches_a_grid_count(points):
    # on integer points with reference (6, 6), count unit cells dominated by some point
    cells = sum(any(px <= x and py <= y for px, py in points) for x in range(6) for y in range(6))
    assert hypervolume(points, [6, 6]) == pytest.approx(cells)


def _fronts_by_peeling(points) -> list[list[int]]:
    """Reference non-dominated sort: peel off the undominated points one front at a time."""
    valid = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    fronts, left = [], valid
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i]) for j in left)]
        fronts.append(front)
        left = [i for i in left if i not in front]
    invalid = [i for i in range(len(points)) if i not in valid]
    return fronts + ([invalid] if invalid else [])


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda m: st.lists(
            st.lists(
                st.sampled_from([0.0, 1.0, 2.0, 3.0, math.inf, math.nan]), min_size=m, max_size=m
            ),
            min_size=1,
            max_size=30,
        )
    )
)
def test_fronts_match_peeling_with_ties_infinities_and_nans(points):
    expected = _fronts_by_peeling(points)
    assert non_dominated_sort(points) == expected
    has_valid = any(not any(math.isnan(v) for v in p) for p in points)
    assert pareto_front(points) == (expected[0] if has_valid else [])
