"""DatasetPlanner: the plan of any epoch as a pure function of (seed, dataset, epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from kohya_multiplier.planner.assemble import EpochPlan, assemble_epoch
from kohya_multiplier.planner.credits import CreditState, EpochAllocation, allocate_epoch
from kohya_multiplier.planner.layout import DatasetLayout, build_layout
from kohya_multiplier.planner.rotation import CellWalk


@dataclass(frozen=True)
class PlanSummary:
    epoch_length: int  # L batches, every epoch
    base_batches: int  # M: batches of the integer parts
    extra_batches: int  # K: batches added for the fractional parts
    fractional_batches: Fraction  # exact fractional demand in batches; K is its ceiling

    @property
    def rounded_up(self) -> bool:
        return Fraction(self.extra_batches) != self.fractional_batches


class DatasetPlanner:
    """Plans the epochs of one dataset (one batch size, one bucket layout).

    subset_of_image, bucket_of_image: parallel integer arrays, one entry per image, in a canonical
    order (see plan_input.build_plan_input); multipliers: one per subset (<= 0 excludes it);
    image_repeats: optionally, each image's integer repeats instead of its subset's floor(m).
    ``plan_epoch(e)`` is the same whether epochs are planned in order, out of order, in another
    process or after a resume: the only state is a replay of per-bucket and per-cell credits.
    """

    def __init__(
        self, subset_of_image, bucket_of_image, multipliers: Sequence[float], batch_size: int, seed: int, image_repeats=None
    ):
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seed = int(seed)
        self.layout: DatasetLayout = build_layout(subset_of_image, bucket_of_image, multipliers, batch_size, image_repeats)
        self._states = [CreditState.initial(self.layout)]  # credits after epoch e, e = 0..replayed
        self._allocations: list[EpochAllocation] = []  # epoch e at index e-1
        # Row e: stream positions of every cell after epoch e; grown by doubling, rows 0..replayed valid.
        self._cumulative = np.zeros((64, self.layout.cell_size.size), dtype=np.int64)

    @property
    def epoch_length(self) -> int:
        return self.layout.epoch_length

    def __len__(self) -> int:
        return self.epoch_length

    @property
    def summary(self) -> PlanSummary:
        layout = self.layout
        return PlanSummary(layout.epoch_length, layout.base_total, layout.extra_batches, layout.fractional_batches)

    def _replay(self, epoch: int) -> None:
        layout = self.layout
        stream_of_picks = np.where(layout.cell_excludes, -1, 1)
        stream_offset = np.where(layout.cell_excludes, layout.cell_size, 0)
        while len(self._allocations) < epoch:
            allocation, state = allocate_epoch(layout, self._states[-1])
            self._allocations.append(allocation)
            self._states.append(state)
            window = stream_offset + stream_of_picks * allocation.cell_picks
            row = len(self._allocations)
            if row >= self._cumulative.shape[0]:
                grown = np.zeros((2 * row, self._cumulative.shape[1]), dtype=np.int64)
                grown[:row] = self._cumulative[:row]
                self._cumulative = grown
            self._cumulative[row] = self._cumulative[row - 1] + window

    def plan_epoch(self, epoch: int) -> EpochPlan:
        if epoch < 1:
            raise ValueError(f"epochs count from 1, got {epoch}")
        self._replay(epoch)
        layout = self.layout
        allocation = self._allocations[epoch - 1]
        cumulative = self._cumulative[: epoch + 1]
        fractional = [[] for _ in range(layout.n_buckets)]
        for c in range(layout.cell_size.size):
            if allocation.cell_picks[c] == 0:
                continue
            walk = CellWalk(
                self.seed, int(layout.cell_subset[c]), int(layout.cell_bucket[c]), int(layout.cell_size[c]), cumulative[:, c]
            )
            positions = walk.window(epoch)
            if layout.cell_excludes[c]:
                keep = np.ones(walk.n, dtype=bool)
                keep[positions] = False
                positions = np.flatnonzero(keep)
            fractional[layout.cell_bucket[c]].append(layout.cell_images[c][positions])
        fractional_by_bucket = [
            np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for parts in fractional
        ]
        return assemble_epoch(layout, self.seed, epoch, allocation, fractional_by_bucket)
