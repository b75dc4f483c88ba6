"""DatasetPlanner: the plan of any epoch as a pure function of (seed, dataset, epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from kohya_multiplier.planner.assemble import EpochPlan, assemble_epoch
from kohya_multiplier.planner.credits import CreditState, EpochAllocation, allocate_epoch
from kohya_multiplier.planner.layout import DatasetLayout, build_layout
from kohya_multiplier.planner.rotation import RotationState, Walk, take
from kohya_multiplier.planner.sizing import with_enough_extra_batches
from kohya_multiplier.planner.tickets import ranges

# Plans of the same (seed, dataset, epoch) differ between versions; recorded with every schedule.
# 1: per-bucket credits, numpy-shuffled cycles (until 0.x); 2: per-cell deadlines, keyed permutations.
PLANNER_VERSION = 2


@dataclass(frozen=True)
class PlanSummary:
    epoch_length: int  # L batches, every epoch
    base_batches: int  # M: batches of the integer parts
    extra_batches: int  # K: batches added for the fractional parts
    fractional_batches: Fraction  # exact fractional demand in batches; K is at least its ceiling

    scheduled = False  # a ScheduledSummary says True

    @property
    def rounded_up(self) -> bool:
        return Fraction(self.extra_batches) != self.fractional_batches


def replay_state(planner, epoch: int) -> None:
    """Bring a planner's state (``_epoch``, ``_credit``, ``_rotation``) to the end of ``epoch``,
    one epoch at a time (``planner._step(walk, e)`` advances the credits and the walk by epoch e;
    ``planner._walk()`` starts the walk), from epoch 0 to go back. Both planners replay so."""
    if planner._epoch > epoch:
        planner._restart()
    if planner._epoch == epoch:
        return
    walk = planner._walk()
    try:
        while planner._epoch < epoch:
            walk = planner._step(walk, planner._epoch + 1)
            planner._epoch += 1
    except BaseException:
        planner._restart()  # interrupted in the middle of a step: start over next time
        raise
    planner._rotation = walk.state()


class DatasetPlanner:
    """Plans the epochs of one dataset (one batch size, one bucket layout).

    subset_of_image, bucket_of_image: parallel integer arrays, one entry per image, in a canonical
    order (see plan_input.build_plan_input); multipliers: one per subset (<= 0 excludes it);
    image_repeats: optionally, each image's integer repeats instead of its subset's floor(m).
    ``plan_epoch(e)`` is the same whether epochs are planned in order, out of order, in another
    process or after a resume. The state is O(cells), whatever the epoch: the credits and rotation
    positions after some epoch, replayed forward from there (or from epoch 0 to go back).
    """

    def __init__(
        self, subset_of_image, bucket_of_image, multipliers: Sequence[float], batch_size: int, seed: int, image_repeats=None
    ):
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seed = int(seed)
        layout = build_layout(subset_of_image, bucket_of_image, multipliers, batch_size, image_repeats)
        self.layout: DatasetLayout = with_enough_extra_batches(layout)
        self._restart()

    def _restart(self) -> None:
        self._epoch = 0  # epochs replayed into the state below
        self._credit = CreditState.initial(self.layout)
        self._rotation = RotationState.initial(self.layout.cell_size.size)
        self._ahead: tuple[int, EpochAllocation, CreditState] | None = None  # allocation of epoch _epoch + 1

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_ahead"] = None
        return state

    @property
    def epoch_length(self) -> int:
        return self.layout.epoch_length

    def __len__(self) -> int:
        return self.epoch_length

    @property
    def summary(self) -> PlanSummary:
        layout = self.layout
        return PlanSummary(layout.epoch_length, layout.base_total, layout.extra_batches, layout.fractional_batches)

    def _allocation(self) -> tuple[EpochAllocation, CreditState]:
        """The allocation of epoch _epoch + 1 and the credits after it."""
        if self._ahead is None or self._ahead[0] != self._epoch + 1:
            self._ahead = (self._epoch + 1, *allocate_epoch(self.layout, self._credit))
        return self._ahead[1], self._ahead[2]

    def _windows(self, allocation: EpochAllocation, out=None) -> np.ndarray:
        return rotation_windows(self.layout, allocation, out)

    def _walk(self) -> Walk:
        layout = self.layout
        self._windows_out = np.empty_like(layout.cell_size)
        return Walk(self._rotation, self.seed, layout.cell_subset, layout.cell_bucket, layout.cell_size)

    def _step(self, walk: Walk, epoch: int) -> Walk:
        allocation, credit = self._allocation()
        walk.step(self._windows(allocation, self._windows_out))
        self._credit = credit
        return walk

    _replay = replay_state

    def plan_epoch(self, epoch: int) -> EpochPlan:
        if epoch < 1:
            raise ValueError(f"epochs count from 1, got {epoch}")
        self._replay(epoch - 1)
        allocation, _ = self._allocation()
        fractional_by_bucket = fractional_picks(self.layout, self.seed, self._rotation, allocation)
        return assemble_epoch(self.layout, self.seed, epoch, allocation, fractional_by_bucket)


def rotation_windows(layout: DatasetLayout, allocation: EpochAllocation, out=None) -> np.ndarray:
    """Each cell's rotation window this epoch: its picks, or n - picks where the cell walks the
    images it leaves out (arithmetic: no masked copy)."""
    windows = np.multiply(layout.window_sign, allocation.cell_picks, out=out)
    windows += layout.window_base
    return windows


def fractional_picks(layout: DatasetLayout, seed: int, rotation: RotationState, allocation: EpochAllocation) -> list[np.ndarray]:
    """The images the epoch's fractional picks take, per bucket (canonical image indices): each
    cell's next window of its rotation stream."""
    windows = rotation_windows(layout, allocation)
    cell, local = take(seed, layout.cell_subset, layout.cell_bucket, layout.cell_size, rotation, windows)
    flat = layout.cell_start[cell] + local
    excludes = layout.cell_excludes[cell]
    picked = flat[~excludes]
    cell_of = cell[~excludes]
    rotate_out = np.flatnonzero(layout.cell_excludes & (allocation.cell_picks > 0))
    if rotate_out.size:
        # Cells above 1/2 walk the images they leave out: the picks are the rest of the cell.
        owner, members = ranges(layout.cell_start[rotate_out], layout.cell_size[rotate_out])
        left_out = np.zeros(layout.cell_members.size, dtype=bool)
        left_out[flat[excludes]] = True
        keep = ~left_out[members]
        picked = np.concatenate([picked, members[keep]])
        cell_of = np.concatenate([cell_of, rotate_out[owner][keep]])
    images = layout.cell_members[picked]
    bucket_of = layout.cell_bucket[cell_of]
    order = np.argsort(bucket_of, kind="stable")
    bounds = np.searchsorted(bucket_of[order], np.arange(layout.n_buckets + 1))
    images = images[order]
    return [images[bounds[bucket] : bounds[bucket + 1]] for bucket in range(layout.n_buckets)]
