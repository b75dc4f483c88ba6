"""Read a musubi-tuner dataset config into the resolved types (``dataset/types.py``).

musubi-tuner's config is ``[general]`` and ``[[datasets]]`` with no subsets: each dataset block is
one image or video dataset, its items trained in batches of that dataset alone. Each becomes one
``DatasetSpec`` holding one ``SubsetSpec``, so the planner, the reports and the schedule files
treat it as they treat an sd-scripts dataset.

What an item is, as musubi trains it: an image, or a clip cut from a video (``target_frames`` and
``frame_extraction``); a multiplier counts items as ``num_repeats`` does (``multiplier = 3`` trains
every image and every clip three times an epoch, as ``num_repeats = 3`` would), so rotation goes
through every clip and with them every source video. ``images_per_epoch`` is a count of items.

The items are read from the caches, which is all musubi training reads (``musubi_buckets``: their
names carry each item's key, source size and, for a clip, its frames); a dataset with no cache yet
is read from its images (``image_directory``, ``image_jsonl_file``). Each item's bucket is decided
here, by musubi's rule, and carried in ``SubsetSpec.image_buckets``.

Keys: musubi's schema (``config_utils.ConfigSanitizer`` of v0.3.4), plus ``multiplier``,
``images_per_epoch`` and ``loss_weight`` in ``[general]`` and ``[[datasets]]``, resolved by the
same precedence as for sd-scripts (``multipliers.resolve_repeat_setting``: the most specific level
that sets one of ``multiplier``, ``num_repeats``, ``images_per_epoch`` decides).
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Any, Mapping

from kohya_multiplier.dataset.config import VALUE_KINDS, read_config_file
from kohya_multiplier.dataset.images import ImageEntry, image_names, read_image_size
from kohya_multiplier.dataset.loss_weights import check_loss_weight, resolve_loss_weight
from kohya_multiplier.dataset.multipliers import check_multiplier, check_num_repeats, describe_value, resolve_repeat_setting
from kohya_multiplier.dataset.musubi_buckets import (
    RESOLUTION_STEPS,
    MusubiBuckets,
    cache_architectures,
    parse_cache_name,
    rounded_target_frames,
)
from kohya_multiplier.dataset.schedules import is_schedule, read_rate
from kohya_multiplier.dataset.types import DatasetSpec, SubsetSpec, TrainingConfig
from kohya_multiplier.errors import UserError

TRAINER = "musubi-tuner"

# musubi's image extensions (media_utils.IMAGE_EXTENSIONS, without the optional JPEG-XL plug-ins)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP", ".avif", ".AVIF")

ASCENDABLE = {"caption_extension": "str", "batch_size": "int", "num_repeats": "num_repeats", "resolution": "resolution",
              "enable_bucket": "bool", "bucket_no_upscale": "bool"}
OURS = {"multiplier": "rate", "images_per_epoch": "rate", "loss_weight": "loss_weight"}
IMAGE_ONLY = {"image_directory": "str", "image_jsonl_file": "str", "cache_directory": "str", "control_directory": "str",
              "multiple_target": "bool", "fp_latent_window_size": "int", "fp_1f_clean_indices": "int_list",
              "fp_1f_target_index": "int", "fp_1f_no_post": "bool", "no_resize_control": "bool",
              "control_resolution": "resolution"}
VIDEO_ONLY = {"video_directory": "str", "video_jsonl_file": "str", "control_directory": "str", "target_frames": "int_list",
              "frame_extraction": "str", "frame_stride": "int", "frame_sample": "int", "max_frames": "int",
              "cache_directory": "str", "source_fps": "float", "fp_latent_window_size": "int"}
GENERAL_KEYS = {**ASCENDABLE, **OURS}
IMAGE_KEYS = {**ASCENDABLE, **OURS, **IMAGE_ONLY}
VIDEO_KEYS = {**ASCENDABLE, **OURS, **VIDEO_ONLY}
DEFAULT_RESOLUTION = (960, 544)
FRAME_EXTRACTIONS = ("head", "chunk", "slide", "uniform", "full")
# musubi-tuner's keys that tell its configs from sd-scripts'
_MUSUBI_SOURCES = ("image_directory", "image_jsonl_file", "video_directory", "video_jsonl_file")


def is_musubi_config(raw: Mapping[str, Any]) -> bool:
    """Whether a parsed dataset config is musubi-tuner's: a dataset names its media directly,
    where sd-scripts' datasets hold subsets."""
    datasets = raw.get("datasets") if isinstance(raw, Mapping) else None
    if not isinstance(datasets, list):
        return False
    return any(isinstance(d, Mapping) and any(k in d for k in _MUSUBI_SOURCES) for d in datasets)


def names_musubi_config(path: str) -> bool:
    """Whether the dataset config file at ``path`` is musubi-tuner's (False when it cannot be read:
    the sd-scripts reader then says why)."""
    try:
        return is_musubi_config(read_config_file(path))
    except UserError:
        return False


def asks_for_planning(path: str) -> bool:
    """Whether the musubi-tuner dataset config at ``path`` asks for a multiplier, images_per_epoch
    or loss_weight anywhere (else musubi-tuner trains it unchanged). A config that cannot be read
    is planned, so that the reader says why in one line."""
    try:
        raw = read_config_file(path)
    except UserError:
        return True
    tables = [raw.get("general", {})] + list(raw.get("datasets", []) if isinstance(raw.get("datasets"), list) else [])
    return any(isinstance(t, Mapping) and any(key in t for key in OURS) for t in tables)


def load_musubi_config(path: str, *, architecture: str | None = None) -> TrainingConfig:
    """Read a musubi-tuner dataset config; ``architecture`` (musubi's short name, e.g. "wan") as the
    training script sets it, else found from the caches' names."""
    raw = read_config_file(path)
    reader = _MusubiReader(str(path), architecture)
    datasets = reader.read(raw)
    return TrainingConfig(source=str(path), datasets=datasets, notes=reader.notes)


class _MusubiReader:
    def __init__(self, file: str, architecture: str | None):
        self.file = file
        self.architecture = architecture
        self.notes: list[str] = []
        if architecture is not None and architecture not in RESOLUTION_STEPS:
            raise UserError(f"unknown musubi-tuner architecture {architecture!r}; one of " + ", ".join(RESOLUTION_STEPS),
                            key="--architecture")

    def error(self, message: str, where: str | None = None, key: str | None = None) -> UserError:
        return UserError(message, file=self.file, where=where, key=key)

    def read(self, raw: Mapping[str, Any]) -> list[DatasetSpec]:
        for key in raw:
            if key not in ("general", "datasets"):
                raise self.error("unknown key (musubi-tuner reads only [general] and [[datasets]])", key=key)
        general = raw.get("general", {})
        self.check_table(general, GENERAL_KEYS, "general")
        tables = raw.get("datasets", [])
        if not isinstance(tables, list) or not tables:
            raise self.error("no [[datasets]]: musubi-tuner needs at least one", key="datasets")
        for index, table in enumerate(tables):
            self.check_table(table, VIDEO_KEYS if _is_video(table) else IMAGE_KEYS, f"datasets[{index}]")
        self.architecture = self.architecture or self.find_architecture(tables)
        datasets = [self.read_dataset(index, table, general) for index, table in enumerate(tables)]
        self.check_unique_caches(datasets)
        return datasets

    def check_table(self, table: Any, allowed: Mapping[str, str], where: str) -> None:
        if not isinstance(table, Mapping):
            raise self.error(f"must be a table, not {describe_value(table)}", where=where)
        for key, value in table.items():
            if key not in allowed:
                raise self.error(self.unknown_key_message(key, where), where=where, key=key)
            kind = allowed[key]
            if kind == "rate":
                self.rate_value(value, where, key)
            elif kind == "loss_weight":
                read_rate(value, check_loss_weight, file=self.file, where=where, key=key)
            elif kind == "num_repeats":
                check_num_repeats(value, file=self.file, where=where)
            elif kind == "int_list":
                if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                    raise self.error(f"must be an array of integers, not {describe_value(value)}", where=where, key=key)
            else:
                test, wanted = VALUE_KINDS[kind]
                if not test(value):
                    raise self.error(f"must be {wanted}, not {describe_value(value)}", where=where, key=key)

    def unknown_key_message(self, key: str, where: str) -> str:
        if where == "general" and key in {**IMAGE_KEYS, **VIDEO_KEYS}:
            return "not allowed in [general]; musubi-tuner accepts it only in [[datasets]]"
        if key in VIDEO_ONLY and key not in IMAGE_ONLY:
            return "a video dataset's key; this dataset has no video_directory or video_jsonl_file"
        if key in IMAGE_ONLY and key not in VIDEO_ONLY:
            return "an image dataset's key; this dataset is a video dataset (video_directory or video_jsonl_file)"
        close = difflib.get_close_matches(key, list({**IMAGE_KEYS, **VIDEO_KEYS}), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unknown key (musubi-tuner rejects it){hint}"

    def rate_value(self, value: Any, where: str, key: str) -> float:
        if is_schedule(value):
            raise self.error("a schedule changes how subsets of one dataset share its epoch; a musubi-tuner dataset "
                             "trains alone in its batches, so give a number here", where=where, key=key)
        return check_multiplier(value, file=self.file, where=where, key=key)

    def find_architecture(self, tables: list) -> str:
        """The one architecture of the caches the datasets' cache directories hold."""
        found: set[str] = set()
        for table in tables:
            folder = _cache_directory(table)
            if folder and os.path.isdir(folder):
                found |= cache_architectures(os.listdir(folder)) & set(RESOLUTION_STEPS)
        if len(found) > 1:
            raise self.error("the cache directories hold caches of several architectures (" + ", ".join(sorted(found))
                             + "); say which one trains with --architecture", key="cache_directory")
        if found:
            return found.pop()
        self.notes.append("no latent caches yet: planned from the images, with 16-pixel bucket steps (give "
                          "--architecture for an architecture with other steps)")
        return "wan"

    def read_dataset(self, index: int, table: Mapping[str, Any], general: Mapping[str, Any]) -> DatasetSpec:
        where = f"datasets[{index}]"
        video = _is_video(table)
        levels = [("dataset", table, where), ("general", general, "general")]
        value = lambda key, default=None: next((t[key] for _, t, _ in levels if t.get(key) is not None), default)  # noqa: E731
        if not video and value("image_directory") is None and value("image_jsonl_file") is None:
            raise self.error("needs image_directory or image_jsonl_file (an image dataset), or video_directory or "
                             "video_jsonl_file (a video dataset)", where=where)
        for key in ("control_directory", "multiple_target"):
            if table.get(key):
                raise self.error("control and multiple-target datasets are not supported by kohya-multiplier yet: "
                                 "their buckets also depend on the control images", where=where, key=key)
        resolution = _resolution(value("resolution", DEFAULT_RESOLUTION))
        enable_bucket = bool(value("enable_bucket", False))
        buckets = MusubiBuckets.create(resolution, enable_bucket, bool(value("bucket_no_upscale", False)), self.architecture)
        batch_size = value("batch_size", 1)
        if batch_size < 1:
            raise self.error(f"must be at least 1, got {batch_size}", where=where, key="batch_size")
        subset = self.read_items(index, table, video, buckets, where)
        self.set_rate(subset, levels, where)
        return DatasetSpec(index=index, batch_size=batch_size, resolution=resolution, enable_bucket=enable_bucket,
                           min_bucket_reso=0, max_bucket_reso=0, bucket_reso_steps=buckets.steps,
                           bucket_no_upscale=buckets.no_upscale, subsets=[subset],
                           uses_multiplier=subset.multiplier is not None,
                           table=where, file=self.file, trainer=TRAINER, video=video)

    def read_items(self, index: int, table: Mapping[str, Any], video: bool, buckets: MusubiBuckets, where: str) -> SubsetSpec:
        media = table.get("video_directory" if video else "image_directory")
        cache = _cache_directory(table)
        if cache is None:
            raise self.error("needs cache_directory (a JSONL dataset has no folder for its caches)", where=where)
        cache = os.path.abspath(cache)
        names = sorted(os.listdir(cache)) if os.path.isdir(cache) else []
        items = self.items_from_caches(cache, names, video, table)
        if not items and not video:
            items = self.items_from_images(table, where)
        elif not items:
            raise self.error(f"no latent caches of architecture {self.architecture!r} in {cache}: run musubi-tuner's "
                             "caching scripts first (a video dataset is planned from its caches)", where=where,
                             key="cache_directory")
        if not items:
            raise self.error("no images: the folder or file lists none, and there are no caches", where=where)
        sizes = buckets.assign([(w, h) for _, w, h, _ in items])
        entries = [ImageEntry(os.path.join(cache, key), w, h) for key, w, h, _ in items]
        item_buckets = [(*bucket, frames) if frames is not None else bucket for bucket, (_, _, _, frames) in zip(sizes, items)]
        name = os.path.basename(os.path.normpath(media or table.get("image_jsonl_file") or table.get("video_jsonl_file") or cache))
        folders = tuple(os.path.abspath(f) for f in (cache, media) if f)
        return SubsetSpec(image_dir=os.path.abspath(media) if media else cache, name=name, table=f"{where} ({name})",
                          is_reg=False, images=entries, multiplier=None, multiplier_origin="", num_repeats=1,
                          effective_multiplier=1.0, effective_origin="num_repeats", image_folders=folders,
                          image_buckets=item_buckets)

    def items_from_caches(self, cache: str, names: list[str], video: bool, table: Mapping[str, Any]) -> list[tuple]:
        """(key, width, height, frames or None) of each latent cache musubi's training would take:
        of this architecture, with its text encoder output beside it."""
        items = []
        for name in names:
            parsed = parse_cache_name(name, video=video)
            if parsed is None or parsed.architecture != self.architecture:
                continue
            if not os.path.exists(parsed.text_encoder_file(cache)):
                self.notes.append(f"{self.file}: {name} has no text encoder cache beside it; musubi-tuner skips it")
                continue
            items.append((parsed.item, *parsed.size, parsed.clip[1] if parsed.clip else None))
        if video and items:
            wanted = set(rounded_target_frames(table.get("target_frames", [1])))
            extraction = table.get("frame_extraction", "head")
            if extraction != "full" and any(frames not in wanted for *_, frames in items):
                self.notes.append(f"{self.file}: some caches of {cache} have frame counts outside target_frames; "
                                  "musubi-tuner trains every cache it finds, and so does the plan")
        return items

    def items_from_images(self, table: Mapping[str, Any], where: str) -> list[tuple]:
        paths = self.image_paths(table, where)
        items = []
        for path in paths:
            size = read_image_size(path)
            if size is None:
                raise self.error(f"cannot read the size of {path}", where=where)
            items.append((os.path.splitext(os.path.basename(path))[0], size[0], size[1], None))
        return items

    def image_paths(self, table: Mapping[str, Any], where: str) -> list[str]:
        folder = table.get("image_directory")
        if folder is not None:
            if not os.path.isdir(folder):
                raise self.error(f"folder not found: {os.path.abspath(folder)}", where=where, key="image_directory")
            return sorted(os.path.join(os.path.abspath(folder), n) for n in image_names(folder, IMAGE_EXTENSIONS))
        jsonl = table["image_jsonl_file"]
        try:
            with open(jsonl, encoding="utf-8") as handle:
                lines = [line for line in handle if line.strip()]
        except OSError as error:
            raise self.error(f"cannot be read: {error.strerror or error}", where=where, key="image_jsonl_file") from None
        paths = []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except ValueError:
                raise UserError("JSON syntax error", file=jsonl, where=f"line {number}") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("image_path"), str):
                raise UserError("needs an image_path", file=jsonl, where=f"line {number}")
            paths.append(os.path.abspath(entry["image_path"]))
        return paths

    def set_rate(self, subset: SubsetSpec, levels: list, where: str) -> None:
        setting = resolve_repeat_setting(levels, file=self.file, check_value=lambda v, **w: self.rate_value(v, w["where"], w.get("key", "multiplier")))
        multiplier = setting.multiplier
        if setting.images_per_epoch is not None:
            multiplier = float(setting.images_per_epoch) / len(subset.images)
        subset.num_repeats = setting.num_repeats
        if multiplier is not None:
            key = "images_per_epoch" if setting.images_per_epoch is not None else "multiplier"
            subset.multiplier, subset.multiplier_origin = multiplier, setting.origin
            subset.effective_multiplier, subset.effective_origin = multiplier, f"{key} ({setting.origin})"
            subset.images_per_epoch = setting.images_per_epoch
        else:
            subset.effective_multiplier = float(setting.num_repeats)
        subset.loss_weight = resolve_loss_weight(levels, subset.image_dir, shown_dir=subset.image_dir, file=self.file)
        if subset.excluded:
            self.notes.append(f"{self.file}: {where} is excluded (its multiplier is {subset.effective_multiplier:g}): "
                              "its batches are not trained")

    def check_unique_caches(self, datasets: list[DatasetSpec]) -> None:
        seen: dict[str, str] = {}
        for dataset in datasets:
            folder = dataset.subsets[0].image_folders[0]
            if folder in seen:
                raise self.error(f"has the cache directory of {seen[folder]}; musubi-tuner needs one per dataset "
                                 "(it defaults to the image or video directory)", where=dataset.table, key="cache_directory")
            seen[folder] = dataset.table


def _is_video(table: Any) -> bool:
    return isinstance(table, Mapping) and ("video_directory" in table or "video_jsonl_file" in table)


def _cache_directory(table: Mapping[str, Any]) -> str | None:
    return table.get("cache_directory") or table.get("image_directory") or table.get("video_directory")


def _resolution(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))
