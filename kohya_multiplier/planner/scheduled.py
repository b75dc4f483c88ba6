"""ScheduledPlanner: the plan of a dataset whose rates change with the epoch.

The same steps as :class:`~kohya_multiplier.planner.planner.DatasetPlanner` (credits, rotation,
assembly), with the multipliers of each epoch from a rates object (``at(epoch)``, constant from
``horizon`` on; :mod:`kohya_multiplier.dataset.rates`) instead of fixed ones:

* one set of cells holds every image (:func:`~kohya_multiplier.planner.layout.every_image_in_cells`),
  so each cell's credit and rotation stream carry across epochs whatever its rate does; a subset
  whose rate is 0 in an epoch (outside its window) has its credit reset, so it owes nothing and
  trains nothing, and enters (again) with a fresh credit;
* every epoch has the same length L: at least room for every bucket's partial batch in every
  epoch of the schedule, raised until no cell falls behind in a simulation of the whole schedule
  plus its steady state (the check of ``sizing.py``). An epoch whose picks need fewer batches
  splits its largest batches until it has L; one whose images would not fill L batches takes
  picks early, as a rounded-up static plan does;
* a cell whose fraction crosses 1/2 (it switches between walking its picks and walking the images
  it leaves out) starts a fresh cycle, so no image it had just left out waits a further cycle.

The state is the same O(cells) as the static planner's, and an epoch is a pure function of
(seed, dataset, rates, epoch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from kohya_multiplier.planner.assemble import EpochPlan, assemble_epoch
from kohya_multiplier.planner.credits import PHASE, PICK_COST, CreditState, EpochAllocation, _batches_for, _per_bucket, allocate_epoch
from kohya_multiplier.planner.layout import DatasetLayout, epoch_layout, every_image_in_cells, members_in_bucket_order, with_integer_lists
from kohya_multiplier.planner.planner import fractional_picks, replay_state, rotation_windows
from kohya_multiplier.planner.rotation import RotationState, Walk, fresh_cycles
from kohya_multiplier.planner.sizing import simulation_epochs


class ScheduleError(ValueError):
    """A schedule the planner cannot honour; ``epoch`` names where."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


@dataclass(frozen=True)
class ScheduledSummary:
    epoch_length: int  # L batches, every epoch
    images_per_epoch: float  # T, the constant total the rates are scaled to
    horizon: int  # the rates are constant from this epoch on
    rounded_up: bool = False  # some epoch's images do not fill its batches: picks are taken early, subsets over-served
    scheduled: bool = True


class ScheduledPlanner:
    """``rates``: ``at(epoch)`` -> (S,) multipliers of that epoch, ``horizon``, ``total``."""

    def __init__(self, subset_of_image, bucket_of_image, rates, batch_size: int, seed: int):
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seed = int(seed)
        self.rates = rates
        self.n_subsets = len(rates.at(1))
        self.cells = every_image_in_cells(subset_of_image, bucket_of_image, self.n_subsets, batch_size)
        self._layouts: dict[bytes, tuple] = {}
        self._extra_layouts: dict[tuple, tuple] = {}
        self._bucket_order: np.ndarray | None = None  # the order of integer lists, found once (not pickled)
        self._rounded_up_at: dict[int, bool] = {}  # per length simulated: whether picks were taken early
        self.rounded_up = False
        self.epoch_length = self._sized()
        self.rounded_up = self._rounded_up_at[self.epoch_length]
        if rates.total < self.epoch_length:
            raise ScheduleError(
                f"{rates.total:.4g} images per epoch cannot fill the {self.epoch_length} batches an epoch of its buckets needs "
                "(each batch holds at least one image)", 1,
            )
        self._restart()

    # -- state --------------------------------------------------------------------------------

    def _restart(self) -> None:
        self._epoch = 0
        self._credit = CreditState.initial(self.cells)
        self._rotation = RotationState.initial(self.cells.cell_size.size)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_layouts"] = {}
        state["_extra_layouts"] = {}
        state["_bucket_order"] = None
        state["_rounded_up_at"] = {}
        return state

    def __len__(self) -> int:
        return self.epoch_length

    @property
    def summary(self) -> ScheduledSummary:
        return ScheduledSummary(self.epoch_length, self.rates.total, self.rates.horizon, self.rounded_up)

    # -- one epoch's shape and allocation -------------------------------------------------------

    def layout(self, epoch: int) -> DatasetLayout:
        """The epoch's layout (its rates' integer parts and fractional demand)."""
        return self._shapes(epoch)[0]

    def _shapes(self, epoch: int) -> tuple[DatasetLayout, DatasetLayout, np.ndarray]:
        """The epoch's layout, the same with no picks from cells without demand, and which cells
        belong to subsets that do not train in it; kept for the few distinct rate vectors a replay
        meets in a row."""
        rates = self.rates.at(epoch)
        key = rates.tobytes()
        shapes = self._layouts.get(key)
        if shapes is None:
            if len(self._layouts) > 8:
                self._layouts.clear()
            layout = epoch_layout(self.cells, rates)
            # Cells without demand this epoch (outside a window, or a whole rate) take no pick.
            sized = dataclasses.replace(layout, cell_size=np.where(layout.cell_demand > 0, layout.cell_size, 0))
            shapes = self._layouts[key] = (layout, sized, rates[layout.cell_subset] <= 0)
        return shapes

    def _allocation(self, epoch: int, credit: CreditState, length: int) -> tuple[EpochAllocation, CreditState, int]:
        """The epoch's allocation, the credits after it and the images it trains. The extra batches
        are what the due picks need (the assembly splits batches up to ``length``), unless the
        images would not fill ``length`` batches: then all ``length`` less the base batches, and
        the allocation takes picks early to fill them."""
        layout, sized, inactive = self._shapes(epoch)
        start = np.where(inactive, PHASE, credit.cell_credit)  # inactive subsets owe nothing
        due = np.clip((start + layout.cell_demand) // PICK_COST, 0, sized.cell_size)
        room = length - layout.base_total
        if room < 0:
            raise ScheduleError(f"epoch {epoch} needs {layout.base_total} batches for its whole repeats, more than {length}", epoch)
        needed = int(_batches_for(_per_bucket(sized, due), layout.free_slots, layout.fill).sum())
        extra = min(room, needed)
        allocation, after = allocate_epoch(self._with_extra(sized, extra), CreditState(start))
        whole = int((layout.base_batches * layout.batch_size - layout.free_slots).sum())  # integer-part appearances
        if whole + int(allocation.cell_picks.sum()) < length and extra < room:
            self.rounded_up = True
            allocation, after = allocate_epoch(self._with_extra(sized, room), CreditState(start))
        return allocation, after, whole + int(allocation.cell_picks.sum())

    def _with_extra(self, layout: DatasetLayout, extra: int) -> DatasetLayout:
        """``layout`` with ``extra`` extra batches: credits are charged exactly (no rounding up is
        handed back), and no pick is taken early to fill room (the length has room for every
        bucket's partial batch; taking ahead would only over-serve). Kept, with its derived arrays,
        per layout and count."""
        key = (id(layout), extra)
        found = self._extra_layouts.get(key)
        if found is None or found[0] is not layout:
            if len(self._extra_layouts) > 64:
                self._extra_layouts.clear()
            found = self._extra_layouts[key] = (
                layout, dataclasses.replace(layout, extra_batches=extra, fractional_batches=Fraction(extra), fills_room=False)
            )
        return found[1]

    # -- the epoch length ---------------------------------------------------------------------

    def _sized(self) -> int:
        """The fewest batches per epoch for which no cell falls behind over the schedule and its
        steady state (sizing.py's test), and every epoch's images fill them."""
        horizon = self.rates.horizon
        layouts = [self.layout(epoch) for epoch in range(1, horizon + 1)]
        # Each bucket's fractional demand in whole batches of its own: a length that holds every
        # bucket's partial batch keeps most epochs free of contention (exact and quick to replay).
        lowest = max(layout.base_total + _bucket_batches(layout) for layout in layouts)
        highest = max(layout.base_total + int(np.sum(-(-layout.capacity // layout.fill))) for layout in layouts)
        epochs = horizon + simulation_epochs(layouts[-1])
        if self._keeps_up(lowest, epochs):
            return lowest
        step, below = 1, lowest
        while True:  # gallop, then bisect: keeping up is monotone in the length
            candidate = min(below + step, max(highest, lowest))
            if candidate == below or self._keeps_up(candidate, epochs):
                break
            below, step = candidate, step * 2
        above = candidate
        while above - below > 1:
            middle = (above + below) // 2
            if self._keeps_up(middle, epochs):
                above = middle
            else:
                below = middle
        return above

    def _keeps_up(self, length: int, epochs: int) -> bool:
        """Whether no cell falls behind at ``length`` over ``epochs``; notes whether that length
        took picks early (rounded up)."""
        credit = CreditState.initial(self.cells)
        self.rounded_up = False
        self._rounded_up_at[length] = True  # a length that falls behind is never chosen
        for epoch in range(1, epochs + 1):
            layout = self.layout(epoch)
            allocation, credit, images = self._allocation(epoch, credit, length)
            if images < length:
                raise ScheduleError(
                    f"epoch {epoch} trains {images} images, fewer than the {length} batches every epoch of this dataset has", epoch
                )
            deadline = 2 * PICK_COST + np.minimum(layout.cell_demand, PICK_COST)
            if (credit.cell_credit >= deadline).any():
                return False
        self._rounded_up_at[length] = self.rounded_up
        return True

    # -- planning -----------------------------------------------------------------------------

    def _switched(self, epoch: int) -> np.ndarray:
        """Cells that walk differently in ``epoch`` than in the epoch before (their picks, or the
        images they leave out: a fraction crossed 1/2). Such a cell starts a fresh cycle: walking
        on, it would skip the images it had just left out for up to a cycle, beyond the bound."""
        if epoch <= 1:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.layout(epoch).cell_excludes != self.layout(epoch - 1).cell_excludes)

    def _walk(self) -> Walk:
        cells = self.cells
        return Walk(self._rotation, self.seed, cells.cell_subset, cells.cell_bucket, cells.cell_size)

    def _step(self, walk: Walk, epoch: int) -> Walk:
        switched = self._switched(epoch)
        if switched.size:
            cells = self.cells
            walk = Walk(fresh_cycles(walk.state(), switched), self.seed, cells.cell_subset, cells.cell_bucket, cells.cell_size)
        allocation, self._credit, _ = self._allocation(epoch, self._credit, self.epoch_length)
        walk.step(rotation_windows(self.layout(epoch), allocation))
        return walk

    _replay = replay_state

    def plan_epoch(self, epoch: int) -> EpochPlan:
        if epoch < 1:
            raise ValueError(f"epochs count from 1, got {epoch}")
        self._replay(epoch - 1)
        allocation, _, _ = self._allocation(epoch, self._credit, self.epoch_length)
        if self._bucket_order is None:
            self._bucket_order = members_in_bucket_order(self.cells)
        layout = with_integer_lists(self.layout(epoch), self.rates.at(epoch), self._bucket_order)
        switched = self._switched(epoch)
        rotation = fresh_cycles(self._rotation, switched) if switched.size else self._rotation
        fractional_by_bucket = fractional_picks(layout, self.seed, rotation, allocation)
        return assemble_epoch(layout, self.seed, epoch, allocation, fractional_by_bucket, batches=self.epoch_length)


def _bucket_batches(layout: DatasetLayout) -> int:
    """Extra batches for every bucket's demand beyond its free slots, each bucket rounded up."""
    overflow = np.maximum(layout.cell_demand_per_bucket - layout.free_slots * PICK_COST, 0)
    return int(np.sum(-(-overflow // (layout.fill * PICK_COST))))
