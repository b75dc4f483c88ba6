"""Per-epoch allocation: how many fractional picks each bucket and each cell gets.

Two levels of deficit scheduling, all in integer credit units:
1. Buckets. Each bucket accrues its fractional demand every epoch. Its free slots (the empty places
   in its last base batch) are served first. Then the K extra batches go, one by one, to the bucket
   with the most credit per batch it can fill; a batch serves min(fill, max(1, ceil(credit)))
   picks, never more than the images the bucket has left this epoch.
2. Cells. A bucket's picks go, one by one, to its most overdue cell: images owed plus half
   the epochs waited, so neither slow cells wait behind fast ones nor fast cells fall images behind.

Credit carries over between epochs, so amounts stay right epoch by epoch and over any run. The
allocation depends only on the layout and the previous epoch's credits, never on which images were
picked, so replaying it from epoch 1 costs O(buckets + cells) per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kohya_multiplier.planner.layout import UNITS_PER_IMAGE, DatasetLayout
from kohya_multiplier.planner.tickets import take_most_overdue

Q = UNITS_PER_IMAGE
# Weight of an epoch waited against an image owed in a cell's lateness (tuned on the contract's
# 25-subject case and the slow-cell cases of tests/test_planner_regressions.py).
EPOCH_WEIGHT = 0.5


@dataclass(frozen=True)
class CreditState:
    bucket_credit: np.ndarray  # (B,) int64 units
    cell_credit: np.ndarray  # (C,) int64 units

    @classmethod
    def initial(cls, layout: DatasetLayout) -> "CreditState":
        return cls(np.zeros(layout.n_buckets, dtype=np.int64), np.zeros(layout.cell_size.size, dtype=np.int64))


@dataclass(frozen=True)
class EpochAllocation:
    free_picks: np.ndarray  # (B,) fractional picks placed in the free slots of base batches
    full_batches: np.ndarray  # (B,) extra batches holding batch_fill[b] picks
    partial_batches: list[tuple[int, int]]  # (bucket, picks) extra batches holding fewer
    cell_picks: np.ndarray  # (C,) fractional picks of each cell this epoch

    def extra_batch_sizes(self, layout: DatasetLayout, bucket: int) -> list[int]:
        sizes = [int(layout.batch_fill[bucket])] * int(self.full_batches[bucket])
        sizes.extend(picks for b, picks in self.partial_batches if b == bucket)
        return sizes


def allocate_epoch(layout: DatasetLayout, state: CreditState) -> tuple[EpochAllocation, CreditState]:
    """One epoch's allocation from the credits left by the previous epoch."""
    credit = state.bucket_credit + layout.demand
    left = layout.capacity.copy()

    free_picks = np.clip(credit // Q, 0, np.minimum(layout.free_slots, left))
    credit = credit - free_picks * Q
    left = left - free_picks

    fill = layout.batch_fill
    remaining = layout.extra_batches
    full_batches = np.zeros(layout.n_buckets, dtype=np.int64)
    fillable = fill > 0
    if remaining and fillable.any():
        # Whole batches first: every bucket with credit for a full batch outranks every bucket without.
        step = np.where(fillable, fill, 1) * Q
        level = np.floor_divide(credit, step)
        whole_ready = np.where(fillable, np.clip(level, 0, left // np.where(fillable, fill, 1)), 0)
        if whole_ready.sum() <= remaining:
            full_batches = whole_ready
        else:  # more full batches are due than there are: the most credit per batch first
            full_batches = take_most_overdue(
                credit, step.astype(np.float64), step, whole_ready, np.zeros(layout.n_buckets, dtype=np.int64),
                np.array([remaining]),
            )
        credit = credit - full_batches * fill * Q
        left = left - full_batches * fill
        remaining -= int(full_batches.sum())

    partial_batches: list[tuple[int, int]] = []
    while remaining > 0:
        eligible = left > 0
        # Proven by the choice of K (layout.py): K extra batches never use up every fractional image.
        assert eligible.any(), "planner invariant broken: no fractional image left for an extra batch"
        priority = np.where(eligible, credit / (np.maximum(fill, 1) * Q), -np.inf)
        # Round the credit up: a batch that takes a bucket's turn carries a whole batch's worth of
        # its demand, as K assumes; the surplus is a debt that lowers the bucket's next priority.
        picks = np.minimum(np.minimum(fill, np.maximum(1, -(-credit // Q))), left)
        order = np.argsort(-priority, kind="stable")[:remaining]
        # Usually the top buckets each take one batch and drop to no credit: one step serves them all,
        # exactly as the one-at-a-time greedy would. Otherwise take the single best and look again.
        if priority[order[-1]] > 0 and (credit[order] - picks[order] * Q <= 0).all():
            served = order
        else:
            served = order[:1]
        partial_batches.extend((int(b), int(picks[b])) for b in served)
        credit[served] -= picks[served] * Q
        left[served] -= picks[served]
        remaining -= served.size

    bucket_picks = layout.capacity - left
    cell_credit = state.cell_credit + layout.cell_demand
    # A cell's next pick is due once it has half an image of credit. Its lateness after that counts
    # both ways: images owed plus half the epochs waited (credit / rate).
    # Epochs alone let a fast cell owe several images; images alone keep a slow cell (0.03 images
    # per epoch) waiting dozens of epochs behind fast ones. (c/Q + w c/r = c / (rQ / (r + wQ)).)
    rate = layout.cell_demand.astype(np.float64)
    cell_picks = take_most_overdue(
        cell_credit - Q // 2, rate * Q / (rate + EPOCH_WEIGHT * Q), Q, layout.cell_size, layout.cell_bucket, bucket_picks, layout.cell_bucket_starts
    )
    # A bucket that serves close to all its images forces picks on cells that had no credit left.
    # Such forced picks are extra, not an advance: charging them would leave a slow cell (f x n
    # of 0.03 images per epoch) owing for hundreds of epochs, starving its images. So a cell never
    # owes more than one image.
    cell_credit = np.maximum(cell_credit - cell_picks * Q, -Q)
    allocation = EpochAllocation(free_picks, full_batches, partial_batches, cell_picks)
    return allocation, CreditState(credit, cell_credit)
