"""sd-scripts' regularization rule for datasets without multipliers, and the planner's stock datasets.

The rule is tested against a line-by-line transcription of sd-scripts' loop
(``DreamBoothDataset.__init__``: identical at v0.9.1, main 48d368fa and v0.11.1), on inputs built
here; then the planner is checked to train a stock dataset exactly as sd-scripts does: the same
batches per epoch (sum over buckets of ceil(count / batch size)) and, every epoch, each image as
many times as sd-scripts repeats it, in its bucket.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kohya_multiplier.dataset.buckets import BucketLayout
from kohya_multiplier.dataset.types import DatasetSpec, SubsetSpec
from kohya_multiplier.dataset.images import ImageEntry
from kohya_multiplier.planner.plan_input import build_plan_input, plan_input_for_dataset, planner_for_dataset, planner_from_input
from kohya_multiplier.planner import DatasetPlanner
from kohya_multiplier.dataset.regularization import stock_image_repeats, stock_regularization_note, stock_regularization_repeats


# ---------------------------------------------------------------------------------------------
# sd-scripts, transcribed


class _Info:
    def __init__(self, key, num_repeats):
        self.key = key
        self.num_repeats = num_repeats


def sd_scripts_registration(subsets, is_training_dataset=True):
    """sd-scripts' subset loop and regularization loop, as written there.

    subsets: (image_dir, num_repeats, is_reg, image count). Returns {(subset, image): repeats} of
    the registered images (``self.image_data``) and ``num_train_images``.
    """
    image_data = {}
    registered_dirs = []
    num_train_images = 0
    num_reg_images = 0
    reg_infos = []
    for index, (image_dir, subset_repeats, is_reg, count) in enumerate(subsets):
        num_repeats = subset_repeats if is_training_dataset else 1
        if num_repeats < 1:
            continue
        if image_dir in registered_dirs:
            continue
        if is_reg and not is_training_dataset:
            count = 0  # validation datasets drop regularization subsets
        if count < 1:
            continue
        if is_reg:
            num_reg_images += num_repeats * count
        else:
            num_train_images += num_repeats * count
        for k in range(count):
            info = _Info((index, k), num_repeats)
            if is_reg:
                reg_infos.append(info)
            else:
                image_data[info.key] = info
        registered_dirs.append(image_dir)
    if num_reg_images != 0:
        n = 0
        first_loop = True
        while n < num_train_images:
            for info in reg_infos:
                if first_loop:
                    image_data[info.key] = info
                    n += info.num_repeats
                else:
                    info.num_repeats += 1
                    n += 1
                if n >= num_train_images:
                    break
            first_loop = False
    return {key: info.num_repeats for key, info in image_data.items()}, num_train_images


def sd_scripts_epoch(repeats_by_key: dict, bucket_of_key: dict, batch_size: int):
    """sd-scripts' make_buckets: each key num_repeats times in its bucket; ceil(len / batch size) batches."""
    buckets: dict = {}
    for key, repeats in repeats_by_key.items():
        buckets.setdefault(bucket_of_key[key], []).extend([key] * repeats)
    batches = sum(math.ceil(len(keys) / batch_size) for keys in buckets.values())
    composition = Counter((bucket, key) for bucket, keys in buckets.items() for key in keys)
    return batches, composition


# ---------------------------------------------------------------------------------------------
# the rule


def reference_repeats(reg_repeats, num_train):
    subsets = [(f"r{i}", r, True, 1) for i, r in enumerate(reg_repeats)] + [("t", 1, False, num_train)]
    registered, _ = sd_scripts_registration(subsets)
    return [registered.get((i, 0), 0) for i in range(len(reg_repeats))]


@pytest.mark.parametrize(
    "reg, train, expected",
    [
        ([1, 1, 1], 0, [0, 0, 0]),  # no training images: no regularization image is registered
        ([1, 1, 1], 2, [1, 1, 0]),  # more regularization images than training: the tail is never used
        ([1, 1, 1], 3, [1, 1, 1]),  # equal
        ([1, 1, 1], 7, [3, 2, 2]),  # fewer: further passes add one repeat round-robin
        ([2, 2, 1], 3, [2, 2, 0]),  # the first pass registers whole num_repeats and may overshoot
        ([3, 1], 9, [6, 3]),  # 4 in the first pass, then 5 more one by one, in turn
        ([], 5, []),
    ],
)
def test_rule_examples(reg, train, expected):
    assert stock_regularization_repeats(reg, train).tolist() == expected
    assert reference_repeats(reg, train) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 6), max_size=40), st.integers(0, 400))
def test_rule_is_sd_scripts_loop(reg, train):
    result = stock_regularization_repeats(reg, train)
    assert result.tolist() == reference_repeats(reg, train)
    if reg and train > 0:
        assert result.sum() >= train  # reaches the training images per epoch ...
        registered = result > 0
        assert not (result[:-1] == 0)[registered[1:]].any()  # ... registering a prefix of the queue
        if result.sum() > train:  # overshoot only in the first pass, by less than the last image's repeats
            assert result.sum() - train < max(reg) and (result[registered] == np.array(reg)[registered]).all()
    else:
        assert result.sum() == 0


def test_rule_refuses_repeats_below_one():
    with pytest.raises(ValueError):
        stock_regularization_repeats([1, 0], 3)


def test_rule_is_closed_form_for_big_inputs():
    result = stock_regularization_repeats([1] * 7, 10**9)
    assert result.sum() == 10**9 and result.max() - result.min() == 1


# ---------------------------------------------------------------------------------------------
# datasets built here


def _subset(index, count, *, num_repeats=1, is_reg=False, size=(512, 512), multiplier=None):
    images = [ImageEntry(f"/d/s{index}/img{k:04d}.png", *size) for k in range(count)]
    effective = multiplier if multiplier is not None else float(num_repeats)
    return SubsetSpec(
        image_dir=f"/d/s{index}", name=f"s{index}", table=f"datasets[0].subsets[{index}]", is_reg=is_reg, images=images,
        multiplier=multiplier, multiplier_origin="subset" if multiplier is not None else "", num_repeats=num_repeats,
        effective_multiplier=effective, effective_origin="multiplier (subset)" if multiplier is not None else "num_repeats",
    )


def _dataset(subsets, batch_size=2):
    return DatasetSpec(
        index=0, batch_size=batch_size, resolution=(512, 512), enable_bucket=True, min_bucket_reso=256, max_bucket_reso=1024,
        bucket_reso_steps=64, bucket_no_upscale=False, subsets=subsets, uses_multiplier=any(s.multiplier is not None for s in subsets),
    )


SIZES = [(512, 512), (512, 768), (768, 512), (384, 640)]
subset_strategy = st.tuples(st.integers(0, 12), st.integers(0, 4), st.booleans(), st.sampled_from(SIZES))


@settings(max_examples=150, deadline=None)
@given(st.lists(subset_strategy, min_size=1, max_size=7))
def test_dataset_repeats_are_sd_scripts(specs):
    subsets = [_subset(i, n, num_repeats=r, is_reg=reg, size=size) for i, (n, r, reg, size) in enumerate(specs)]
    dataset = _dataset(subsets)
    registered, _ = sd_scripts_registration([(s.image_dir, s.num_repeats, s.is_reg, len(s.images)) for s in subsets])
    ours = stock_image_repeats(dataset)
    got = {(i, k): int(r) for i, rs in enumerate(ours) for k, r in enumerate(rs) if r > 0}
    assert got == registered


@settings(max_examples=100, deadline=None)
@given(st.lists(subset_strategy, min_size=1, max_size=6), st.integers(1, 5), st.integers(0, 2**32))
def test_planner_trains_a_stock_dataset_as_sd_scripts(specs, batch_size, seed):
    subsets = [_subset(i, n, num_repeats=r, is_reg=reg, size=size) for i, (n, r, reg, size) in enumerate(specs)]
    dataset = _dataset(subsets, batch_size)
    registered, _ = sd_scripts_registration([(s.image_dir, s.num_repeats, s.is_reg, len(s.images)) for s in subsets])
    layout = dataset.bucket_layout()
    bucket_of_key = {(i, k): layout.select(e.width, e.height) for i, s in enumerate(subsets) for k, e in enumerate(s.images)}
    batches, composition = sd_scripts_epoch(registered, bucket_of_key, batch_size)
    planner, plan_input = planner_for_dataset(dataset, seed)
    assert plan_input.stock and len(plan_input) == len(registered)  # unregistered images are not planned
    assert planner.epoch_length == batches
    key_of_path = {e.path: (i, k) for i, s in enumerate(subsets) for k, e in enumerate(s.images)}
    for epoch in (1, 2, 7):
        plan = planner.plan_epoch(epoch)
        assert len(plan) == batches
        got = Counter()
        for bucket, images in plan.batches:
            assert 1 <= len(images) <= batch_size
            for j in images:
                got[(plan_input.bucket_resolutions[bucket], key_of_path[plan_input.image_keys[j]])] += 1
        assert got == composition


def test_excluded_and_multiplier_datasets():
    subsets = [_subset(0, 3, num_repeats=0), _subset(1, 2, num_repeats=2), _subset(2, 5, is_reg=True, num_repeats=0),
               _subset(3, 6, is_reg=True)]
    repeats = stock_image_repeats(_dataset(subsets))
    assert [r.tolist() for r in repeats] == [[0, 0, 0], [2, 2], [0] * 5, [1, 1, 1, 1, 0, 0]]
    with_multiplier = subsets + [_subset(4, 2, multiplier=0.5)]
    assert stock_image_repeats(_dataset(with_multiplier)) is None
    assert plan_input_for_dataset(_dataset(with_multiplier)).image_repeats is None


def test_several_regularization_subsets_with_their_own_repeats():
    # 10 training images x 3 = 30; regularization: 4 x 2 = 8, then 5 x 3 = 15 (23), then 3 x 1 (26),
    # then one more each round-robin: 4 more.
    subsets = [_subset(0, 10, num_repeats=3), _subset(1, 4, is_reg=True, num_repeats=2), _subset(2, 5, is_reg=True, num_repeats=3),
               _subset(3, 3, is_reg=True)]
    repeats = stock_image_repeats(_dataset(subsets))
    assert [r.tolist() for r in repeats[1:]] == [[3, 3, 3, 3], [3, 3, 3, 3, 3], [1, 1, 1]]
    assert sum(int(r.sum()) for r in repeats[1:]) == 30


def test_no_training_images_means_no_regularization():
    subsets = [_subset(0, 4, is_reg=True), _subset(1, 0)]
    dataset = _dataset(subsets)
    assert [r.tolist() for r in stock_image_repeats(dataset)] == [[0, 0, 0, 0], []]
    planner, plan_input = planner_for_dataset(dataset, 0)
    assert len(plan_input) == 0 and plan_input.stock and planner.epoch_length == 0
    assert "never used" in stock_regularization_note(subsets, "", "datasets[0]")


def test_validation_dataset_rule_forces_one_repeat_and_drops_regularization():
    subsets = [("a", 3, False, 4), ("r", 2, True, 10)]
    registered, train = sd_scripts_registration(subsets, is_training_dataset=False)
    assert train == 4 and registered == {(0, k): 1 for k in range(4)}


def test_plan_input_carries_repeats_through_the_canonical_order():
    entries = [(1, "/b.png", (512, 512), 2), (0, "/z.png", (512, 768), 1), (0, "/a.png", (512, 512), 3)]
    plan_input = build_plan_input(entries)
    assert plan_input.image_keys == ["/a.png", "/z.png", "/b.png"]
    assert plan_input.image_repeats.tolist() == [3, 1, 2]
    planner = planner_from_input(plan_input, [1.0, 1.0], 2, 0)
    assert planner.epoch_length == math.ceil(5 / 2) + 1
    with pytest.raises(ValueError):
        build_plan_input([(0, "/a.png", (512, 512)), (0, "/b.png", (512, 512), 1)])


def test_image_repeats_replace_integer_parts_and_keep_fractions():
    planner = DatasetPlanner(np.array([0, 0, 1, 1]), np.zeros(4, dtype=np.int64), [1.0, 0.5], 4, 0, image_repeats=[2, 0, 1, 1])
    counts = Counter(planner.plan_epoch(1).image_indices.tolist())
    assert counts[0] == 2 and counts[1] == 0 and counts[2] + counts[3] == 3  # 1 + 1 whole, plus 0.5 x 2
    with pytest.raises(ValueError):
        DatasetPlanner(np.array([0]), np.array([0]), [1.0], 1, 0, image_repeats=[-1])
