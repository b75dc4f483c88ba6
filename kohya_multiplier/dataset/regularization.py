"""sd-scripts' own regularization rule, for datasets without any multiplier ("stock" datasets).

A dataset in which no subset has a multiplier trains exactly as stock sd-scripts trains it, and
sd-scripts does not repeat a regularization image by its subset's ``num_repeats`` alone. Its
``DreamBoothDataset.__init__`` (the same code at v0.9.1, at main 48d368fa, where it is in
``library/train_util.py``, and at v0.11.1, where it moved to ``library/dreambooth_dataset.py``):

1. Subsets are read in config order. A subset is skipped when its ``num_repeats`` is below 1
   (a validation dataset forces it to 1), when an earlier registered subset has the same
   ``image_dir`` string, or when it has no image (after v0.11.1's ``skip_image_resolution``
   filter and, for training subsets, after the validation split; a validation dataset drops its
   regularization subsets, a training dataset keeps them whole).
2. ``num_train_images`` = sum over training subsets of ``num_repeats x images``. Training images
   are registered with their subset's ``num_repeats``; regularization images are queued, subsets
   in config order (DreamBooth folders: in the file-system order sd-scripts lists them), images in
   the order sd-scripts lists them (sorted by path).
3. If there are regularization images, the queue is walked: the first pass registers each image
   with its subset's ``num_repeats`` and stops as soon as the running total reaches
   ``num_train_images`` (images after that are never registered: never trained, never cached);
   if the first pass ends below it, further passes add one repeat to each image in turn, stopping
   as soon as the total reaches it. With no training images nothing is registered.

So per epoch a regularization image is trained 0, ``num_repeats + q`` or ``num_repeats + q + 1``
times. The revisions differ only in what decides the image lists (validation split from main on,
``skip_image_resolution`` from v0.11.1 on); the rule is one, and :func:`stock_regularization_repeats`
implements it in closed form (the loop is O(passes x images) in sd-scripts).

Everything here is pure (numpy only) and shared by the dry run and the training adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from kohya_multiplier.dataset.types import DatasetSpec, SubsetSpec

STOCK_REGULARIZATION = "stock regularization"  # origin shown for regularization subsets of stock datasets


def stock_regularization_repeats(reg_repeats: Sequence[int], num_train_images: int) -> np.ndarray:
    """Per regularization image, the repeats stock sd-scripts gives it (0: never registered).

    ``reg_repeats`` lists the ``num_repeats`` of each regularization image in registration order
    (subsets in config order, images sorted by path); every entry must be at least 1 (sd-scripts
    skips subsets below 1 before this point). Equal to sd-scripts' loop:

    >>> stock_regularization_repeats([1, 1, 1], 2).tolist()   # the tail is never used
    [1, 1, 0]
    >>> stock_regularization_repeats([1, 1, 1], 7).tolist()   # further passes add one in turn
    [3, 2, 2]
    >>> stock_regularization_repeats([3, 3], 4).tolist()      # the first pass may overshoot
    [3, 3]
    """
    repeats = np.asarray(reg_repeats, dtype=np.int64).reshape(-1)
    counts = np.zeros(repeats.size, dtype=np.int64)
    if repeats.size and repeats.min() < 1:
        raise ValueError("regularization repeats must be >= 1 (sd-scripts skips other subsets)")
    target = int(num_train_images)
    if repeats.size == 0 or target <= 0:
        return counts
    running = np.cumsum(repeats)
    if running[-1] >= target:
        last = int(np.searchsorted(running, target, side="left"))  # first image at which the total reaches it
        counts[: last + 1] = repeats[: last + 1]
        return counts
    whole, rest = divmod(target - int(running[-1]), repeats.size)
    counts[:] = repeats + whole
    counts[:rest] += 1
    return counts


def num_train_images(subsets: Sequence["SubsetSpec"]) -> int:
    """sd-scripts' ``num_train_images`` of a stock dataset: training images times their repeats."""
    return sum(s.num_repeats * len(s.images) for s in subsets if not s.is_reg and not s.excluded)


def registration_order(subsets: Sequence["SubsetSpec"]) -> list[int]:
    """Indices of the regularization subsets that take part, in the order sd-scripts queues them:
    config order, or for DreamBooth folders sd-scripts' own listing order of the folder."""
    reg = [i for i, s in enumerate(subsets) if s.is_reg and not s.excluded]
    return sorted(reg, key=lambda i: (subsets[i].listing_order if subsets[i].listing_order is not None else i, i))


def stock_image_repeats(dataset: "DatasetSpec") -> list[np.ndarray] | None:
    """Per subset, the repeats of each of its images (aligned with ``subset.images``) as stock
    sd-scripts trains them; None for a dataset that uses multipliers (the planner's own rules).

    Training subsets repeat every image ``num_repeats`` times, excluded subsets 0 times, and
    regularization subsets follow :func:`stock_regularization_repeats` over all of them together.
    """
    if dataset.uses_multiplier:
        return None
    result = [np.zeros(len(s.images), dtype=np.int64) for s in dataset.subsets]
    reg = registration_order(dataset.subsets)
    for i, s in enumerate(dataset.subsets):
        if not s.is_reg and not s.excluded:
            result[i][:] = s.num_repeats
    if reg:
        queue = np.concatenate([np.full(len(dataset.subsets[i].images), dataset.subsets[i].num_repeats, dtype=np.int64) for i in reg])
        counts = stock_regularization_repeats(queue, num_train_images(dataset.subsets))
        starts = np.cumsum([0] + [len(dataset.subsets[i].images) for i in reg])
        for k, i in enumerate(reg):
            result[i] = counts[starts[k] : starts[k + 1]]
    return result


def stock_regularization_note(subsets: Sequence["SubsetSpec"], prefix: str, where: str) -> str | None:
    """The note for a stock dataset with regularization images: what sd-scripts does with them."""
    reg = [subsets[i] for i in registration_order(subsets)]
    if not reg:
        return None
    train = num_train_images(subsets)
    counts = stock_regularization_repeats([s.num_repeats for s in reg for _ in s.images], train)
    unused = int(np.count_nonzero(counts == 0))
    text = (
        f"{prefix}{where}: no multiplier in this dataset, so sd-scripts trains it as usual: it repeats "
        f"regularization images one by one to match the {train} training images per epoch"
    )
    if unused:
        text += f", and {unused} of the {counts.size} regularization images are never used"
    text += "; a multiplier on any subset of the dataset makes all of them rotate through training"
    return text


__all__ = [
    "STOCK_REGULARIZATION",
    "registration_order",
    "num_train_images",
    "stock_image_repeats",
    "stock_regularization_note",
    "stock_regularization_repeats",
]
