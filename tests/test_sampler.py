"""LengthGroupedSampler: every row once, equal batch counts per rank, and batches of similar length."""

import random

import pytest

from modules.sampler import LengthGroupedSampler


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(5, 120) for _ in range(n)]


def _rank_batches(sampler: LengthGroupedSampler) -> list[list[int]]:
    indices = list(sampler)
    return [indices[i : i + sampler.batch_size] for i in range(0, len(indices), sampler.batch_size)]


def _padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - real / padded


@pytest.mark.parametrize("world", [1, 2, 3])
def test_training_covers_every_row_with_equal_batch_counts(world):
    lengths = _lengths(1003)
    samplers = [LengthGroupedSampler(lengths, 32, num_replicas=world, rank=r, seed=1) for r in range(world)]
    per_rank = [_rank_batches(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1  # same step count on every rank: no DDP hang
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(1003))
    assert len(seen) - 1003 < 32 * world  # only the padding batches repeat rows
    # Every batch is full except the one short batch, which is last on its rank.
    for batches in per_rank:
        assert all(len(b) == 32 for b in batches[:-1])


def test_grouping_cuts_padding_and_shuffles_per_epoch():
    lengths = _lengths(2000)
    grouped = LengthGroupedSampler(lengths, 32, seed=3)
    plain = LengthGroupedSampler(lengths, 32, seed=3, group_by_length=False)
    assert _padding_fraction(_rank_batches(grouped), lengths) < 0.1
    assert _padding_fraction(_rank_batches(plain), lengths) > 0.3
    first = list(grouped)
    assert list(grouped) == first  # deterministic within an epoch
    grouped.set_epoch(1)
    assert list(grouped) != first and sorted(grouped) == sorted(first)


@pytest.mark.parametrize("world", [1, 2])
def test_evaluation_sees_each_row_once_sorted_by_length(world):
    lengths = _lengths(101)
    samplers = [LengthGroupedSampler(lengths, 16, num_replicas=world, rank=r, shuffle=False) for r in range(world)]
    seen = [i for s in samplers for i in s]
    assert sorted(seen) == list(range(101))
    for s in samplers:
        rank_lengths = [lengths[i] for i in s]
        assert rank_lengths == sorted(rank_lengths, reverse=True)
