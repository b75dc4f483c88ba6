"""Regression cases of the sampling contract (README: Why, and How the planner works), with the tolerances a correct planner meets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kohya_multiplier import rng
from kohya_multiplier.planner import DatasetPlanner


def skewed_buckets(n_images: int, seed: int) -> np.ndarray:
    weights = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04, 0.03, 0.02, 0.02])
    return rng.generator(seed, rng.SYNTHETIC, 10).choice(10, size=n_images, p=weights / weights.sum())


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 8])
def test_25_subjects_at_25_images_each(batch_size):
    sizes = rng.generator(5, rng.SYNTHETIC).integers(50, 301, 25)
    subset_of_image = np.repeat(np.arange(25), sizes)
    bucket_of_image = skewed_buckets(subset_of_image.size, batch_size)
    multipliers = 25 / sizes
    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, batch_size, seed=batch_size)
    epochs = 200
    per_epoch = np.zeros((epochs, 25), dtype=np.int64)
    last_seen = np.zeros(subset_of_image.size, dtype=np.int64)
    longest_gap = np.zeros(subset_of_image.size, dtype=np.int64)
    for e in range(1, epochs + 1):
        images = planner.plan_epoch(e).image_indices
        per_epoch[e - 1] = np.bincount(subset_of_image[images], minlength=25)
        seen = np.zeros(subset_of_image.size, dtype=bool)
        seen[images] = True
        longest_gap = np.maximum(longest_gap, np.where(seen, e - last_seen, 0))
        last_seen[seen] = e
    assert np.abs(per_epoch - 25).max() <= 5
    cumulative = np.cumsum(per_epoch, axis=0) - 25 * np.arange(1, epochs + 1)[:, None]
    assert np.abs(cumulative).max() <= 5
    assert np.abs(per_epoch.sum(axis=0) / (epochs * 25) - 1).max() <= 0.005
    gap_bound = 2 * np.ceil(sizes / 25)[subset_of_image]
    assert (longest_gap <= gap_bound).all()


@pytest.mark.parametrize("batch_size", range(1, 9))
def test_ten_images_at_a_tenth_next_to_two_hundred_at_one(batch_size):
    subset_of_image = np.r_[np.zeros(10, dtype=int), np.ones(200, dtype=int)]
    planner = DatasetPlanner(subset_of_image, np.zeros(210, dtype=int), [0.1, 1.0], batch_size, seed=3)
    seen = set()
    for e in range(1, 21):
        images = planner.plan_epoch(e).image_indices
        small = images[subset_of_image[images] == 0]
        assert small.size == 1
        assert np.bincount(images[subset_of_image[images] == 1], minlength=210)[10:].tolist() == [1] * 200
        seen.add(int(small[0]))
    assert seen == set(range(10))  # two full rotations in 20 epochs


def test_hundred_images_at_half_every_image_once_per_two_epochs():
    planner = DatasetPlanner(np.zeros(100, dtype=int), np.zeros(100, dtype=int), [0.5], 1, seed=0)
    for e in range(1, 21, 2):
        both = np.r_[planner.plan_epoch(e).image_indices, planner.plan_epoch(e + 1).image_indices]
        assert sorted(both.tolist()) == list(range(100))


@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_point_29_of_100_gives_29_not_28(batch_size):
    planner = DatasetPlanner(np.zeros(100, dtype=int), np.zeros(100, dtype=int), [0.29], batch_size, seed=1)
    assert [planner.plan_epoch(e).image_indices.size for e in range(1, 11)] == [29] * 10


def test_tenths_that_sum_below_one_in_float_still_make_one_image():
    multiplier = sum([0.1] * 10)  # 0.9999999999999999
    planner = DatasetPlanner(np.zeros(10, dtype=int), np.zeros(10, dtype=int), [multiplier], 2, seed=0)
    for e in range(1, 4):
        assert sorted(planner.plan_epoch(e).image_indices.tolist()) == list(range(10))


def test_single_image_buckets_get_their_own_batches():
    """20 single-image buckets at 0.3 with batch size 8: six batches per epoch, not one."""
    planner = DatasetPlanner(np.zeros(20, dtype=int), np.arange(20), [0.3], 8, seed=0)
    assert planner.epoch_length == 6
    counts = np.zeros(20, dtype=int)
    for e in range(1, 21):
        counts += np.bincount(planner.plan_epoch(e).image_indices, minlength=20)
    assert counts.min() >= 5 and counts.max() <= 7  # 0.3 x 20 epochs = 6


def test_excluded_subsets_never_appear():
    subset_of_image = np.repeat(np.arange(3), [5, 5, 5])
    planner = DatasetPlanner(subset_of_image, np.zeros(15, dtype=int), [1.0, 0.0, -2.0], 2, seed=0)
    for e in range(1, 4):
        assert set(subset_of_image[planner.plan_epoch(e).image_indices]) == {0}


def test_integer_multipliers_match_num_repeats_counts():
    subset_of_image = np.repeat(np.arange(2), [7, 3])
    planner = DatasetPlanner(subset_of_image, np.arange(10) % 3, [2, 3], 4, seed=0)
    counts = np.bincount(planner.plan_epoch(5).image_indices, minlength=10)
    assert counts.tolist() == [2] * 7 + [3] * 3
    assert planner.summary.extra_batches == 0


BUCKETS_FORCED = [0, 1, 1, 0, 0, 4, 1, 2, 2, 2, 3, 3, 3, 2, 3, 3, 4, 4, 4, 0, 1, 1, 1, 1, 2, 2, 3, 4, 4, 4, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4]
BUCKETS_LAGGING = [0, 0, 0, 1, 1, 4, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 0, 1, 1, 1, 1, 2, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4]

SLOW_CELL_CASES = {
    # A bucket that sometimes serves all its images forces picks on a cell of 0.028 images per
    # epoch; charging those as debt starved its images for hundreds of epochs.
    "forced picks": ([4.0, 4.875, 0.6, 0.014, 1.5], BUCKETS_FORCED),
    # A lagging bucket served its fast cells first, by raw credit; the slow cell waited a whole
    # image of credit longer (picks now go to the most overdue cell, in epochs of its own rate).
    "lagging bucket": ([0.6, 4.875, 0.6, 0.014, 1.5], BUCKETS_LAGGING),
}


@pytest.mark.parametrize("case", list(SLOW_CELL_CASES))
def test_slow_cell_is_not_starved(case):
    """Found by hypothesis: 0.014 x 14 images spread over buckets shared with fast subsets."""
    multipliers, buckets = SLOW_CELL_CASES[case]
    subset_of_image = np.repeat(np.arange(5), [6, 12, 9, 14, 21])
    bucket_of_image = np.array(buckets)

    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, 6, seed=0)
    window = 2 * math.ceil(1 / 0.014) + 2
    last_seen = np.zeros(subset_of_image.size, dtype=int)
    for e in range(1, 2 * window + 1):
        last_seen[planner.plan_epoch(e).image_indices] = e
        assert (e - last_seen).max() < window


def test_small_bucket_is_served_every_few_epochs_not_in_chunks():
    """Found by hypothesis: three images at 0.1 alone in a bucket got a batch of 3 every ~10 epochs;
    picks came in chunks and an image went unseen for 2 x ceil(1/f) + 2 = 22 epochs."""
    subset_of_image = np.repeat(np.arange(5), [1, 1, 15, 1, 15])
    bucket_of_image = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 3])
    planner = DatasetPlanner(subset_of_image, bucket_of_image, [0.0, 0.0, 0.031, 1.875, 0.1], 4, seed=0)
    last_seen = np.zeros(subset_of_image.size, dtype=int)
    tenth = subset_of_image == 4
    for e in range(1, 201):
        last_seen[planner.plan_epoch(e).image_indices] = e
        assert (e - last_seen[tenth]).max() < 2 * 10 + 2


def test_fast_cell_sharing_a_small_bucket_does_not_fall_behind():
    """Found by hypothesis: in two 3-image buckets, a 0.75-per-epoch cell shared each epoch's single
    pick with two slow cells; ordering by epochs waited alone let its subset lag 5.5 images."""
    subset_of_image = np.repeat(np.arange(5), [1, 20, 8, 21, 1])
    bucket_of_image = np.zeros(subset_of_image.size, dtype=int)
    bucket_of_image[[19, 27, 48]] = 1
    bucket_of_image[[20, 28, 49]] = 2
    multipliers = [0.125, 0.062, 1.1, 1.75, 0.0]
    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, 1, seed=0)
    target = np.array(multipliers) * np.bincount(subset_of_image)
    total = np.zeros(5)
    for e in range(1, 41):
        total += np.bincount(subset_of_image[planner.plan_epoch(e).image_indices], minlength=5)
        assert (total - e * target).min() >= -3
