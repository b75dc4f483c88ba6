"""The static shape of a dataset's epochs: cells, integer-part lists, demands and the epoch length.

Everything here depends only on the dataset (subset and bucket of each image, multipliers, batch
size), never on the epoch, so it is computed once.

Vocabulary:
- a *cell* is the images of one subset in one bucket whose subset has a fractional part f > 0;
  fractional picks rotate inside a cell;
- credit is counted in integer *units*, ``UNITS_PER_IMAGE`` per image, so that 0.29 x 100 images
  accrue exactly 29 images per epoch and long runs never drift the way float sums do.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from kohya_multiplier.dataset.multipliers import split_multiplier, split_multipliers
from kohya_multiplier.planner.tickets import group_starts

UNITS_PER_IMAGE = 1 << 20


@dataclass(frozen=True)
class DatasetLayout:
    batch_size: int
    n_buckets: int
    # per bucket
    integer_lists: list[np.ndarray]  # image indices, each repeated by its integer part, canonical order
    base_batches: np.ndarray  # (B,) ceil(integer appearances / batch_size)
    free_slots: np.ndarray  # (B,) empty places in the last base batch
    capacity: np.ndarray  # (B,) images with a fractional part: most fractional picks per epoch
    batch_fill: np.ndarray  # (B,) picks a fractional batch of the bucket holds at most (<= batch size)
    # per cell (ordered by bucket, then subset)
    cell_subset: np.ndarray
    cell_bucket: np.ndarray
    cell_members: np.ndarray  # image indices of every cell, cell after cell, canonical order within
    cell_start: np.ndarray  # (C,) where each cell's images start in cell_members
    cell_size: np.ndarray
    cell_demand: np.ndarray  # units per epoch
    cell_excludes: np.ndarray  # bool: rotate the images left out (f > 1/2) instead of the picks
    cell_bucket_starts: np.ndarray  # (B,) first cell of each bucket
    # epoch shape
    extra_batches: int  # K
    fractional_batches: Fraction  # exact fractional demand in batches, before rounding up to K
    # Room left in extra batches takes picks due next epoch, so batches run full (a static plan,
    # whose K is the fewest that keep up); a scheduled plan, sized with room per bucket, says False.
    fills_room: bool = True

    # Derived once per layout (the allocation runs every epoch of a replay).
    @functools.cached_property
    def cell_rate(self) -> np.ndarray:
        """(C,) demand in units per epoch as floats, at least one unit (a divisor)."""
        return np.maximum(self.cell_demand, 1).astype(np.float64)

    @functools.cached_property
    def fill(self) -> np.ndarray:
        """(B,) batch_fill, at least 1 (a divisor)."""
        return np.maximum(self.batch_fill, 1)

    @functools.cached_property
    def bucket_has_cells(self) -> np.ndarray:
        return np.diff(np.r_[self.cell_bucket_starts, self.cell_size.size]) > 0

    @functools.cached_property
    def bucket_first_cells(self) -> np.ndarray:
        """First cell of each bucket that has cells (where per-bucket sums start)."""
        return self.cell_bucket_starts[self.bucket_has_cells]

    @functools.cached_property
    def window_sign(self) -> np.ndarray:
        """(C,) a cell's rotation window is window_sign x picks + window_base: picks, or n - picks
        where it walks the images it leaves out."""
        return np.where(self.cell_excludes, -1, 1).astype(np.int64)

    @functools.cached_property
    def window_base(self) -> np.ndarray:
        return np.where(self.cell_excludes, self.cell_size, 0).astype(np.int64)

    @functools.cached_property
    def demand_float(self) -> np.ndarray:
        """(C,) cell_demand as floats (the hand-back of a rounded-up K scales it every epoch)."""
        return self.cell_demand.astype(np.float64)

    @functools.cached_property
    def cell_demand_per_bucket(self) -> np.ndarray:
        """(B,) units per epoch of each bucket's cells."""
        return np.bincount(self.cell_bucket, weights=self.cell_demand, minlength=self.n_buckets).astype(np.int64)

    @functools.cached_property
    def demand_divisor(self) -> int:
        """Total demand in units, at least 1 (a divisor)."""
        return max(int(self.cell_demand.sum()), 1)

    @functools.cached_property
    def extra_batches_exact(self) -> bool:
        """Whether K equals the fractional demand in batches (no spare capacity on average)."""
        return Fraction(self.extra_batches) == self.fractional_batches

    @property
    def base_total(self) -> int:
        return int(self.base_batches.sum())

    @property
    def epoch_length(self) -> int:
        return self.base_total + self.extra_batches


def build_layout(subset_of_image, bucket_of_image, multipliers, batch_size: int, image_repeats=None) -> DatasetLayout:
    """``image_repeats`` (optional, one integer >= 0 per image) replaces the integer part of each
    image's multiplier: stock sd-scripts repeats regularization images of one subset differently
    (see kohya_multiplier.dataset.regularization). Fractional parts still come from ``multipliers``."""
    subset_of_image, bucket_of_image = _checked_images(subset_of_image, bucket_of_image, multipliers, batch_size)
    n_subsets = len(multipliers)
    n_buckets = int(bucket_of_image.max()) + 1 if bucket_of_image.size else 0

    parts = [split_multiplier(multiplier) for multiplier in multipliers]
    integer_part = np.array([part[0] for part in parts], dtype=np.int64)
    fraction = np.array([part[1] for part in parts], dtype=np.float64)
    repeats = _repeats_per_image(integer_part, subset_of_image, image_repeats)
    integer_lists, base_batches, free_slots = _base_batches(bucket_of_image, repeats, n_buckets, batch_size)
    cells = _cells(subset_of_image, bucket_of_image, fraction, n_subsets)
    cell_demand = _share_subset_demand(fraction, cells.subset, cells.size, n_subsets)
    # A fraction so close to 1 that it rounds to a whole image per image would break "at most one
    # fractional pick per image per epoch"; keep it strictly below.
    cell_demand = np.minimum(cell_demand, cells.size * UNITS_PER_IMAGE - 1)

    demand = np.bincount(cells.bucket, weights=cell_demand, minlength=n_buckets).astype(np.int64)
    capacity = np.bincount(cells.bucket, weights=cells.size, minlength=n_buckets).astype(np.int64)
    batch_fill = _batch_fill(demand, capacity, free_slots, batch_size)
    fractional_batches = _fractional_batches(demand, capacity, free_slots, batch_fill)

    return DatasetLayout(
        batch_size=batch_size,
        n_buckets=n_buckets,
        integer_lists=integer_lists,
        base_batches=base_batches,
        free_slots=free_slots,
        capacity=capacity,
        batch_fill=batch_fill,
        cell_subset=cells.subset,
        cell_bucket=cells.bucket,
        cell_members=cells.members,
        cell_start=cells.start,
        cell_size=cells.size,
        cell_demand=cell_demand,
        cell_excludes=fraction[cells.subset] > 0.5,
        cell_bucket_starts=group_starts(cells.bucket, n_buckets),
        # K: the extra batches, enough for the demand the free slots cannot take (see _fractional_batches).
        extra_batches=math.ceil(fractional_batches),
        fractional_batches=fractional_batches,
    )


def _checked_images(subset_of_image, bucket_of_image, multipliers, batch_size: int):
    """The subset and bucket of each image as int64 arrays, after checking them and the batch size."""
    subset_of_image = np.asarray(subset_of_image, dtype=np.int64)
    bucket_of_image = np.asarray(bucket_of_image, dtype=np.int64)
    if subset_of_image.shape != bucket_of_image.shape or subset_of_image.ndim != 1:
        raise ValueError("subset_of_image and bucket_of_image must be 1-D arrays of the same length")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    n_subsets = len(multipliers)
    if subset_of_image.size and (subset_of_image.min() < 0 or subset_of_image.max() >= n_subsets):
        raise ValueError("subset index out of range")
    if bucket_of_image.size and bucket_of_image.min() < 0:
        raise ValueError("bucket index must be non-negative")
    return subset_of_image, bucket_of_image


def _repeats_per_image(integer_part, subset_of_image, image_repeats) -> np.ndarray:
    """How often each image appears in every epoch: its subset's integer part, or ``image_repeats``."""
    if image_repeats is None:
        return integer_part[subset_of_image]
    repeats = np.asarray(image_repeats, dtype=np.int64).reshape(-1)
    if repeats.shape != subset_of_image.shape or (repeats.size and repeats.min() < 0):
        raise ValueError("image_repeats must hold one integer >= 0 per image")
    return repeats


def _base_batches(bucket_of_image, repeats, n_buckets: int, batch_size: int):
    """Per bucket: the integer-part list (each image repeated, canonical order), the base batches
    it fills and the free slots left in the last of them."""
    appearances = np.bincount(bucket_of_image, weights=repeats, minlength=n_buckets).astype(np.int64)
    base_batches = -(-appearances // batch_size)
    free_slots = base_batches * batch_size - appearances
    by_bucket = np.argsort(bucket_of_image, kind="stable")
    bucket_sizes = np.bincount(bucket_of_image, minlength=n_buckets)
    integer_lists = [
        np.repeat(members, repeats[members]) for members in np.split(by_bucket, np.cumsum(bucket_sizes)[:-1])
    ]
    return integer_lists, base_batches, free_slots


@dataclass(frozen=True)
class _Cells:
    subset: np.ndarray
    bucket: np.ndarray
    members: np.ndarray  # image indices, cell after cell
    start: np.ndarray  # where each cell's images start in members
    size: np.ndarray


def _cells(subset_of_image, bucket_of_image, fraction, n_subsets: int) -> _Cells:
    """Cells: fractional subsets x buckets, ordered by (bucket, subset) so a bucket's cells are contiguous."""
    fractional_image = fraction[subset_of_image] > 0
    members = np.flatnonzero(fractional_image)
    order = np.lexsort((members, subset_of_image[members], bucket_of_image[members]))
    members = members[order]
    keys = bucket_of_image[members] * n_subsets + subset_of_image[members]
    if members.size:
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    else:
        starts = np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], members.size].astype(np.int64)
    cell_subset = subset_of_image[members[starts]] if members.size else np.zeros(0, dtype=np.int64)
    cell_bucket = bucket_of_image[members[starts]] if members.size else np.zeros(0, dtype=np.int64)
    cell_size = (ends - starts).astype(np.int64)
    return _Cells(cell_subset, cell_bucket, members, starts.astype(np.int64), cell_size)


def _batch_fill(demand, capacity, free_slots, batch_size: int) -> np.ndarray:
    """Per bucket: the picks a fractional batch holds at most.

    A fractional batch carries at most one epoch's worth of its bucket's demand beyond the free
    slots. Bigger batches would come only every few epochs, in chunks: images would be picked
    early, then wait, and rotation gaps would exceed 2 x ceil(1/f) + 2 epochs; a cell giving at
    most n picks per epoch would also force picks on cells without credit. Big buckets
    (demand >= batch size) still fill whole batches.
    """
    overflow = (demand - free_slots * UNITS_PER_IMAGE) // UNITS_PER_IMAGE
    batch_fill = np.minimum(np.minimum(batch_size, capacity), np.maximum(1, overflow))
    batch_fill[capacity == 0] = 0
    return batch_fill


def _fractional_batches(demand, capacity, free_slots, batch_fill) -> Fraction:
    """The exact fractional demand in batches, before rounding up to K.

    Enough extra batches for the demand the free slots cannot take, counted in batches each bucket
    can really fill (a bucket with 3 fractional images fills batches of at most 3). sizing.py
    raises K where a simulation shows picks falling behind.
    """
    fractional_batches = Fraction(0)
    for bucket in range(demand.size):
        if capacity[bucket] == 0:
            continue
        overflow = Fraction(int(demand[bucket]), UNITS_PER_IMAGE) - int(free_slots[bucket])
        if overflow > 0:
            fractional_batches += overflow / int(batch_fill[bucket])
    return fractional_batches


def _share_subset_demand(fraction, cell_subset, cell_size, n_subsets) -> np.ndarray:
    """Units per epoch of each cell: the subset's demand, rounded once, shared by largest remainder.

    Rounding each cell separately would let 25/N x N images over ten buckets add up to a hair more
    than 25 and cost a whole extra batch per epoch.
    """
    subset_images = np.bincount(cell_subset, weights=cell_size, minlength=n_subsets)
    subset_units = np.rint(fraction * subset_images * UNITS_PER_IMAGE).astype(np.int64)
    exact = np.zeros(cell_size.size)
    nonzero = subset_images[cell_subset] > 0
    exact[nonzero] = subset_units[cell_subset][nonzero] * (cell_size[nonzero] / subset_images[cell_subset][nonzero])
    units = np.floor(exact).astype(np.int64)
    short = subset_units - np.bincount(cell_subset, weights=units, minlength=n_subsets).astype(np.int64)
    # Give the units lost to flooring to the cells with the largest remainders (then lowest index).
    order = np.lexsort((np.arange(cell_size.size), -(exact - units), cell_subset))
    ranked_subset = cell_subset[order]
    starts = np.searchsorted(ranked_subset, np.arange(n_subsets))
    rank = np.arange(order.size) - starts[ranked_subset]
    units[order[rank < short[ranked_subset]]] += 1
    return units


# --------------------------------------------------------------------------------------------
# Scheduled datasets: one set of cells, the rates of each epoch


def every_image_in_cells(subset_of_image, bucket_of_image, n_subsets: int, batch_size: int) -> DatasetLayout:
    """The cells of a scheduled dataset: every subset's images, as any subset may have a
    fractional part in some epoch. The rates of each epoch come from :func:`epoch_layout`; the
    cells, and so the credits and rotation streams, stay the same across epochs."""
    return build_layout(subset_of_image, bucket_of_image, [0.5] * n_subsets, batch_size)


def epoch_layout(cells: DatasetLayout, multipliers, walks_left_out=None) -> DatasetLayout:
    """``cells`` (from :func:`every_image_in_cells`) with one epoch's multipliers: the base batches
    of its integer parts and the demand of its fractional parts, O(cells). Its integer lists are
    left empty (a replay needs none): :func:`with_integer_lists` adds them for an epoch that is planned.
    ``walks_left_out``: (S,) which subsets' cells rotate the images they leave out (default: a
    fraction above 1/2 this epoch; a schedule decides it once, so no cell switches walks)."""
    integer_part, fraction = split_multipliers(multipliers)
    n_buckets, batch_size = cells.n_buckets, cells.batch_size
    appearances = np.bincount(cells.cell_bucket, weights=integer_part[cells.cell_subset] * cells.cell_size,
                              minlength=n_buckets).astype(np.int64)
    base_batches = -(-appearances // batch_size)
    free_slots = base_batches * batch_size - appearances
    cell_demand = _share_subset_demand(fraction, cells.cell_subset, cells.cell_size, len(multipliers))
    cell_demand = np.minimum(cell_demand, cells.cell_size * UNITS_PER_IMAGE - 1)
    demand = np.bincount(cells.cell_bucket, weights=cell_demand, minlength=n_buckets).astype(np.int64)
    has_fraction = fraction[cells.cell_subset] > 0
    capacity = np.bincount(cells.cell_bucket, weights=cells.cell_size * has_fraction, minlength=n_buckets).astype(np.int64)
    batch_fill = _batch_fill(demand, capacity, free_slots, batch_size)
    fractional_batches = _fractional_batches(demand, capacity, free_slots, batch_fill)
    return dataclasses.replace(
        cells, integer_lists=[], base_batches=base_batches, free_slots=free_slots, capacity=capacity, batch_fill=batch_fill,
        cell_demand=cell_demand, cell_excludes=(fraction > 0.5 if walks_left_out is None else np.asarray(walks_left_out))[cells.cell_subset],
        extra_batches=math.ceil(fractional_batches),
        fractional_batches=fractional_batches,
    )


def members_in_bucket_order(layout: DatasetLayout) -> np.ndarray:
    """Positions in cell_members of every image, by bucket, then canonical index (the order of
    integer lists)."""
    return np.lexsort((layout.cell_members, np.repeat(layout.cell_bucket, layout.cell_size)))


def with_integer_lists(layout: DatasetLayout, multipliers, order: np.ndarray | None = None) -> DatasetLayout:
    """An epoch layout (of :func:`every_image_in_cells`) with its integer lists: each image
    repeated by its subset's integer part, bucket by bucket in canonical order, as build_layout
    makes them. ``order``: :func:`members_in_bucket_order` of the cells, when already known."""
    integer_part, _ = split_multipliers(multipliers)
    bucket_of_member = np.repeat(layout.cell_bucket, layout.cell_size)
    order = members_in_bucket_order(layout) if order is None else order
    repeats = integer_part[np.repeat(layout.cell_subset, layout.cell_size)[order]]
    counts = np.bincount(bucket_of_member[order], weights=repeats, minlength=layout.n_buckets).astype(np.int64)
    repeated = np.repeat(layout.cell_members[order], repeats)
    return dataclasses.replace(layout, integer_lists=np.split(repeated, np.cumsum(counts)[:-1]) if layout.n_buckets else [])

