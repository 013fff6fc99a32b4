"""The server's pass planning (modules/serve/api.py): rows sorted by length, cut into forward passes."""

import itertools
import random

import pytest

pytest.importorskip("litserve")
plan_passes = pytest.importorskip("modules.serve.api").plan_passes  # imports litserve


def cost(lengths: list[int], passes: list[slice], overhead: int) -> int:
    return sum(overhead + (part.stop - part.start) * lengths[part.start] for part in passes)


def test_passes_cover_every_row_once_in_order_and_respect_the_row_limit():
    lengths = sorted((random.Random(0).randint(3, 60) for _ in range(100)), reverse=True)
    passes = plan_passes(lengths, most_rows=16, overhead=64)
    assert [row for part in passes for row in range(part.start, part.stop)] == list(range(100))
    assert all(0 < part.stop - part.start <= 16 for part in passes)


def test_the_plan_is_the_cheapest_cut():
    rng = random.Random(1)
    for _ in range(50):
        lengths = sorted((rng.randint(1, 40) for _ in range(rng.randint(1, 9))), reverse=True)
        most_rows, overhead = rng.randint(1, 5), rng.choice([0, 8, 64])
        cheapest = min(
            cost(lengths, cuts, overhead)
            for cuts in (
                [slice(a, b) for a, b in itertools.pairwise((0, *inner, len(lengths)))]
                for k in range(len(lengths))
                for inner in itertools.combinations(range(1, len(lengths)), k)
            )
            if all(c.stop - c.start <= most_rows for c in cuts)
        )
        assert cost(lengths, plan_passes(lengths, most_rows, overhead), overhead) == cheapest


def test_equal_lengths_take_the_fewest_passes_and_costly_passes_are_full():
    assert len(plan_passes([20] * 10, most_rows=4, overhead=1)) == 3
    lengths = [60, 50, 40, 30, 20, 10]
    assert plan_passes(lengths, most_rows=64, overhead=10**6) == [slice(0, 6)]
    assert plan_passes(lengths, most_rows=64, overhead=0) == [slice(i, i + 1) for i in range(6)]
    assert plan_passes([], most_rows=8, overhead=64) == []
