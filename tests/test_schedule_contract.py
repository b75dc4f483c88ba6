"""Property tests of the sampling contract for scheduled datasets (the README's "Schedules").

Random datasets with random schedules (linear and step, windows, automatic regularization, a
given total or not): every epoch has the same length; each image trains its subset's whole part
of the epoch's scaled rate, plus at most one pick; each subset's cumulative count tracks the
cumulative scaled target within the static contract's bound; nothing trains outside a window;
every image is trained again within its subset's time-varying rotation bound; and the plan of an
epoch is the same stepped, jumped to, or after a pickle.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kohya_multiplier.dataset.rates import DatasetRates, SubsetRate
from kohya_multiplier.dataset.schedules import Schedule
from kohya_multiplier.planner.scheduled import ScheduledPlanner, ScheduleError
from kohya_multiplier.planner import split_multiplier
from kohya_multiplier.report.data import scheduled_rotation_bound, walk_switches

SETTINGS = settings(max_examples=int(os.environ.get("PLANNER_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
EPOCHS = 24

value = st.one_of(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.6, 1.0, 1.5, 2.0, 3.3]), st.floats(0.02, 4.0).map(lambda v: round(v, 3)))


@st.composite
def schedules(draw):
    points = draw(st.integers(1, 4))
    epochs = sorted(draw(st.sets(st.integers(1, 20), min_size=points, max_size=points)))
    values = [draw(value) for _ in epochs]
    return Schedule(tuple(epochs), tuple(values), draw(st.booleans()))


@st.composite
def subset_rates(draw, images: int, is_reg: bool):
    kind = draw(st.sampled_from(["constant", "schedule", "auto"] if is_reg else ["constant", "schedule"]))
    start = draw(st.one_of(st.just(1), st.integers(1, 12)))
    end = draw(st.one_of(st.none(), st.integers(start, 20)))
    if kind == "auto":
        return SubsetRate(images, start_epoch=start, end_epoch=end, is_reg=True, auto=True)
    if kind == "constant":
        return SubsetRate(images, value=draw(value.filter(lambda v: v > 0)), start_epoch=start, end_epoch=end, is_reg=is_reg)
    return SubsetRate(images, schedule=draw(schedules()), start_epoch=start, end_epoch=end, is_reg=is_reg)


@st.composite
def scheduled_datasets(draw):
    n_subsets = draw(st.integers(1, 5))
    n_buckets = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 25), min_size=n_subsets, max_size=n_subsets))
    subset_of_image = np.repeat(np.arange(n_subsets), sizes)
    bucket_of_image = np.array(draw(st.lists(st.integers(0, n_buckets - 1), min_size=len(subset_of_image), max_size=len(subset_of_image))))
    subsets = [draw(subset_rates(n, is_reg=draw(st.booleans()) and i > 0)) for i, n in enumerate(sizes)]
    total = draw(st.one_of(st.none(), st.integers(5, 120)))
    rates = DatasetRates(subsets, total)
    if rates.epoch_without_images() is not None or not rates.total > 0:
        subsets[0] = SubsetRate(sizes[0], value=1.0)
        rates = DatasetRates(subsets, total)
    return subset_of_image, bucket_of_image, rates, draw(st.integers(1, 6)), draw(st.integers(0, 2**40))


def planned(data, epochs=EPOCHS):
    subset_of_image, bucket_of_image, rates, batch_size, seed = data
    try:
        planner = ScheduledPlanner(subset_of_image, bucket_of_image, rates, batch_size, seed)
    except ScheduleError:
        return None, None  # refused before training (an epoch's images cannot fill its batches)
    counts = np.zeros((epochs, subset_of_image.size), dtype=np.int64)
    plans = []
    for epoch in range(1, epochs + 1):
        plan = planner.plan_epoch(epoch)
        plans.append(plan)
        counts[epoch - 1] = np.bincount(plan.image_indices, minlength=subset_of_image.size)
    return planner, (counts, plans)


@SETTINGS
@given(scheduled_datasets())
def test_every_epoch_has_the_same_length_and_pure_batches(data):
    subset_of_image, bucket_of_image, rates, batch_size, _ = data
    planner, result = planned(data)
    if planner is None:
        return
    for plan in result[1]:
        assert len(plan) == planner.epoch_length
        for bucket, images in plan.batches:
            assert 1 <= images.size <= batch_size
            assert (bucket_of_image[images] == bucket).all()


@SETTINGS
@given(scheduled_datasets())
def test_whole_part_exact_at_most_one_pick_and_nothing_outside_the_window(data):
    subset_of_image, _, rates, _, _ = data
    planner, result = planned(data)
    if planner is None:
        return
    counts = result[0]
    for epoch in range(1, EPOCHS + 1):
        parts = [split_multiplier(m) for m in rates.at(epoch)]
        whole = np.array([p[0] for p in parts])[subset_of_image]
        extra = counts[epoch - 1] - whole
        assert (extra >= 0).all() and (extra <= 1).all(), epoch
        inactive = (rates.at(epoch) <= 0)[subset_of_image]
        assert (counts[epoch - 1][inactive] == 0).all(), epoch


@SETTINGS
@given(scheduled_datasets())
def test_cumulative_counts_track_the_scaled_targets(data):
    subset_of_image, bucket_of_image, rates, batch_size, _ = data
    planner, result = planned(data)
    if planner is None:
        return
    counts = result[0]
    n_subsets = len(rates.subsets)
    per_subset = np.stack([np.bincount(subset_of_image, weights=row, minlength=n_subsets) for row in counts])
    sizes = np.bincount(subset_of_image, minlength=n_subsets)
    target = np.stack([rates.at(epoch) * sizes for epoch in range(1, EPOCHS + 1)])
    error = np.cumsum(per_subset, axis=0) - np.cumsum(target, axis=0)
    bound = int(bucket_of_image.max()) + 2 + batch_size  # the static bound, and one image a subset may leave at a window's end
    assert error.min() >= -bound, (error.min(), bound)
    # Over-serving comes only from epochs whose images cannot fill the batches (reported, as a
    # static plan's rounding up is).
    if not planner.summary.rounded_up:
        assert error.max() <= bound, (error.max(), bound)
        # The epoch's total is T (within the same bound): the constant length holds a constant mix size.
        assert np.abs(per_subset.sum(axis=1) - rates.total).max() <= 2 * bound


@SETTINGS
@given(scheduled_datasets())
def test_every_image_returns_within_its_time_varying_bound(data):
    subset_of_image, _, rates, _, _ = data
    planner, result = planned(data, epochs=40)
    if planner is None:
        return
    counts = result[0]
    for image in range(subset_of_image.size):
        subset = int(subset_of_image[image])
        rate_of = lambda e, subset=subset: rates.at(e)[subset]  # noqa: E731
        switches = walk_switches(rate_of, 1, 40)
        trained = np.flatnonzero(counts[:, image] > 0) + 1
        last = None  # the last epoch the image trained (None: its subset's rotation has not started)
        for epoch in range(1, 41):
            rate = rates.at(epoch)[subset]
            if rate <= 0:
                last = None
                continue
            if last is None:
                last = epoch - 1
            if epoch in trained:
                last = epoch
                continue
            bound = scheduled_rotation_bound(rate_of, last, switches=switches)
            assert bound is None or epoch - last < bound, (image, epoch, last, bound)


@SETTINGS
@given(scheduled_datasets(), st.integers(1, 30))
def test_jump_step_and_pickle_give_the_same_epoch(data, target):
    subset_of_image, bucket_of_image, rates, batch_size, seed = data
    try:
        stepping = ScheduledPlanner(subset_of_image, bucket_of_image, rates, batch_size, seed)
    except ScheduleError:
        return
    for epoch in range(1, target):
        stepping.plan_epoch(epoch)
    copy = pickle.loads(pickle.dumps(stepping))
    stepped = stepping.plan_epoch(target)
    jumped = ScheduledPlanner(subset_of_image, bucket_of_image, rates, batch_size, seed).plan_epoch(target)
    for other in (jumped, copy.plan_epoch(target)):
        assert np.array_equal(stepped.image_indices, other.image_indices)
        assert np.array_equal(stepped.batch_offsets, other.batch_offsets)
        assert np.array_equal(stepped.batch_bucket, other.batch_bucket)
