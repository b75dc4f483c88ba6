"""musubi-tuner's image and video datasets, serving the planner's epochs. Imported only in a process
that has musubi-tuner.

How the plan reaches musubi's stock ``__getitem__``: musubi's ``prepare_for_training`` reads the
caches into its ``BucketBatchManager`` (every item ``num_repeats`` times); the hook then turns the
dataset into the planned class below, which keeps one ``ItemInfo`` per item and, for each epoch,
makes the manager's buckets one list per planned batch with ``bucket_batch_indices[i] = (i, 0)``:
index i of the dataset is batch i of the plan. ``len()`` is the planner's constant epoch length,
set before musubi's ``DatasetGroup`` (a ``ConcatDataset``) freezes its offsets.

The epoch is musubi's own: the training loop sets a shared ``Value`` before each epoch, and
``BaseDataset.__getitem__`` calls ``shuffle_buckets`` in whichever process serves the batch when
it changes (every DataLoader worker, fork or spawn). ``shuffle_buckets`` then applies that epoch's
plan, seeds ``random`` as musubi does (its timestep buckets draw from it) and lets the manager
build its timestep pool, then puts the planned order back.

The classes are defined here, in an importable module, so the datasets pickle into ``spawn``
workers; each instance carries its own ``PlannedState`` (the plan and the epoch offset).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import torch.utils.data
from musubi_tuner.dataset.image_video_dataset import ImageDataset, VideoDataset

from kohya_multiplier.dataset.musubi_buckets import parse_cache_name
from kohya_multiplier.errors import UserError
from kohya_multiplier.planner.dataset_plan import DatasetPlan
from kohya_multiplier.runtime.recorder import BATCH_RECORD_KEY

METADATA_KEY = "kohya_multiplier"
LOSS_WEIGHT_KEY = "kohya_multiplier_loss_weight"  # a batch's loss weight, taken out by the trainer hook


@dataclass
class PlannedState:
    plan: DatasetPlan
    epoch_offset: int = 0  # --multiplier_epoch_offset: plan epoch = musubi's epoch + offset
    record: bool = False  # batches carry their schedule record (--multiplier_schedule)
    items: dict | None = None  # plan key -> musubi's ItemInfo
    applied_epoch: int = 0
    epoch_plan: object = None
    batches: list | None = None  # the applied epoch's batches of ItemInfo


class PlannedDatasetMixin(torch.utils.data.Dataset):
    """The planned behaviour shared by the image and the video dataset. A ``Dataset`` itself so that
    a musubi dataset's ``__class__`` can become a planned class: Python allows that only when both
    classes add their instance layout on the same base."""

    km_state: PlannedState

    def km_take_over(self, state: PlannedState) -> None:
        """Turn a prepared musubi dataset into a planned one (after its prepare_for_training)."""
        self.km_state = state
        state.items = self._km_items()
        planned = set(state.plan.plan_input.image_keys)
        if planned != set(state.items):
            missing = sorted(planned - set(state.items))[:1] + sorted(set(state.items) - planned)[:1]
            raise UserError(f"musubi-tuner found other items than the plan in {self.cache_directory} (first: {missing[0]}); "
                            "did the caches change while training started?", key="cache_directory")
        self._km_check_buckets()
        self._km_apply(1)
        self.num_train_items = len(state.epoch_plan.image_indices)

    def _km_items(self) -> dict:
        items = {}
        video = isinstance(self, VideoDataset)
        for bucket in self.batch_manager.buckets.values():
            for info in bucket:
                parsed = parse_cache_name(os.path.basename(info.latent_cache_path), video=video)
                items[os.path.join(os.path.abspath(self.cache_directory), parsed.item)] = info
        return items

    def _km_check_buckets(self) -> None:
        """Each item's bucket as musubi made it agrees with the plan's (its first sides: musubi adds
        architecture-wide extras that do not split a dataset)."""
        plan_input = self.km_state.plan.plan_input
        for key, bucket in zip(plan_input.image_keys, plan_input.bucket_of_image.tolist()):
            planned = tuple(plan_input.bucket_resolutions[bucket])
            musubi = tuple(self.km_state.items[key].bucket_size[: len(planned)])
            if musubi != planned:
                raise UserError(f"bucket of {key}: musubi-tuner chose {musubi}, the plan {planned}; this musubi-tuner "
                                "buckets differently from the one kohya-multiplier knows")

    def _km_apply(self, epoch: int) -> None:
        """Plan ``epoch`` (once) and hand its batches to musubi's manager."""
        state = self.km_state
        plan = state.plan.batches(epoch + state.epoch_offset)
        keys = state.plan.plan_input.image_keys
        state.batches = [[state.items[keys[j]] for j in plan.batch(i)[1]] for i in range(len(plan))]
        state.applied_epoch, state.epoch_plan = epoch, plan
        self._km_install()

    def _km_install(self) -> None:
        """The planned batches as the manager's buckets: batch i is bucket i (copies, which the
        manager's shuffle may reorder)."""
        batches = self.km_state.batches
        manager = self.batch_manager
        manager.buckets = {i: list(batch) for i, batch in enumerate(batches)}
        manager.bucket_resos = list(range(len(batches)))
        manager.bucket_batch_indices = [(i, 0) for i in range(len(batches))]

    def shuffle_buckets(self):
        self._km_apply(self.current_epoch)
        random.seed(self.seed + self.current_epoch)  # musubi's own seeding, for its timestep pool
        self.batch_manager.shuffle()  # reorders what it holds and builds the timestep pool of this many batches
        self._km_install()  # the planned order back (the pool stays)

    def __len__(self):
        return self.km_state.plan.epoch_length

    def __getitem__(self, idx):
        batch = super().__getitem__(idx)
        state = self.km_state
        epoch = max(1, self.current_epoch)
        if epoch != state.applied_epoch:  # before the training loop's first epoch
            self._km_apply(epoch)
        weight = self.km_state.plan.dataset.subsets[0].loss_weight
        if not weight.is_default:
            batch[LOSS_WEIGHT_KEY] = weight.at(epoch + state.epoch_offset)
        if state.record:
            batch[BATCH_RECORD_KEY] = state.plan.record(state.epoch_plan, idx)
        return batch

    def get_metadata(self):
        metadata = super().get_metadata()
        subset = self.km_state.plan.dataset.subsets[0]
        if subset.multiplier is not None:
            metadata["num_repeats"] = subset.effective_multiplier  # what trains in its place
        entry = dict(self.km_state.plan.metadata())
        entry.update(multiplier=subset.effective_multiplier, origin=subset.effective_origin,
                     items=len(subset.images), items_per_epoch=self.num_train_items)
        if not subset.loss_weight.is_default:
            entry["loss_weight"] = subset.loss_weight.value
        if self.km_state.epoch_offset:
            entry["epoch_offset"] = self.km_state.epoch_offset
        metadata[METADATA_KEY] = entry
        return metadata


class PlannedImageDataset(PlannedDatasetMixin, ImageDataset):
    pass


class PlannedVideoDataset(PlannedDatasetMixin, VideoDataset):
    pass


PLANNED_CLASS = {ImageDataset: PlannedImageDataset, VideoDataset: PlannedVideoDataset}
