"""Where a report's data comes from: the dry run's planner, or a schedule file (the dry run's, or
what a training run recorded with ``--multiplier_schedule``), optionally with its dataset config.
Builds ``report_data`` objects; draws nothing."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from kohya_multiplier.dataset.types import DatasetSpec, TrainingConfig
from kohya_multiplier.errors import UserError
from kohya_multiplier.planner.dataset_plan import DatasetPlan
from kohya_multiplier.planner.plan_input import PlanInput
from kohya_multiplier.report.stats import DatasetStats, _multiplier_text, _origin_text, collect_stats, epoch_shape_line
from kohya_multiplier.report.data import DatasetReport, EpochAccumulator, dataset_report, scheduled_rotation_bounds


def _texts(stats: DatasetStats) -> list[str]:
    if stats.labels is not None:
        return list(stats.labels)
    return [f"{_multiplier_text(m)} (excluded)" if excluded else f"{_multiplier_text(m)} ({_origin_text(o)})"
            for m, o, excluded in zip(stats.multipliers, stats.origins, stats.excluded)]


class PlanCollector:
    """Feed it every planned epoch (``on_plan``), then :meth:`report` with the dataset's stats."""

    def __init__(self, dataset: DatasetSpec, plan_input: PlanInput, first_epoch: int):
        self.dataset = dataset
        self.accumulator = EpochAccumulator(plan_input.subset_of_image, len(dataset.subsets), first_epoch)
        if dataset.scheduled:
            self.accumulator.set_windows([s.start_epoch for s in dataset.subsets], [s.end_epoch for s in dataset.subsets])
        self.batches: list[int] = []

    def on_plan(self, plan) -> None:
        self.accumulator.add(plan.epoch, plan.image_indices)
        self.batches.append(len(plan))

    def report(self, stats: DatasetStats) -> DatasetReport:
        return _from_stats(stats, self.dataset, self.accumulator, self.batches, shape_line=epoch_shape_line(stats))


def _from_stats(stats: DatasetStats, dataset: DatasetSpec, accumulator, batches, shape_line=None) -> DatasetReport:
    return dataset_report(
        stats.dataset, accumulator,
        names=stats.subset_names,
        multipliers=list(stats.multipliers),
        multiplier_texts=_texts(stats),
        excluded=stats.excluded,
        targets=[float(x) for x in stats.expected_per_epoch],
        batches_per_epoch=batches,
        is_reg=[s.is_reg for s in dataset.subsets],
        loss_weights=stats.loss_weights,
        unused=list(stats.unused) if stats.unused is not None else None,
        images=stats.subset_images,
        batch_size=stats.batch_size,
        buckets=stats.buckets,
        shape_line=shape_line,
        stock=stats.stock,
        epoch_targets=stats.targets,
        schedule_bounds=_schedule_bounds(dataset, stats) if stats.targets is not None else None,
    )


# Scheduled bounds are found over at most this many planned epochs (the first ones): the search
# costs epochs x subsets x the bound's length.
MAX_BOUND_EPOCHS = 400


def _schedule_bounds(dataset: DatasetSpec, stats: DatasetStats) -> list[int | None]:
    if not stats.epochs:
        return [None] * len(dataset.subsets)
    first = stats.epochs[0]
    return scheduled_rotation_bounds(dataset.rates, first, min(stats.epochs[-1], first + MAX_BOUND_EPOCHS - 1))


def schedule_reports(schedule, config: TrainingConfig | None, notes: list[str] | None = None) -> list[DatasetReport]:
    """One report per dataset of a schedule (a ScheduleFile, read one epoch at a time). With the
    config, images are mapped to its subsets (targets, multipliers, loss weights); without, each
    image folder is a subset of unknown target. Repeated batches (several GPUs) count as trained;
    ``notes`` gets a line saying how many there were."""
    file = schedule.path
    if not schedule.batch_count:
        raise UserError("the schedule holds no batches", file=file)
    reports = []
    repeats = 0
    for index in schedule.datasets:
        order = sorted(e for e, d in schedule.keys() if d == index)
        dataset = None
        if config is not None:
            if index >= len(config.datasets):
                raise UserError(f"the schedule has dataset {index}; the config has {len(config.datasets)}",
                                file=file, key="dataset")
            dataset = config.datasets[index]
        if dataset is not None:
            dataset_plan = DatasetPlan(dataset, 0)  # no epoch is planned: the seed does not matter
            plan_input = dataset_plan.plan_input
            stats = collect_stats(dataset_plan, [])
            position = {key: i for i, key in enumerate(plan_input.image_keys)}
            position.update({os.path.normpath(key): i for i, key in enumerate(plan_input.image_keys)})
            subset_of_image = plan_input.subset_of_image
            accumulator = EpochAccumulator(subset_of_image, len(dataset.subsets), order[0])
            _follow_schedule(accumulator, stats, dataset, order)
        else:
            keys = sorted(schedule.images_by_dataset[index])
            folders = sorted({os.path.dirname(k) for k in keys})
            folder_index = {f: i for i, f in enumerate(folders)}
            position = {key: i for i, key in enumerate(keys)}
            subset_of_image = np.array([folder_index[os.path.dirname(k)] for k in keys], dtype=np.int64)
            accumulator = EpochAccumulator(subset_of_image, len(folders), order[0])
        batches = []
        for epoch in order:
            unique, repeated = schedule.read(epoch, index)
            repeats += len(repeated)
            indices = []
            for record in (*unique, *repeated):
                for path in record.images:
                    i = position.get(path, position.get(os.path.normpath(path)))
                    if i is None:
                        raise UserError(f"epoch {epoch}, batch {record.batch}: image {path} is in no subset of "
                                        f"dataset {index} of the config", file=file)
                    indices.append(i)
            accumulator.add(epoch, indices)
            batches.append(len(unique))
        if dataset is not None:
            reports.append(_from_stats(stats, dataset, accumulator, batches))
        else:
            names = [_folder_name(f, folders) for f in folders]
            reports.append(dataset_report(
                index, accumulator, names=names, multipliers=[None] * len(folders),
                multiplier_texts=["unknown (give --config)"] * len(folders), targets=[None] * len(folders),
                batches_per_epoch=batches))
    if repeats and notes is not None:
        notes.append(f"{repeats} batch{'es' * (repeats != 1)} recorded twice (a run on several GPUs: accelerate gives a "
                     "rank with fewer batches the first ones again); counted as trained, not as extra batches")
    return reports


def _follow_schedule(accumulator, stats: DatasetStats, dataset: DatasetSpec, epochs: list[int]) -> None:
    """A scheduled dataset: waits inside each subset's window, and the targets of the epochs a
    schedule file holds (``stats`` planned none). Nothing for an unscheduled one."""
    if not dataset.scheduled:
        return
    accumulator.set_windows([s.start_epoch for s in dataset.subsets], [s.end_epoch for s in dataset.subsets])
    sizes = np.array([len(s.images) for s in dataset.subsets], dtype=np.float64)
    stats.epochs = list(epochs)
    stats.targets = np.stack([dataset.rates.at(e) * sizes for e in epochs], axis=1)
    stats.scales = [dataset.rates.scale(e) for e in epochs]
    stats.expected_per_epoch = stats.targets.mean(axis=1)


def _folder_name(folder: str, folders: Sequence[str]) -> str:
    """The folder's own name, or more of its path where two folders share a name."""
    base = os.path.basename(folder) or folder
    if sum(os.path.basename(f) == base for f in folders) > 1:
        parent = os.path.basename(os.path.dirname(folder))
        return f"{parent}/{base}" if parent else folder
    return base


def planner_versions(schedule) -> list[str]:
    versions = [str(v) for v in sorted(schedule.versions)]
    return versions + (["1 (not recorded)"] if schedule.unversioned else [])
