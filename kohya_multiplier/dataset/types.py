"""The resolved dataset: plain data types, decided once by the reader (``config``) and only read after.

A subset's images (sorted by path, with the sizes buckets use), its rate and where it came from, its
exclusion and its loss weight are fields here; the planner, the reports, ``balance`` and the
training adapter read them and never decide them again. No reader logic lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kohya_multiplier.dataset.buckets import BucketLayout
from kohya_multiplier.dataset.images import ImageEntry
from kohya_multiplier.dataset.loss_weights import DEFAULT as DEFAULT_LOSS_WEIGHT
from kohya_multiplier.dataset.loss_weights import LossWeight
from kohya_multiplier.dataset.rates import DatasetRates
from kohya_multiplier.dataset.schedules import Schedule

__all__ = ["DEFAULTS", "ImageEntry", "SubsetSpec", "DatasetSpec", "TrainingConfig", "CommandLineOptions"]

# sd-scripts' defaults (the *DatasetParams dataclasses and the argparse defaults agree).
DEFAULTS: dict[str, Any] = {
    "batch_size": 1,
    "enable_bucket": False,
    "min_bucket_reso": 256,
    "max_bucket_reso": 1024,
    "bucket_reso_steps": 64,
    "bucket_no_upscale": False,
    "num_repeats": 1,
    "validation_split": 0.0,
}


@dataclass
class SubsetSpec:
    """One subset (image folder) of a dataset."""

    image_dir: str  # absolute
    name: str  # display name: the folder name
    table: str  # how messages name it, e.g. "datasets[0].subsets[1] (train/alice)"
    is_reg: bool
    images: list[ImageEntry]  # sorted by path
    multiplier: float | None  # explicit multiplier after precedence (None: num_repeats)
    multiplier_origin: str  # "subset" / "dataset" / "general" / "folder name" / "multiply.txt" / ""
    num_repeats: int
    effective_multiplier: float  # what the planner uses; <= 0 means excluded
    effective_origin: str  # "multiplier (subset)", "auto (regularization)", "num_repeats", ...
    loss_weight: LossWeight = DEFAULT_LOSS_WEIGHT  # factor on each example's loss (loss_weights.py)
    listing_order: int | None = None  # DreamBooth folders: sd-scripts' (file-system) order; None: config order
    metadata_file: str | None = None  # fine-tuning subsets: the metadata file (absolute); image_dir may then be its folder
    image_folders: tuple[str, ...] = ()  # folders training reads this subset's files from (outputs never go there)
    sized_by_train_resolution: bool = False  # sd-scripts <= v0.9: every image of the metadata has a train_resolution
    image_of_key: dict[str, str] = field(default_factory=dict)  # fine-tuning: each metadata key's image path
    conditioning_dir: str | None = None  # conditioning subsets: conditioning_data_dir (absolute), one image per trained image
    multiplier_schedule: Schedule | None = None  # the multiplier over epochs (images_per_epoch made a rate); then multiplier is its peak
    images_per_epoch: Any = None  # images_per_epoch as given (a count or a schedule), when it set the rate
    start_epoch: int = 1  # the subset trains from this epoch ...
    end_epoch: int | None = None  # ... through this one (None: to the end)
    image_buckets: list[tuple[int, ...]] | None = None  # each image's bucket, when the reader decided it (musubi-tuner: a clip's adds its frames)

    @property
    def source(self) -> str:
        """What identifies the subset in sd-scripts: its metadata file, else its image folder."""
        return self.metadata_file or self.image_dir

    @property
    def excluded(self) -> bool:
        return self.effective_multiplier <= 0


@dataclass
class DatasetSpec:
    """One ``[[datasets]]`` block: one batch size, one bucket layout."""

    index: int
    batch_size: int
    resolution: tuple[int, int]
    enable_bucket: bool
    min_bucket_reso: int  # as sd-scripts uses it (rounded to bucket_reso_steps when bucketing)
    max_bucket_reso: int
    bucket_reso_steps: int
    bucket_no_upscale: bool
    subsets: list[SubsetSpec]
    uses_multiplier: bool
    layout: BucketLayout | None = None  # the validated bucket rules of this dataset
    table: str = ""  # "datasets[0]"
    fine_tuning: bool = False  # subsets with metadata_file (sd-scripts' FineTuningDataset)
    predefined_buckets: bool = False  # sd-scripts <= v0.9: each image's train_resolution is its bucket
    conditioning: bool = False  # subsets with conditioning_data_dir (sd-scripts' ControlNetDataset)
    rates: DatasetRates | None = None  # a scheduled dataset: every subset's rate in every epoch (rates.py); None: constant
    total_images_per_epoch: float | None = None  # as given (rates.total is what trains)
    file: str | None = None  # the config file it was read from (for messages of later stages)
    trainer: str = "sd-scripts"  # whose dataset config it is: "sd-scripts" or "musubi-tuner" (dataset/musubi_config.py)
    video: bool = False  # a musubi-tuner video dataset: its items are clips

    @property
    def scheduled(self) -> bool:
        return self.rates is not None

    @property
    def uses_loss_weight(self) -> bool:
        """Some subset that trains has a loss weight other than sd-scripts' 1."""
        return any(not s.excluded and not s.loss_weight.is_default for s in self.subsets)

    @property
    def loss_weights_follow_the_epoch(self) -> bool:
        """Some subset that trains has a scheduled loss weight (its schedule records then carry
        each image's weight)."""
        return any(not s.excluded and s.loss_weight.schedule is not None for s in self.subsets)

    def bucket_layout(self) -> BucketLayout:
        if self.layout is None:
            self.layout = BucketLayout.create(
                resolution=self.resolution,
                enable_bucket=self.enable_bucket,
                min_bucket_reso=self.min_bucket_reso,
                max_bucket_reso=self.max_bucket_reso,
                bucket_reso_steps=self.bucket_reso_steps,
                bucket_no_upscale=self.bucket_no_upscale,
            )
        return self.layout


@dataclass
class TrainingConfig:
    source: str  # the config file as given, or "--train_data_dir ..." for folder mode
    datasets: list[DatasetSpec]
    notes: list[str] = field(default_factory=list)  # things to tell the user once, at start


@dataclass
class CommandLineOptions:
    """sd-scripts' command-line dataset options; None means "not given".

    Precedence is sd-scripts': a value in the dataset config wins over the command line, which wins
    over the default. ``resolution`` may be "512", "512,768", an int or a (width, height) pair.
    """

    dataset_config: str | None = None
    train_data_dir: str | None = None
    reg_data_dir: str | None = None
    in_json: str | None = None
    train_batch_size: int | None = None
    resolution: Any = None
    enable_bucket: bool | None = None
    min_bucket_reso: int | None = None
    max_bucket_reso: int | None = None
    bucket_reso_steps: int | None = None
    bucket_no_upscale: bool | None = None
    dataset_repeats: int | None = None
    caption_extension: str | None = None
    cache_info: bool | None = None
    validation_split: float | None = None
    validation_seed: int | None = None
    skip_image_resolution: Any = None  # sd-scripts v0.11.1: "size", "w,h", an int or (w, h)
    seed: int | None = None
    sd_scripts_layout: str | None = None  # code layout of the sd-scripts that trains (fine-tuning metadata rules)
