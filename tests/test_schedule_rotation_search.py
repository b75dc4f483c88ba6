"""A targeted search for the scheduled rotation bound (README: Schedules) on small awkward datasets.

An image waits at most until its subset's expected picks per image, counted from its last
training, reach 1 twice over, plus 2 epochs (counted again from the epoch before any epoch where
the subset's fraction crosses 1/2). Hypothesis steers towards the worst ratio of an image's wait
to that bound (``target``), over datasets where it is hardest to keep: 2 to 6 buckets, single-image
cells, batch sizes 1 and 2, slow rates, step and linear schedules that cross 1/2, windows.

CI runs a fixed budget (PLANNER_SEARCH_EXAMPLES, default 25); a long local run:
    PLANNER_SEARCH_EXAMPLES=2000 python -m pytest tests/test_schedule_rotation_search.py
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from kohya_multiplier.dataset.rates import DatasetRates, SubsetRate
from kohya_multiplier.dataset.schedules import Schedule
from kohya_multiplier.planner.scheduled import ScheduledPlanner, ScheduleError
from kohya_multiplier.report.data import scheduled_rotation_bound, walk_switches

EXAMPLES = int(os.environ.get("PLANNER_SEARCH_EXAMPLES", "25"))
EPOCHS = 60
RATE = st.sampled_from([0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.55, 0.7, 0.9, 1.0, 1.4, 2.6])


@st.composite
def awkward_schedules(draw):
    n_buckets = draw(st.integers(2, 6))
    n_subsets = draw(st.integers(1, 4))
    cells = draw(st.lists(st.tuples(st.integers(0, n_subsets - 1), st.integers(0, n_buckets - 1),
                                    st.sampled_from([1, 1, 1, 2, 3, 5, 9])), min_size=2, max_size=12))
    subset_of_image = np.concatenate([np.full(size, s) for s, _, size in cells])
    bucket_of_image = np.concatenate([np.full(size, b) for _, b, size in cells])
    order = np.argsort(subset_of_image, kind="stable")
    subset_of_image, bucket_of_image = subset_of_image[order], bucket_of_image[order]
    sizes = np.bincount(subset_of_image, minlength=n_subsets)
    subsets = []
    for s in range(n_subsets):
        epochs = sorted(draw(st.sets(st.integers(1, 40), min_size=1, max_size=4)))
        schedule = Schedule(tuple(epochs), tuple(draw(RATE) for _ in epochs), draw(st.booleans()))
        start = draw(st.sampled_from([1, 1, 1, 5, 12]))
        subsets.append(SubsetRate(int(sizes[s]), schedule=schedule, start_epoch=start))
    if not any(s.start_epoch == 1 for s in subsets):
        subsets[0] = SubsetRate(int(sizes[0]), value=0.3)
    total = draw(st.one_of(st.none(), st.sampled_from([4.0, 10.0, 25.0])))
    return subset_of_image, bucket_of_image, DatasetRates(subsets, total), draw(st.integers(1, 2)), draw(st.integers(0, 2**32))


def worst_wait_ratio(subset_of_image, bucket_of_image, rates, batch_size, seed) -> float:
    """The longest wait of any image against its bound (below 1: within it)."""
    planner = ScheduledPlanner(subset_of_image, bucket_of_image, rates, batch_size, seed)
    trained = np.zeros((EPOCHS + 1, subset_of_image.size), dtype=bool)
    for epoch in range(1, EPOCHS + 1):
        trained[epoch, planner.plan_epoch(epoch).image_indices] = True
    worst = 0.0
    for subset in range(len(rates.subsets)):
        rate_of = lambda e, subset=subset: rates.at(e)[subset]  # noqa: E731
        switches = walk_switches(rate_of, 1, EPOCHS)
        for image in np.flatnonzero(subset_of_image == subset):
            last = None
            for epoch in range(1, EPOCHS + 1):
                if rate_of(epoch) <= 0:
                    last = None
                    continue
                last = epoch - 1 if last is None else last
                if trained[epoch, image]:
                    last = epoch
                    continue
                bound = scheduled_rotation_bound(rate_of, last, switches=switches)
                if bound is not None:
                    worst = max(worst, (epoch - last) / bound)
    return worst


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(awkward_schedules())
def test_no_image_waits_beyond_its_scheduled_bound(data):
    try:
        ratio = worst_wait_ratio(*data)
    except ScheduleError:
        return  # refused before training
    target(ratio, label="wait / bound")
    assert ratio < 1.0, ratio
