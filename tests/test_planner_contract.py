"""Property tests of every point of the sampling contract (the README: Why, and How the planner works) on random datasets."""

from __future__ import annotations


import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kohya_multiplier.planner import DatasetPlanner, split_multiplier

AWKWARD = [0.0, -1.0, 0.1, 0.25, 0.29, 1 / 3, 0.5, 0.6, 0.75, 0.9, 1.0, 1.1, 2.0, 2.5, 3.7, 5.0]

multiplier = st.one_of(st.sampled_from(AWKWARD), st.floats(0.01, 5.0).map(lambda m: round(m, 3)))


@st.composite
def datasets(draw):
    n_subsets = draw(st.integers(1, 5))
    n_buckets = draw(st.integers(1, 5))
    sizes = draw(st.lists(st.integers(1, 25), min_size=n_subsets, max_size=n_subsets))
    subset_of_image = np.repeat(np.arange(n_subsets), sizes)
    bucket_of_image = np.array(draw(st.lists(st.integers(0, n_buckets - 1), min_size=len(subset_of_image), max_size=len(subset_of_image))))
    multipliers = draw(st.lists(multiplier, min_size=n_subsets, max_size=n_subsets))
    if not any(m > 0 for m in multipliers):
        multipliers[0] = 0.5
    batch_size = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**40))
    return subset_of_image, bucket_of_image, multipliers, batch_size, seed


def run_epochs(planner: DatasetPlanner, epochs: int, n_images: int):
    """counts[e, i]: appearances of image i in epoch e+1; batches checked for purity on the way."""
    counts = np.zeros((epochs, n_images), dtype=np.int64)
    plans = []
    for e in range(1, epochs + 1):
        plan = planner.plan_epoch(e)
        plans.append(plan)
        counts[e - 1] = np.bincount(plan.image_indices, minlength=n_images)
    return counts, plans


SETTINGS = settings(max_examples=int(__import__("os").environ.get("PLANNER_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(datasets())
def test_constant_length_and_bucket_purity(data):
    subset_of_image, bucket_of_image, multipliers, batch_size, seed = data
    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, batch_size, seed)
    for epoch in range(1, 9):
        plan = planner.plan_epoch(epoch)
        assert len(plan) == planner.epoch_length == len(planner)
        for bucket, images in plan.batches:
            assert 1 <= images.size <= batch_size
            assert (bucket_of_image[images] == bucket).all()


@SETTINGS
@given(datasets())
def test_integer_part_exact_and_at_most_one_fractional_pick(data):
    subset_of_image, bucket_of_image, multipliers, batch_size, seed = data
    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, batch_size, seed)
    counts, _ = run_epochs(planner, 8, subset_of_image.size)
    parts = [split_multiplier(m) for m in multipliers]
    whole = np.array([p[0] for p in parts])[subset_of_image]
    frac = np.array([p[1] for p in parts])[subset_of_image]
    extra = counts - whole[None, :]
    assert (extra >= 0).all()
    assert (extra <= (frac > 0)[None, :]).all()


@SETTINGS
@given(datasets())
def test_rotation_counts_never_differ_by_more_than_one_within_a_cell(data):
    subset_of_image, bucket_of_image, multipliers, batch_size, seed = data
    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, batch_size, seed)
    counts, _ = run_epochs(planner, 12, subset_of_image.size)
    seen = np.cumsum(counts, axis=0)
    for s in range(len(multipliers)):
        for b in np.unique(bucket_of_image):
            cell = (subset_of_image == s) & (bucket_of_image == b)
            if cell.any():
                spread = seen[:, cell].max(axis=1) - seen[:, cell].min(axis=1)
                assert spread.max() <= 1


@SETTINGS
@given(datasets())
def test_right_amounts(data):
    subset_of_image, bucket_of_image, multipliers, batch_size, seed = data
    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, batch_size, seed)
    epochs = 16
    counts, _ = run_epochs(planner, epochs, subset_of_image.size)
    per_subset = np.stack([np.bincount(subset_of_image, weights=row, minlength=len(multipliers)) for row in counts])
    sizes = np.bincount(subset_of_image, minlength=len(multipliers))
    target = np.array([max(m, 0.0) for m in multipliers]) * sizes
    cumulative_error = np.cumsum(per_subset, axis=0) - np.arange(1, epochs + 1)[:, None] * target[None, :]
    n_buckets = int(bucket_of_image.max()) + 1
    # A subset lags by at most about one image per bucket it spans, plus one batch while its
    # bucket waits for its turn at a shared extra batch.
    bound = n_buckets + 1 + batch_size
    assert cumulative_error.min() >= -bound
    summary = planner.summary
    # Over-serving comes only from rounding the fractional demand up to whole batches.
    rounding = float(summary.extra_batches - summary.fractional_batches) * batch_size
    if not summary.rounded_up:
        assert cumulative_error.max() <= bound
    total_error = np.cumsum(per_subset.sum(axis=1)) - np.arange(1, epochs + 1) * target.sum()
    assert total_error.max() <= bound + epochs * max(rounding, 0) + 1e-9


@SETTINGS
@given(datasets())
def test_no_starvation(data):
    subset_of_image, bucket_of_image, multipliers, batch_size, seed = data
    planner = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, batch_size, seed)
    fractions = np.array([split_multiplier(m)[1] for m in multipliers])
    active = np.array([m > 0 for m in multipliers])[subset_of_image]
    frac = fractions[subset_of_image]
    window = np.where(frac > 0, 2 * np.ceil(1 / np.where(frac > 0, frac, 1)) + 2, 1).astype(int)
    epochs = int(window[active].max()) * 2
    counts, _ = run_epochs(planner, epochs, subset_of_image.size)
    for i in np.flatnonzero(active):
        w = window[i]
        trained = counts[:, i] > 0
        runs = np.convolve(trained.astype(int), np.ones(w, dtype=int), mode="valid")
        assert runs.min() >= 1, f"image {i} (f={frac[i]}) unseen for {w} epochs"


@SETTINGS
@given(datasets(), st.integers(1, 30))
def test_direct_jump_equals_stepping(data, target):
    subset_of_image, bucket_of_image, multipliers, batch_size, seed = data
    stepping = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, batch_size, seed)
    for epoch in range(1, target + 1):
        stepped = stepping.plan_epoch(epoch)
    jumped = DatasetPlanner(subset_of_image, bucket_of_image, multipliers, batch_size, seed).plan_epoch(target)
    assert np.array_equal(stepped.image_indices, jumped.image_indices)
    assert np.array_equal(stepped.batch_offsets, jumped.batch_offsets)
    assert np.array_equal(stepped.batch_bucket, jumped.batch_bucket)


def test_plan_does_not_depend_on_global_random_state():
    import random

    subset_of_image = np.repeat(np.arange(3), [40, 7, 100])
    bucket_of_image = np.arange(subset_of_image.size) % 4
    random.seed(1)
    np.random.seed(1)
    a = DatasetPlanner(subset_of_image, bucket_of_image, [0.3, 1.5, 0.05], 4, 7).plan_epoch(3)
    random.seed(2)
    np.random.seed(2)
    random.random()
    b = DatasetPlanner(subset_of_image, bucket_of_image, [0.3, 1.5, 0.05], 4, 7).plan_epoch(3)
    assert np.array_equal(a.image_indices, b.image_indices)


def test_plan_changes_with_seed_and_epoch():
    subset_of_image = np.zeros(50, dtype=int)
    bucket_of_image = np.zeros(50, dtype=int)
    plan = lambda seed, epoch: DatasetPlanner(subset_of_image, bucket_of_image, [0.4], 2, seed).plan_epoch(epoch)
    assert not np.array_equal(plan(1, 1).image_indices, plan(2, 1).image_indices)
    assert set(plan(1, 1).image_indices) != set(plan(1, 2).image_indices)
