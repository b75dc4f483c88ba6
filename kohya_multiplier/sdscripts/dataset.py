"""sd-scripts' DreamBooth dataset, serving the planner's epochs. Imported only with sd-scripts on sys.path.

How the plan reaches sd-scripts' stock ``__getitem__``: for each epoch, ``bucket_manager.buckets``
becomes one list per planned batch and ``buckets_indices[i]`` points at list i with its own length,
so index i of the DataLoader is batch i of the plan. ``len()`` is the planner's constant epoch
length L in every process, so sd-scripts' step, epoch, scheduler and resume arithmetic, and
ConcatDataset's frozen offsets, stay right.

The epoch comes from the shared ``multiprocessing.Value`` that sd-scripts' training loop sets
before each epoch: DataLoader workers fetch the first batch of an epoch before the collator tells
them the epoch, and the main-process copy of the dataset never learns it when workers are used.
The collator subclass below hands that Value to every dataset when the script creates it.

Classes are defined here, in an importable module, and train_util's own classes are left alone,
so datasets and collators pickle into ``spawn`` workers.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os

import torch

from library import config_util, train_util

from kohya_multiplier.dataset.images import image_names
from kohya_multiplier.dataset.loss_weights import DEFAULT as DEFAULT_LOSS_WEIGHT
from kohya_multiplier.dataset.loss_weights import LossWeight
from kohya_multiplier.errors import UserError, warn_once
from kohya_multiplier.planner.dataset_plan import DatasetPlan
from kohya_multiplier.planner.plan_input import build_plan_input, plan_input_for_dataset
from kohya_multiplier.planner.records import LOSS_WEIGHTS_KEY, batch_record
from kohya_multiplier.sdscripts import session as _session
from kohya_multiplier.runtime.recorder import BATCH_RECORD_KEY  # the recorder owns the key it takes out of each batch

logger = logging.getLogger(__name__)


def _sd_class(name: str):
    """sd-scripts' dataset class ``name``, as generate_dataset_group_by_blueprint sees it before our hook."""
    cls = getattr(config_util, name)
    return getattr(cls, "_km_sd_class", cls)


_SdDreamBoothDataset = _sd_class("DreamBoothDataset")
_SdFineTuningDataset = _sd_class("FineTuningDataset")
_SdControlNetDataset = _sd_class("ControlNetDataset") if hasattr(config_util, "ControlNetDataset") else None


def sd_dataset_function(name: str):
    """A method of sd-scripts' dataset classes; its ``__globals__`` are where it looks names up."""
    return getattr(_SdDreamBoothDataset, name)

# Key of kohya-multiplier's entry in a planned dataset's bucket_info (model metadata).
METADATA_KEY = "kohya_multiplier"


class _PlanState:
    """What a planned dataset needs to serve any epoch; pickles into workers."""

    def __init__(self, dataset_plan: DatasetPlan, sd_keys: list[str]):
        self.dataset_plan = dataset_plan
        self.planner = dataset_plan.planner
        self.plan_input = dataset_plan.plan_input  # canonical order, absolute paths
        self.sd_keys = sd_keys  # sd-scripts' image_data keys, aligned with plan_input.image_keys
        self.applied_epoch = 0
        self.plan = None  # EpochPlan of applied_epoch


@contextlib.contextmanager
def _capturing_image_infos(captured: list):
    """Collect every ImageInfo sd-scripts creates while the block runs.

    sd-scripts registers regularization images only until their repeats reach the training image
    count; the rest are never registered (never trainable). With multipliers every regularization
    image takes its turn, so the dataset registers them afterwards. ImageInfo is looked up in
    train_util's globals at call time; a factory function (not a subclass) keeps every instance of
    the original class, so pickling is unaffected, and the global is restored at once.
    """
    namespace = sd_dataset_function("__init__").__globals__  # train_util at v0.10, dreambooth_dataset at v0.11
    original = namespace.get("ImageInfo")
    if original is None:
        yield captured  # nothing captured: the self-check reports the unregistered images
        return

    def factory(*args, **kwargs):
        info = original(*args, **kwargs)
        captured.append(info)
        return info

    namespace["ImageInfo"] = factory
    try:
        yield captured
    finally:
        namespace["ImageInfo"] = original


def _shown_multipliers(spec) -> list[float]:
    """What sd-scripts' metadata and start-up lines show as each subset's repeats: its multiplier
    (of epoch 1, where the dataset is scheduled)."""
    return [float(m) for m in spec.rates.at(1)] if spec.scheduled else [s.effective_multiplier for s in spec.subsets]


def _given(weight: LossWeight):
    """A loss weight as the config gave it: a number, or its schedule's points."""
    return weight.schedule.as_given() if weight.schedule is not None else _plain_number(weight.value)


def _plain_number(value: float):
    """2.0 -> 2 (metadata readers expect integer repeats when they are integers); 0.25 stays."""
    return int(value) if float(value).is_integer() else float(value)


def _path_key(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _source_key(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


class PlannedDataset:
    """What sd-scripts' DreamBooth and fine-tuning datasets share when they follow the planner (or
    apply loss weights): mixed in before the sd-scripts class, which stays stock otherwise.

    A subset is known by its *source* (:meth:`_subset_source`: image folder or metadata file), and
    an image by its path for the planner (:meth:`_image_path`), the same in the dry run.
    """

    _km_sd_class: type  # the sd-scripts class it extends
    # The run's session, bound when the hooks are installed (bind_session); None in a process that
    # did not install them (a spawned DataLoader worker, whose datasets arrive pickled and complete).
    km_session: "_session.Session | None" = None

    def __init__(self, *args, **kwargs):
        self._km_plan: _PlanState | None = None
        self._km_record = False
        self._km_index = -1
        self._km_seed = 0
        self._km_multipliers: list[float] = []
        self._km_subset_of_dir: dict[str, int] = {}  # subset source -> index in the spec
        self._km_subset_of_object: dict[int, int | None] = {}  # id(sd-scripts subset) -> index in the spec
        self._km_spec = None
        self._km_epoch_value = None
        self._km_loss_weights: dict[str, LossWeight] | None = None  # subset source -> loss_weight, when some is not 1
        self._km_weight_of_source: dict[str, LossWeight] = {}  # the same by sd-scripts' own spelling (__getitem__'s lookup)
        self._km_known_images: dict = {}  # image path -> the core's ImageEntry, with its size (construction only)
        session = self.km_session
        is_training = bool(kwargs.get("is_training_dataset", True))
        planned = False
        if session is not None and is_training:
            self._km_index = session.training_datasets_built
            session.training_datasets_built += 1
            session.live_datasets.append(self)
            self._km_record = session.record
            spec = session.dataset_spec(self._km_index)
            if spec is not None:
                self._km_seed = session.seed
                self._know_images(spec)
            if spec is not None and spec.uses_loss_weight:
                self._km_loss_weights = {_source_key(s.source): s.loss_weight for s in spec.subsets}
                self._km_weights_scheduled = spec.loss_weights_follow_the_epoch
            # A dataset without multipliers stays stock sd-scripts, also in a config where others
            # have them: its own registration of regularization images, repeats and shuffle.
            if spec is not None and spec.uses_multiplier:
                planned = True
                self._km_spec = spec
                self._km_multipliers = _shown_multipliers(spec)
                self._km_subset_of_dir = {_source_key(s.source): i for i, s in enumerate(spec.subsets)}
                kwargs["subsets"] = self._without_excluded(kwargs.get("subsets", []))
                # the headers the core read are handed to sd-scripts: each image is read once per run
                self._km_known_images = {e.path: e for s in spec.subsets if not s.excluded for e in s.images}

        if not planned:
            super().__init__(*args, **kwargs)
            return
        self._build_planned(*args, **kwargs)
        self._km_known_images = {}  # not pickled into every DataLoader worker
        self._km_known_images_normalized = None
        self._record_multipliers_for_metadata()

    def register_image(self, info, subset):
        """sd-scripts' registration, with the size the core already read from the image's header
        (sd-scripts' make_buckets reads only the sizes still missing); the same reader, so the same
        numbers."""
        if getattr(info, "image_size", None) is None and self._km_known_images:
            image = self._km_known_images.get(info.absolute_path)  # the same spelling, most often
            if image is None:
                image = self._known_image_by_normalized_path(info.absolute_path)
            if image is not None:
                info.image_size = (image.width, image.height)
        super().register_image(info, subset)

    def _known_image_by_normalized_path(self, path: str):
        by_key = self._km_known_images_normalized
        if by_key is None:  # built on the first miss only (a relative image_dir, Windows case)
            by_key = self._km_known_images_normalized = {_path_key(p): e for p, e in self._km_known_images.items()}
        return by_key.get(_path_key(path))

    _km_known_images_normalized: dict | None = None
    _km_weights_scheduled = False  # some loss weight follows the epoch: records carry the weights applied

    # -- what the two kinds do differently ----------------------------------------------------

    def _build_planned(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)

    @staticmethod
    def _subset_source(subset) -> str:
        raise NotImplementedError

    def _image_path(self, key: str) -> str:
        """The planner's path of sd-scripts' image ``key``."""
        raise NotImplementedError

    def _know_images(self, spec) -> None:
        """Take what the core already found about the dataset's images (nothing, by default)."""

    # -- construction helpers -------------------------------------------------------------

    def _subset_index(self, subset) -> int | None:
        key = id(subset)  # asked once per image: the path is normalized once per subset
        if key not in self._km_subset_of_object:
            self._km_subset_of_object[key] = self._km_subset_of_dir.get(_source_key(self._subset_source(subset)))
        return self._km_subset_of_object[key]

    def _loss_weight_of(self, subset, epoch: int = 1) -> float:
        """The subset's loss weight in ``epoch`` (a scheduled weight follows the epoch)."""
        source = self._subset_source(subset)
        weight = self._km_weight_of_source.get(source)
        if weight is None:  # once per subset, not per image of every batch
            weight = self._km_weight_of_source[source] = self._km_loss_weights.get(_source_key(source), DEFAULT_LOSS_WEIGHT)
        return weight.at(epoch)

    def _without_excluded(self, subsets):
        kept = []
        for subset in subsets:
            index = self._subset_index(subset)
            if index is not None and self._km_spec.subsets[index].excluded:
                continue  # the core's notes already told the user; keeps its images out of caching
            kept.append(subset)
        return kept

    def _register_all_regularization_images(self, captured) -> None:  # DreamBooth only
        reg_subsets = [s for s in self.subsets if s.is_reg]
        if not reg_subsets:
            return
        dirs = [(os.path.abspath(s.image_dir), s) for s in reg_subsets]
        for info in captured:
            if not info.is_reg or info.image_key in self.image_data:
                continue
            path = os.path.abspath(info.absolute_path)
            owner = next((s for d, s in dirs if path.startswith(d + os.sep)), None)
            if owner is not None:
                self.register_image(info, owner)

    def _record_multipliers_for_metadata(self) -> None:
        """sd-scripts stores subset.num_repeats and the per-epoch image counts in the model metadata
        (ss_datasets, ss_dataset_dirs n_repeats, ss_num_train_images) and prints them: make them say
        what is trained: the multiplier, and images per epoch."""
        images_of: dict[int, int] = {}
        for owner in self.image_to_subset.values():
            images_of[id(owner)] = images_of.get(id(owner), 0) + 1
        train_images = reg_images = 0.0
        for subset in self.subsets:
            index = self._subset_index(subset)
            if index is None:
                continue
            multiplier = self._km_multipliers[index]
            subset.num_repeats = _plain_number(multiplier)
            count = images_of.get(id(subset), 0)
            if getattr(subset, "is_reg", False):  # fine-tuning subsets have no is_reg
                reg_images += multiplier * count
            else:
                train_images += multiplier * count
        self.num_train_images = int(round(train_images))
        self.num_reg_images = int(round(reg_images))

    # -- buckets and epochs -------------------------------------------------------------------

    def make_buckets(self):
        super().make_buckets()  # sd-scripts' own bucket of every image (then shuffle_buckets: a no-op)
        if self._km_spec is None:
            if self._km_loss_weights is not None and self.bucket_info is not None:
                self.bucket_info[METADATA_KEY] = self._km_metadata()
            return
        dataset_plan, sd_keys = self._plan_and_keys()
        self._km_plan = _PlanState(dataset_plan, sd_keys)
        self._apply_epoch(1)
        self._length = dataset_plan.epoch_length
        logger.info(
            f"kohya-multiplier: dataset {self._km_index}: {dataset_plan.epoch_length} batches every epoch "
            f"(planner seed {self._km_seed})"
        )

    def _plan_and_keys(self) -> tuple[DatasetPlan, list]:
        """The plan of what sd-scripts registered, and sd-scripts' key of each planned image: the
        start-up table's plan when sd-scripts registered exactly its images (the planner is built
        once, and nothing is built again to compare), else a new plan, with a warning."""
        session = self.km_session
        known = session.plans.get(self._km_index) if session is not None else None
        if known is not None and known.seed == self._km_seed:
            sd_keys = self._keys_if_same_images(known.plan_input)
            if sd_keys is not None:
                return known, sd_keys
        entries, sd_key_of = [], {}
        for key, subset_index, info in self._planned_images():
            path = self._image_path(key)
            sd_key_of[path] = key
            entries.append((subset_index, path, tuple(info.bucket_reso)))
        plan_input = build_plan_input(entries)
        if self._differs_from_the_core(plan_input, known.plan_input if known is not None else None):
            self._read_dataset_again()  # the rates that count images (automatic regularization) count these
        return DatasetPlan(self._km_spec, self._km_seed, plan_input), [sd_key_of[p] for p in plan_input.image_keys]

    def _planned_images(self):
        """(sd-scripts' key, subset index, ImageInfo) of every registered image the planner serves."""
        for key, info in self.image_data.items():
            subset_index = self._subset_index(self.image_to_subset[key])
            if subset_index is not None and not self._km_spec.subsets[subset_index].excluded:
                yield key, subset_index, info

    def _keys_if_same_images(self, plan_input) -> list | None:
        """sd-scripts' key of each of ``plan_input``'s images when sd-scripts registered exactly
        those images, in the same subsets and buckets (then it plans the same); None otherwise.
        Usually sd-scripts registered them in the plan's order (subsets in order, paths sorted),
        checked position by position; an index of the plan's paths is built only where not."""
        keys = plan_input.image_keys
        resolutions = [tuple(r) for r in plan_input.bucket_resolutions]
        subset_of, bucket_of = plan_input.subset_of_image.tolist(), plan_input.bucket_of_image.tolist()
        index_of = None
        sd_keys: list = [None] * len(keys)
        for position, (key, subset_index, info) in enumerate(self._planned_images()):
            i = self._plan_position(key, position, keys)
            if i is None:
                if index_of is None:
                    index_of = {path: n for n, path in enumerate(keys)}
                    if len(index_of) != len(keys):
                        return None
                i = index_of.get(key)  # sd-scripts' spelling is the core's, most often
                if i is None:
                    i = index_of.get(self._image_path(key))
            if (i is None or sd_keys[i] is not None or subset_of[i] != subset_index
                    or resolutions[bucket_of[i]] != tuple(info.bucket_reso)):
                return None
            sd_keys[i] = key
        return None if None in sd_keys else sd_keys

    def _plan_position(self, key: str, position: int, keys: list) -> int | None:
        """``position`` when the plan's image there is sd-scripts' ``key``, else None."""
        if position < len(keys) and (key == keys[position] or self._image_path(key) == keys[position]):
            return position
        return None

    def _differs_from_the_core(self, plan_input, predicted) -> bool:
        """Training follows sd-scripts' own images and buckets; the core's reading predicts them.
        Say so, once, where they differ."""
        try:
            if predicted is None:  # not printed at start (another rank)
                predicted = plan_input_for_dataset(self._km_spec)
        except Exception as error:  # noqa: BLE001 - a warning must never stop training
            warn_once(f"dataset {self._km_index}: could not compare with the dry run: {error}")
            return False
        if predicted.image_keys != plan_input.image_keys:
            missing = len(set(predicted.image_keys) - set(plan_input.image_keys))
            extra = len(set(plan_input.image_keys) - set(predicted.image_keys))
            warn_once(
                f"dataset {self._km_index}: sd-scripts found other images than `kohya-multiplier plan` "
                f"({missing} only in the dry run, {extra} only in training); training follows sd-scripts"
            )
            return True
        if [tuple(r) for r in predicted.bucket_resolutions] != [tuple(r) for r in plan_input.bucket_resolutions] or not (
            predicted.bucket_of_image == plan_input.bucket_of_image
        ).all():
            warn_once(
                f"dataset {self._km_index}: sd-scripts put some images in other buckets than `kohya-multiplier plan`; "
                "training follows sd-scripts"
            )
        return False

    def _read_dataset_again(self) -> None:
        """The dataset as the core reads it now: its folders changed since the start-up table, so
        its resolved rates follow what is there, as a dry run of it now does. Kept as it was if
        the core cannot read it again."""
        session = self.km_session
        if session is None or session.options is None:
            return
        from kohya_multiplier.dataset.config import load_training_config

        try:
            config = load_training_config(session.options.dataset_config, session.options)
        except UserError as error:
            warn_once(f"dataset {self._km_index}: could not read the dataset again ({error}); rates as read at start")
            return
        if self._km_index < len(config.datasets):
            self._km_spec = config.datasets[self._km_index]
            self._km_multipliers = _shown_multipliers(self._km_spec)
            self._record_multipliers_for_metadata()

    def _apply_epoch(self, epoch: int) -> None:
        state = self._km_plan
        plan = state.planner.plan_epoch(epoch)
        buckets, indices = [], []
        for i in range(len(plan)):
            _, images = plan.batch(i)
            buckets.append([state.sd_keys[j] for j in images])
            indices.append(_BucketBatchIndex(i, len(images), 0))
        self.bucket_manager.buckets = buckets
        self.buckets_indices = indices
        state.applied_epoch = epoch
        state.plan = plan
        per_bucket: dict[int, int] = {}
        for bucket, size in zip(plan.batch_bucket.tolist(), (len(b) for b in buckets)):
            per_bucket[bucket] = per_bucket.get(bucket, 0) + size
        if self.bucket_info is not None:  # ss_bucket_info: images per bucket per epoch
            self.bucket_info["buckets"] = {
                b: {"resolution": tuple(state.plan_input.bucket_resolutions[b]), "count": n} for b, n in sorted(per_bucket.items())
            }
            # LoRA metadata (ss_datasets[i].bucket_info, ss_bucket_info): which planner made this plan,
            # so a resume under another planner version can be detected
            self.bucket_info[METADATA_KEY] = self._km_metadata()

    def _km_metadata(self) -> dict:
        entry: dict = {}
        if self._km_plan is not None:
            entry = self._km_plan.dataset_plan.metadata()
        if self._km_loss_weights is not None:  # next to the multipliers (n_repeats), by folder (or metadata file) name
            weights = {_source_key(self._subset_source(s)): s for s in self.subsets}
            entry["loss_weights"] = {
                os.path.basename(os.path.normpath(self._subset_source(s))): _given(self._km_loss_weights[key])
                for key, s in weights.items()
                if key in self._km_loss_weights
            }
        return entry

    def _epoch_now(self) -> int:
        value = self._km_epoch_value.value if self._km_epoch_value is not None else self.current_epoch
        return max(1, int(value))  # 0 before the training loop starts: serve epoch 1

    def km_plan_state(self) -> _PlanState | None:
        return self._km_plan

    def km_loss_weights(self) -> dict[str, float] | None:
        return self._km_loss_weights

    def km_attach_epoch_value(self, value) -> None:
        self._km_epoch_value = value

    def shuffle_buckets(self):
        if self._km_spec is None:
            super().shuffle_buckets()
        # planned: the plan fixes the order; no global-random shuffle

    def set_current_epoch(self, epoch):
        if self._km_spec is None:
            super().set_current_epoch(epoch)
        else:
            self.current_epoch = epoch

    def __getitem__(self, index):
        training = getattr(self, "caching_mode", None) is None  # v0.11 has no caching mode
        if self._km_plan is not None and training:
            epoch = self._epoch_now()
            if epoch != self._km_plan.applied_epoch:
                self._apply_epoch(epoch)
        example = super().__getitem__(index)
        factors = None
        if self._km_loss_weights is not None and training and isinstance(example, dict) and "loss_weights" in example:
            weights = example["loss_weights"]
            epoch = self._epoch_now()
            factors = [self._loss_weight_of(self.image_to_subset[k], epoch) for k in self._batch_image_keys(index)]
            example["loss_weights"] = weights * torch.tensor(factors, dtype=weights.dtype)
        if self._km_record and training and isinstance(example, dict):
            record = self._batch_record(index)
            if factors is not None and self._km_weights_scheduled:  # as applied to the loss; the dry run records the config's
                record[LOSS_WEIGHTS_KEY] = [float(f) for f in factors]
            example[BATCH_RECORD_KEY] = record
        return example

    def _batch_image_keys(self, index: int) -> list:
        """sd-scripts' image keys of batch ``index``, in the order its __getitem__ reads them."""
        if self._km_plan is not None:
            return self.bucket_manager.buckets[index]
        entry = self.buckets_indices[index]
        bucket = self.bucket_manager.buckets[entry.bucket_index]
        start = entry.batch_index * entry.bucket_batch_size
        return bucket[start : start + entry.bucket_batch_size]

    def _batch_record(self, index: int) -> dict:
        if self._km_plan is not None:
            return self._km_plan.dataset_plan.record(self._km_plan.plan, index)
        # stock sd-scripts order, recorded for --multiplier_schedule
        entry = self.buckets_indices[index]
        images = self._batch_image_keys(index)
        return batch_record(self._epoch_now(), self._km_index, index, self.bucket_manager.resos[entry.bucket_index],
                            [self._image_path(k) for k in images], planned=False)


@contextlib.contextmanager
def _listing_folders_once(known: dict):
    """sd-scripts' ``glob_images(folder, "*")`` scans each folder once per image extension (14
    scans with the AVIF and JPEG-XL plugins); while the block runs it gets the same sorted list of
    paths from one pass (the core's ``image_names``, with sd-scripts' own extensions). Its paths
    are joined to the folder as sd-scripts spells it, as glob's are; a path the core read
    (``known``, path -> image) is handed over as the core's own string, so a large dataset holds
    each path once. Any other call, or a folder that cannot be listed, goes to sd-scripts'
    function. The global is restored at once."""
    namespace = sd_dataset_function("__init__").__globals__  # where DreamBoothDataset looks it up
    original = namespace.get("glob_images")
    extensions = getattr(original, "__globals__", {}).get("IMAGE_EXTENSIONS")
    if original is None or not extensions:
        yield
        return

    def glob_images(directory, base="*"):
        if base != "*" or not isinstance(directory, str) or not directory:
            return original(directory, base)
        try:
            names = image_names(directory, extensions)
        except OSError:
            return original(directory, base)
        paths = (os.path.join(directory, name) for name in names)
        return sorted(image.path if (image := known.get(p)) is not None else p for p in paths)

    namespace["glob_images"] = glob_images
    try:
        yield
    finally:
        namespace["glob_images"] = original


class MultiplierDreamBoothDataset(PlannedDataset, _SdDreamBoothDataset):
    """DreamBoothDataset that follows the planner when the run uses multipliers; stock otherwise."""

    _km_sd_class = _SdDreamBoothDataset

    def _build_planned(self, *args, **kwargs) -> None:
        captured: list = []
        with _capturing_image_infos(captured), _listing_folders_once(self._km_known_images):
            super()._build_planned(*args, **kwargs)
        self._register_all_regularization_images(captured)

    @staticmethod
    def _subset_source(subset) -> str:
        return subset.image_dir

    def _image_path(self, key: str) -> str:
        return os.path.abspath(key)  # DreamBooth keys are the image paths


class MultiplierFineTuningDataset(PlannedDataset, _SdFineTuningDataset):
    """FineTuningDataset (metadata_file subsets) that follows the planner when the run uses
    multipliers; stock otherwise. Images are known by the path kohya_multiplier.dataset.finetune_metadata
    resolves from their metadata key, as in the dry run."""

    _km_sd_class = _SdFineTuningDataset

    def __init__(self, *args, **kwargs):
        from kohya_multiplier.dataset.finetune_metadata import rules_for_layout

        session = self.km_session  # decided here, in the main process: spawned workers have no session bound
        self._km_rules = rules_for_layout(session.layout if session is not None else None)
        self._km_paths: dict[str, str] = {}  # metadata key -> image path, as the core resolved it
        super().__init__(*args, **kwargs)

    def register_image(self, info, subset):
        from kohya_multiplier.dataset.finetune_metadata import LEGACY

        if self._km_rules == LEGACY:
            # v0.9 reads a registered image_size as the metadata's train_resolution: on every image,
            # it makes each image's size its own bucket. The header's size must not stand in for it.
            return _SdFineTuningDataset.register_image(self, info, subset)
        return super().register_image(info, subset)

    def _know_images(self, spec) -> None:
        for subset in spec.subsets:  # sd-scripts keys image_data by the metadata key, as here
            self._km_paths.update(subset.image_of_key)

    @staticmethod
    def _subset_source(subset) -> str:
        return subset.metadata_file

    def _image_path(self, key: str) -> str:
        path = self._km_paths.get(key)
        if path is None:  # not in the core's reading (should not happen): resolve it the same way
            from kohya_multiplier.dataset.finetune_metadata import image_path

            path = image_path(key, self.image_to_subset[key].image_dir, self._km_rules) or os.path.abspath(key)
            self._km_paths[key] = path
        return path


def _delegate_arguments(args: tuple, kwargs: dict) -> dict:
    """sd-scripts' positional arguments of ``DreamBoothDataset(...)`` by name (PlannedDataset reads them by name)."""
    signature = inspect.signature(_SdDreamBoothDataset.__init__)
    arguments = dict(signature.bind(None, *args, **kwargs).arguments)
    arguments.pop(next(iter(signature.parameters)))  # self
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(arguments.pop(name, {}))
    return arguments


if _SdControlNetDataset is not None:

    class MultiplierControlNetDataset(_SdControlNetDataset):
        """ControlNetDataset (conditioning subsets) whose internal DreamBoothDataset, which registers the
        images, buckets them and serves every batch, is the planned dataset; the conditioning images
        follow each batch's images as in stock sd-scripts. Stock when the run uses no multiplier.

        sd-scripts builds that delegate by looking ``DreamBoothDataset`` up in ControlNetDataset's
        module; the name is replaced there only while this dataset is constructed (the module keeps
        its own class, so everything still pickles). A validation dataset's delegate stays stock.
        """

        km_session: "_session.Session | None" = None  # bound when the hooks are installed

        def __init__(self, *args, **kwargs):
            session = self.km_session
            expected = session.training_datasets_expected if session is not None else None
            training = session is not None and (expected is None or session.training_datasets_built < expected)
            namespace = _SdControlNetDataset.__init__.__globals__
            original = namespace.get("DreamBoothDataset")

            def delegate(*delegate_args, **delegate_kwargs):
                if not training:
                    return original(*delegate_args, **delegate_kwargs)
                return MultiplierDreamBoothDataset(**_delegate_arguments(delegate_args, delegate_kwargs))

            namespace["DreamBoothDataset"] = delegate
            try:
                super().__init__(*args, **kwargs)
            finally:
                namespace["DreamBoothDataset"] = original

        def _km_delegate(self):
            delegate = getattr(self, "dreambooth_dataset_delegate", None)
            return delegate if isinstance(delegate, PlannedDataset) else None

        def km_plan_state(self) -> _PlanState | None:
            delegate = self._km_delegate()
            return delegate.km_plan_state() if delegate is not None else None

        def km_loss_weights(self) -> dict[str, float] | None:
            delegate = self._km_delegate()
            return delegate.km_loss_weights() if delegate is not None else None

        def shuffle_buckets(self):
            if self.km_plan_state() is None:
                super().shuffle_buckets()  # stock: shuffles the delegate's buckets it shares
            # planned: the plan fixes the order, and the bucket lists it shares are the plan's batches

        def set_current_epoch(self, epoch):
            if self.km_plan_state() is None:
                super().set_current_epoch(epoch)
            else:
                self.current_epoch = epoch
                self.dreambooth_dataset_delegate.set_current_epoch(epoch)

else:  # pragma: no cover - a revision without ControlNet datasets
    MultiplierControlNetDataset = None


_BucketBatchIndex = sd_dataset_function("make_buckets").__globals__["BucketBatchIndex"]


def epoch_collator_class(original):
    if not issubclass(EpochCapturingCollator, original):
        raise TypeError(f"collator_class {original!r} is not the one this module extends")
    return EpochCapturingCollator


def bind_session(session: "_session.Session") -> None:
    """Hand the run's session to the planned dataset classes and the collator (inject.install)."""
    PlannedDataset.km_session = session
    EpochCapturingCollator.km_session = session
    if MultiplierControlNetDataset is not None:
        MultiplierControlNetDataset.km_session = session


class EpochCapturingCollator(train_util.collator_class):
    """sd-scripts' collator; on creation it hands the shared epoch Value to our datasets."""

    km_session: "_session.Session | None" = None  # bound when the hooks are installed

    def __init__(self, epoch, step, dataset):
        super().__init__(epoch, step, dataset)
        session = self.km_session
        if session is not None:
            from kohya_multiplier.sdscripts import selfcheck

            selfcheck.require_verified(session)  # the check after the datasets were built must have run
        for dataset_ in session.live_datasets if session is not None else []:
            dataset_.km_attach_epoch_value(epoch)


__all__ = [
    "PlannedDataset", "MultiplierDreamBoothDataset", "MultiplierFineTuningDataset", "MultiplierControlNetDataset",
    "EpochCapturingCollator", "BATCH_RECORD_KEY",
]
