"""One dataset's plan: the resolved dataset, its plan input and its planner, built once.

Every caller asks this object and builds nothing itself: the dry run (batches, records,
statistics), the training adapter (the same, from the images sd-scripts found), ``balance`` (the
epoch length of trial multipliers) and ``report``. Torch-free; it pickles into DataLoader workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from kohya_multiplier.planner.plan_input import PlanInput, dataset_multipliers, plan_input_for_dataset, planner_from_input
from kohya_multiplier.planner.planner import PLANNER_VERSION, EpochPlan
from kohya_multiplier.planner.records import PLANNER_VERSION_KEY, batch_record
from kohya_multiplier.planner.scheduled import ScheduledPlanner, ScheduleError
from kohya_multiplier.errors import UserError

if TYPE_CHECKING:
    from kohya_multiplier.dataset.types import DatasetSpec


class DatasetPlan:
    """``plan_input``: the images that train (default: the dry run's reading of ``dataset``;
    training passes what sd-scripts registered). ``multipliers``: per subset (default: the
    resolved ones; ``balance`` tries others)."""

    def __init__(self, dataset: "DatasetSpec", seed: int, plan_input: PlanInput | None = None,
                 multipliers: Sequence[float] | None = None):
        self.dataset = dataset
        self.seed = seed
        self.plan_input = plan_input_for_dataset(dataset) if plan_input is None else plan_input
        if dataset.rates is not None and multipliers is None:
            self.planner = _scheduled_planner(dataset, self.plan_input, seed)
        else:
            rates = dataset_multipliers(dataset) if multipliers is None else list(multipliers)
            self.planner = planner_from_input(self.plan_input, rates, dataset.batch_size, seed)

    @property
    def index(self) -> int:
        return self.dataset.index

    @property
    def epoch_length(self) -> int:
        """Batches in every epoch."""
        return self.planner.epoch_length

    @property
    def summary(self):
        return self.planner.summary

    def batches(self, epoch: int) -> EpochPlan:
        return self.planner.plan_epoch(epoch)

    def record(self, plan: EpochPlan, batch: int) -> dict:
        """The schedule record of batch ``batch`` of ``plan`` (an epoch of this plan)."""
        bucket, images = plan.batch(batch)
        keys = self.plan_input.image_keys
        weights = None
        if self.dataset.loss_weights_follow_the_epoch:  # each image's weight in this epoch
            subsets = self.dataset.subsets
            weights = [subsets[s].loss_weight.at(plan.epoch) for s in self.plan_input.subset_of_image[images].tolist()]
        return batch_record(plan.epoch, self.index, batch, self.plan_input.bucket_resolutions[bucket],
                            [keys[j] for j in images], loss_weights=weights)

    def records(self, plan: EpochPlan) -> Iterator[dict]:
        for batch in range(len(plan)):
            yield self.record(plan, batch)

    def metadata(self) -> dict:
        """What the model metadata says about the plan: the planner version and seed (a resume under
        another version can be detected)."""
        entry = {PLANNER_VERSION_KEY: PLANNER_VERSION, "seed": self.seed}
        if self.scheduled:  # the schedules as given, and the constant total they are scaled to
            entry["images_per_epoch"] = round(self.dataset.rates.total, 6)
            entry["schedules"] = {s.name: given for s in self.dataset.subsets if (given := schedule_as_given(s))}
        return entry

    @property
    def scheduled(self) -> bool:
        return isinstance(self.planner, ScheduledPlanner)

    def counts(self, epochs: Iterable[int], on_plan: Callable[[EpochPlan], None] | None = None):
        """Plan ``epochs``: per subset, images trained in each epoch (S, E) and the share of its
        images trained at least once by each epoch (S, E)."""
        epochs = list(epochs)
        n_subsets = len(self.dataset.subsets)
        subset_of_image = self.plan_input.subset_of_image
        sizes = np.array([len(s.images) for s in self.dataset.subsets], dtype=np.int64)  # never-registered images count as unseen
        counts = np.zeros((n_subsets, len(epochs)), dtype=np.int64)
        coverage = np.zeros((n_subsets, len(epochs)))
        seen = np.zeros(len(self.plan_input), dtype=bool)
        for column, epoch in enumerate(epochs):
            plan = self.batches(epoch)
            if on_plan is not None:
                on_plan(plan)
            counts[:, column] = np.bincount(subset_of_image[plan.image_indices], minlength=n_subsets)
            seen[plan.image_indices] = True
            seen_per_subset = np.bincount(subset_of_image, weights=seen, minlength=n_subsets)
            coverage[:, column] = np.divide(seen_per_subset, sizes, out=np.zeros(n_subsets), where=sizes > 0)
        return epochs, counts, coverage


def _scheduled_planner(dataset: "DatasetSpec", plan_input: PlanInput, seed: int) -> ScheduledPlanner:
    """The planner of a scheduled dataset; a schedule it cannot honour is a one-line error."""
    try:
        return ScheduledPlanner(plan_input.subset_of_image, plan_input.bucket_of_image, dataset.rates, dataset.batch_size, seed)
    except ScheduleError as error:
        key = "total_images_per_epoch" if dataset.total_images_per_epoch is not None else "batch_size"
        raise UserError(f"{error}; lower batch_size or raise total_images_per_epoch", file=dataset.file,
                        where=dataset.table or f"datasets[{dataset.index}]", key=key) from None


def schedule_as_given(subset) -> dict:
    """What a subset's config says about its schedule: its scheduled multiplier or images_per_epoch,
    and its epoch window (empty for a subset without either)."""
    given: dict = {}
    if subset.images_per_epoch is not None:
        value = subset.images_per_epoch
        given["images_per_epoch"] = value.as_given() if hasattr(value, "as_given") else value
    elif subset.multiplier_schedule is not None:
        given["multiplier"] = subset.multiplier_schedule.as_given()
    if subset.start_epoch > 1:
        given["start_epoch"] = subset.start_epoch
    if subset.end_epoch is not None:
        given["end_epoch"] = subset.end_epoch
    return given
