"""Keyed permutations: bijections of [0, n), inverse, uniform enough per key, pure functions."""

import numpy as np
import pytest

from kohya_multiplier.planner.permutation import EXACT_LIMIT, cycle_keys, permute, position_of


@pytest.mark.parametrize("n", [1, 2, 3, 7, EXACT_LIMIT, EXACT_LIMIT + 1, 100, 1000, 4097, 70000])
def test_bijection_and_inverse(n):
    keys = cycle_keys(7, 1, 3, 2, np.arange(4))
    for k in range(keys.size):
        images = permute(keys, k, n, np.arange(n))
        assert np.array_equal(np.sort(images), np.arange(n))
        assert np.array_equal(position_of(keys, k, n, images), np.arange(n))


def test_keys_are_pure_functions_of_their_parts():
    a = cycle_keys(5, 1, np.array([0, 1]), np.array([2, 2]), np.array([9, 9]))
    assert np.array_equal(a, cycle_keys(5, 1, np.array([0, 1]), np.array([2, 2]), np.array([9, 9])))
    assert len({int(k) for k in a} | {int(k) for k in cycle_keys(6, 1, np.array([0, 1]), 2, 9)}) == 4
    assert cycle_keys(2**70 + 3, 1, 0, 0, 0) != cycle_keys(3, 1, 0, 0, 0)  # seeds beyond 64 bits count too


@pytest.mark.parametrize("n", [3, 17, 40, 300])
def test_every_image_equally_likely_at_a_position(n):
    draws = 40 * n
    keys = cycle_keys(1, 1, 0, 0, np.arange(draws))
    for position in (0, n - 1):
        counts = np.bincount(permute(keys, np.arange(draws), n, np.full(draws, position)), minlength=n)
        chi2 = ((counts - 40) ** 2 / 40).sum()
        assert chi2 < (n - 1) + 5 * np.sqrt(2 * (n - 1))  # about 5 standard deviations


def test_pairs_of_positions_are_independent_enough():
    n, draws = 18, 60000
    keys = cycle_keys(2, 1, 0, 0, np.arange(draws))
    first = permute(keys, np.arange(draws), n, np.zeros(draws, dtype=np.int64))
    last = permute(keys, np.arange(draws), n, np.full(draws, n - 1))
    counts = np.bincount(first * n + last, minlength=n * n).reshape(n, n)
    off = ~np.eye(n, dtype=bool)
    expected = draws / (n * (n - 1))
    assert counts[~off].sum() == 0
    chi2 = ((counts[off] - expected) ** 2 / expected).sum()
    dof = n * (n - 1) - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)
