"""`check`'s arithmetic (modules/check/cost.py): how timed batches become an epoch's and a run's estimate."""

import pytest

from modules.check.cost import run_estimate, steady_state_seconds


def test_steady_state_counts_warm_up_once_per_shape_not_per_batch():
    # Three strata standing for 10, 20 and 30 batches; the third's shape already ran, so its cold time is warm.
    seconds, warmup = steady_state_seconds(
        cold=[1.5, 2.5, 3.0], warm=[1.0, 2.0, 3.0], counts=[10, 20, 30], fresh=[True, True, False], distinct_shapes=4
    )
    assert warmup == pytest.approx(0.5)  # mean of 0.5 and 0.5 over the fresh strata
    assert seconds == pytest.approx(10 * 1.0 + 20 * 2.0 + 30 * 3.0 + 4 * 0.5)  # not + 60 * 0.5, not + 0
    # Noise (warm slower than cold) floors at zero rather than cutting the steady time...
    assert steady_state_seconds([1.0], [1.2], [5], [True], 3) == pytest.approx((6.0, 0.0))
    # ...and the floor is on the mean: noise of one stratum does not turn into warm-up.
    assert steady_state_seconds([1.5, 1.0], [1.0, 1.2], [1, 1], [True, True], 1)[1] == pytest.approx(0.15)
    # A run of 3 epochs pays the first epoch's warm-up once.
    assert run_estimate(142.0, 60, 1, 3, -1, warmup_seconds=2.0) == (pytest.approx(3 * 140.0 + 2.0), 3)
