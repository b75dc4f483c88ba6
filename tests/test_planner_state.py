"""Planner state does not grow with the epochs replayed; credits stay bounded; versioned plans."""

import pickle

import numpy as np

from kohya_multiplier import rng
from kohya_multiplier.planner import PLANNER_VERSION, DatasetPlanner
from kohya_multiplier.planner.credits import Q


def test_planner_version_is_an_int_at_least_2():
    assert isinstance(PLANNER_VERSION, int) and PLANNER_VERSION >= 2


def test_pickled_planner_does_not_grow_with_epochs():
    gen = rng.generator(0, rng.SYNTHETIC, 1)
    subset_of_image = gen.integers(0, 40, 5000)
    bucket_of_image = gen.integers(0, 12, 5000)
    multipliers = np.round(gen.uniform(0.01, 2.5, 40), 3)
    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, 1, 0)
    planner.plan_epoch(1)
    first = len(pickle.dumps(planner))
    planner.plan_epoch(400)
    assert len(pickle.dumps(planner)) <= 1.05 * first


def test_batch_size_one_credits_stay_bounded_and_plans_match_after_pickling():
    """K rounded up at batch size 1 over-serves a little every epoch; credits must not drift."""
    gen = rng.generator(1, rng.SYNTHETIC, 2)
    subset_of_image = gen.integers(0, 30, 3000)
    bucket_of_image = gen.integers(0, 8, 3000)
    multipliers = np.round(gen.uniform(0.02, 1.9, 30), 3)
    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, 1, 4)
    assert planner.summary.rounded_up
    planner.plan_epoch(600)
    credit = planner._credit.cell_credit
    demand = planner.layout.cell_demand
    assert credit.max() <= 3 * Q + 2 * demand.max()
    assert credit.min() >= -3 * Q - 2 * demand.max()
    clone = pickle.loads(pickle.dumps(planner))
    assert np.array_equal(clone.plan_epoch(601).image_indices, planner.plan_epoch(601).image_indices)
    fresh = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, 1, 4)
    assert np.array_equal(fresh.plan_epoch(601).image_indices, planner.plan_epoch(601).image_indices)
    assert np.array_equal(planner.plan_epoch(3).image_indices, fresh.plan_epoch(3).image_indices)  # going back
