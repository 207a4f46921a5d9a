"""Layer -> stage splits: literal cases and DP optimality against brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gnnpipe.partition import split_layers, stage_bounds


def test_equal_split_literal():
    assert split_layers(10, 4) == [3, 3, 2, 2]
    assert split_layers(8, 4) == [2, 2, 2, 2]
    assert split_layers(4, 4) == [1, 1, 1, 1]
    assert split_layers(5, 1) == [5]
    assert split_layers(32, 8) == [4] * 8


def test_cost_split_literal():
    assert split_layers(5, 2, costs=[5, 1, 1, 1, 1]) == [1, 4]
    assert split_layers(4, 2, costs=[1, 1, 1, 3]) == [3, 1]
    assert split_layers(6, 3, costs=[0] * 6) == [2, 2, 2]  # zero costs: fall back to equal counts
    assert split_layers(7, 3, costs=[2.0] * 7) == split_layers(7, 3)  # equal costs: the equal split
    assert split_layers(3, 3, costs=[9, 0, 0]) == [1, 1, 1]


def test_stage_bounds():
    assert stage_bounds([3, 3, 2]) == [(0, 3), (3, 6), (6, 8)]
    assert stage_bounds([]) == []


@pytest.mark.parametrize(
    ("layers", "stages", "costs", "match"),
    [
        (4, 5, None, "cannot split 4 layers into 5 stages"),
        (4, 0, None, "num_stages must be >= 1"),
        (4, 2, [1, 1, 1], "one entry per layer"),
        (3, 2, [1, -1, 1], "non-negative"),
        (3, 2, [1, float("nan"), 1], "finite"),
    ],
)
def test_errors(layers, stages, costs, match):
    with pytest.raises(ValueError, match=match):
        split_layers(layers, stages, costs=costs)


def compositions(total: int, parts: int):
    for cuts in itertools.combinations(range(1, total), parts - 1):
        bounds = (0, *cuts, total)
        yield [bounds[i + 1] - bounds[i] for i in range(parts)]


def brute_force(costs: list[int], stages: int) -> list[int]:
    """Min max stage cost, then min sum of squared costs, then of squared counts, then largest early stages."""

    def key(counts):
        sums = [sum(costs[b:e]) for b, e in stage_bounds(counts)]
        return (max(sums), sum(s * s for s in sums), sum(c * c for c in counts), [-c for c in counts])

    return min(compositions(len(costs), stages), key=key)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=9), st.data())
def test_dp_matches_brute_force(costs, data):
    stages = data.draw(st.integers(1, len(costs)))
    got = split_layers(len(costs), stages, costs=costs)
    assert sum(got) == len(costs) and len(got) == stages and min(got) >= 1
    assert got == brute_force(costs, stages)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.data())
def test_equal_costs_give_equal_split(layers, data):
    stages = data.draw(st.integers(1, layers))
    assert split_layers(layers, stages, costs=[1.5] * layers) == split_layers(layers, stages)


def test_large_split_is_fast_and_balanced():
    costs = [1.0 + (i % 5) * 0.25 for i in range(256)]
    counts = split_layers(256, 16, costs=costs)
    sums = [sum(costs[b:e]) for b, e in stage_bounds(counts)]
    assert max(sums) - min(sums) <= max(costs)
