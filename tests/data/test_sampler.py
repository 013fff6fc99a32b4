"""LengthGroupedSampler: every row once, equal batch counts per rank, and batches of similar length."""

import random

import pytest

from modules.data.sampler import LengthGroupedSampler


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


@pytest.mark.parametrize("group_by_length", [True, False])
def test_two_ranks_share_out_the_single_process_batches(group_by_length):
    # One process with batch 32 and two with batch 16 take the same rows at every step: the same global batch size
    # gives the same training run, whatever the number of processes.
    lengths = _lengths(1000)
    single = _rank_batches(LengthGroupedSampler(lengths, 32, seed=5, group_by_length=group_by_length))
    ranks = [
        _rank_batches(LengthGroupedSampler(lengths, 16, 2, r, seed=5, group_by_length=group_by_length))
        for r in range(2)
    ]
    assert len(single) == len(ranks[0]) == len(ranks[1])
    for step, batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)


def test_uneven_rows_give_every_rank_the_same_step_count():
    # 37 rows, 4 ranks of batch 4: 2 full global batches and 5 rows left, split 2/1/1/1.
    samplers = [LengthGroupedSampler(_lengths(37), 4, num_replicas=4, rank=r) for r in range(4)]
    per_rank = [s.rank_batches() for s in samplers]
    assert [len(b) for b in per_rank] == [3, 3, 3, 3]
    assert [len(b[-1]) for b in per_rank] == [2, 1, 1, 1]
    assert sorted(i for b in per_rank for batch in b for i in batch) == list(range(37))


def test_resume_skips_the_batches_done_in_that_epoch_only():
    sampler = LengthGroupedSampler(_lengths(200), 16, seed=2)
    sampler.set_epoch(3)
    batches = sampler.rank_batches()
    sampler.resume_at(epoch=3, batches_done=5)
    assert len(sampler) == 200  # Lightning counts the whole epoch; it knows 5 batches are done
    assert list(sampler) == [i for b in batches[5:] for i in b]
    assert list(sampler) == [i for b in batches for i in b]  # the skip applies once
    sampler.resume_at(epoch=2, batches_done=5)  # saved at the end of epoch 2: epoch 3 starts from its beginning
    assert list(sampler) == [i for b in batches for i in b]
