"""Reading sd-scripts dataset configs (and DreamBooth folders) with the ``multiplier`` extension.

``load_training_config(config_path, options)`` gives every dataset with its bucket options and every
subset with its images (sizes from file headers) and the multiplier the planner uses. It follows
sd-scripts' own rules, read from ``library/config_util.py`` and ``library/train_util.py``:

* **Config files.** ``.toml`` (``[general]``, ``[[datasets]]``, ``[[datasets.subsets]]``) or
  ``.json`` with the same structure; any other extension is refused as sd-scripts refuses it.
  Keys sd-scripts' schema does not accept at a level are errors (training would abort on them);
  every key it accepts (captions, augmentation, dropout, ...) is accepted and type-checked the way
  its schema checks it (``isinstance``: a TOML integer is not a float, a boolean passes as an
  integer), and otherwise ignored. ``multiplier`` is accepted at all three levels.
* **Precedence.** A value is looked up in the subset, then the dataset, then ``[general]``, then the
  command line (``options``), then sd-scripts' default (batch size 1, bucketing off, min/max bucket
  reso 256/1024, steps 64, repeats 1). So a value in the file wins over the command line.
* **multiplier vs num_repeats.** The most specific level that sets either key decides (see
  :func:`kohya_multiplier.dataset.multipliers.resolve_repeat_setting`); both keys in one table is an
  error. ``multiply.txt`` in the image folder sets the multiplier of a subset whose own table sets
  neither key and that inherits no multiplier from its dataset or ``[general]``: it overrides an
  inherited ``num_repeats`` (or the integer prefix of a DreamBooth folder) but not a multiplier.
* **Regularization.** In a dataset where some subset has a multiplier, a regularization subset
  (``is_reg = true``) without one gets the automatic multiplier of
  :func:`kohya_multiplier.dataset.multipliers.auto_regularization_multipliers`. A dataset without any
  multiplier is stock sd-scripts: every subset uses ``num_repeats`` (sd-scripts itself then
  rebalances regularization images per image: :mod:`kohya_multiplier.dataset.regularization`).
* **Exclusion.** A subset with multiplier <= 0, or without multiplier and ``num_repeats`` < 1, is
  excluded (a note in ``TrainingConfig.notes``); a dataset whose every subset is excluded is an
  error. A later subset with the same ``image_dir`` string as an earlier one of the same dataset
  is ignored, as sd-scripts ignores it.
* **Paths.** sd-scripts opens ``image_dir`` exactly as written, so a relative ``image_dir`` is
  relative to the current working directory of the training process, not to the config file.
  The same holds here: relative paths are resolved against the current directory.
* **Without a config file.** ``options.train_data_dir`` / ``reg_data_dir`` hold DreamBooth
  folders named ``<repeats>_<class tokens>``; a decimal prefix such as ``0.25_alice`` sets a
  multiplier. Folders are taken in name order (sd-scripts takes them in file-system order, which
  only affects the order subsets are listed in, and, in a dataset without multipliers, which
  regularization images come first: ``SubsetSpec.listing_order``). Folders without a prefix are
  ignored with a warning, folders with an integer prefix below 1 silently, as sd-scripts does.
* **Validation split** (sd-scripts >= 0.10: ``validation_split`` with ``validation_seed``): the
  training part of each non-regularization subset is reproduced exactly. Without
  ``validation_seed`` sd-scripts draws a random split, which a plan cannot reproduce: a note says
  so and all images are planned. ``skip_image_resolution`` (sd-scripts v0.11.1; dataset or general
  level, or the command line) skips images of at most that area (:mod:`kohya_multiplier.dataset.subset_images`).

* **Fine-tuning subsets** (``metadata_file``; every subset of the dataset has one, as sd-scripts
  requires): the images and sizes of the metadata file (:mod:`kohya_multiplier.dataset.finetune_metadata`,
  whose rules depend on ``options.sd_scripts_layout``); a later subset with the same
  ``metadata_file`` is ignored, as sd-scripts ignores it; no regularization, no validation split
  (sd-scripts ignores it there), no ``multiply.txt``; ``loss_scale.txt`` is read from ``image_dir`` (the metadata file's folder
  when there is none).

* **Conditioning subsets** (``conditioning_data_dir``; every subset of the dataset has one, as
  sd-scripts requires: ControlNet and LLLite scripts, and ``--masked_loss``): the images of
  ``image_dir`` exactly as a DreamBooth subset (sd-scripts registers them through a DreamBoothDataset),
  never regularization; each must have its conditioning image
  (:mod:`kohya_multiplier.dataset.conditioning`).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from kohya_multiplier.dataset.buckets import BucketLayout
from kohya_multiplier.dataset.conditioning import check_conditioning_pairs
from kohya_multiplier.dataset.reading import file_identity, parse_json, parse_toml, why_unreachable
from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.finetune_metadata import read_metadata_images, rules_for_layout
from kohya_multiplier.dataset.images import ImageEntry
from kohya_multiplier.dataset import ignored as ignored_notes
from kohya_multiplier.dataset.limits import check_dataset, check_sizes, check_total_images
from kohya_multiplier.dataset.loss_weights import check_loss_weight, resolve_loss_weight
from kohya_multiplier.dataset.multipliers import (
    MULTIPLY_TXT,
    RegularizationInput,
    auto_regularization_multipliers,
    check_multiplier,
    check_num_repeats,
    describe_value,
    folder_subset_table,
    format_number,
    parse_folder_name,
    read_multiply_txt,
    resolve_repeat_setting,
)
from kohya_multiplier.dataset.regularization import stock_regularization_note
from kohya_multiplier.dataset.rates import dataset_rates, is_scheduled
from kohya_multiplier.dataset.schedules import Schedule, check_epoch_window, read_rate
from kohya_multiplier.dataset.subset_images import DatasetFilters, read_subset_images, skip_small_images
from kohya_multiplier.dataset.types import DEFAULTS, CommandLineOptions, DatasetSpec, SubsetSpec, TrainingConfig

__all__ = [
    "ImageEntry",
    "SubsetSpec",
    "DatasetSpec",
    "TrainingConfig",
    "CommandLineOptions",
    "load_training_config",
    "config_from_dict",
    "read_config_file",
    "DEFAULTS",
]

# --------------------------------------------------------------------------------------------
# sd-scripts' schema (config_util.ConfigSanitizer), plus multiplier


def _is_bool(v):
    return isinstance(v, bool)


def _is_int(v):
    return isinstance(v, int)  # booleans pass, as in voluptuous


def _is_str(v):
    return isinstance(v, str)


def _is_float(v):
    return isinstance(v, float)


def _is_number(v):
    return isinstance(v, (int, float))


def _is_dict(v):
    return isinstance(v, Mapping)


def _is_float_pair(v):
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, float) for x in v)


def _is_resolution(v):
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


VALUE_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "bool": (_is_bool, "true or false"),
    "int": (_is_int, "an integer"),
    "str": (_is_str, "a string"),
    "float": (_is_float, "a float (write 1.0, not 1)"),
    "number": (_is_number, "a number"),
    "dict": (_is_dict, "a table"),
    "float_pair": (_is_float_pair, "an array of two floats"),
    "resolution": (_is_resolution, "an integer or an array [width, height] of integers"),
}

SUBSET_ASCENDABLE = {
    "color_aug": "bool",
    "face_crop_aug_range": "float_pair",
    "flip_aug": "bool",
    "num_repeats": "num_repeats",
    "random_crop": "bool",
    "shuffle_caption": "bool",
    "keep_tokens": "int",
    "keep_tokens_separator": "str",
    "secondary_separator": "str",
    "caption_separator": "str",
    "enable_wildcard": "bool",
    "token_warmup_min": "int",
    "token_warmup_step": "number",
    "caption_prefix": "str",
    "caption_suffix": "str",
    "custom_attributes": "dict",
    "resize_interpolation": "str",
    "multiplier": "multiplier",
    "loss_weight": "loss_weight",  # kohya-multiplier; checked by loss_weights.py
    "images_per_epoch": "images_per_epoch",  # kohya-multiplier: a count per epoch, made a rate
    "start_epoch": "epoch",  # kohya-multiplier: the subset trains from this epoch (schedules.py)
    "end_epoch": "epoch",  # ... through this one
}
DROPOUT_ASCENDABLE = {
    "caption_dropout_every_n_epochs": "int",
    "caption_dropout_rate": "number",
    "caption_tag_dropout_rate": "number",
}
DREAMBOOTH_ASCENDABLE = {"caption_extension": "str", "class_tokens": "str", "cache_info": "bool"}
DREAMBOOTH_SUBSET_ONLY = {"image_dir": "str", "is_reg": "bool", "alpha_mask": "bool"}
FINE_TUNING_SUBSET_ONLY = {"metadata_file": "str", "image_dir": "str", "alpha_mask": "bool"}
DATASET_ASCENDABLE = {
    "batch_size": "int",
    "bucket_no_upscale": "bool",
    "bucket_reso_steps": "int",
    "enable_bucket": "bool",
    "max_bucket_reso": "int",
    "min_bucket_reso": "int",
    "validation_seed": "int",
    "validation_split": "float",
    "resolution": "resolution",
    "network_multiplier": "float",
    "resize_interpolation": "str",
    "skip_image_resolution": "resolution",  # sd-scripts v0.11.1
    "total_images_per_epoch": "total_images",  # kohya-multiplier: a scheduled dataset's constant total (rates.py)
}

SUBSET_KEYS = {**SUBSET_ASCENDABLE, **DREAMBOOTH_SUBSET_ONLY, **DREAMBOOTH_ASCENDABLE, **DROPOUT_ASCENDABLE}
DATASET_KEYS = {**DATASET_ASCENDABLE, **SUBSET_ASCENDABLE, **DREAMBOOTH_ASCENDABLE, **DROPOUT_ASCENDABLE, "subsets": "subsets"}
GENERAL_KEYS = {**DATASET_ASCENDABLE, **SUBSET_ASCENDABLE, **DREAMBOOTH_ASCENDABLE, **DROPOUT_ASCENDABLE}
FINE_TUNING_SUBSET_KEYS = {**SUBSET_ASCENDABLE, **FINE_TUNING_SUBSET_ONLY, **DROPOUT_ASCENDABLE}
FINE_TUNING_DATASET_KEYS = {**DATASET_ASCENDABLE, **SUBSET_ASCENDABLE, **DROPOUT_ASCENDABLE, "subsets": "subsets"}
CONDITIONING_ASCENDABLE = {"caption_extension": "str", "cache_info": "bool"}
CONDITIONING_SUBSET_ONLY = {"image_dir": "str", "conditioning_data_dir": "str"}
CONDITIONING_SUBSET_KEYS = {**SUBSET_ASCENDABLE, **CONDITIONING_SUBSET_ONLY, **CONDITIONING_ASCENDABLE, **DROPOUT_ASCENDABLE}
CONDITIONING_DATASET_KEYS = {**DATASET_ASCENDABLE, **SUBSET_ASCENDABLE, **CONDITIONING_ASCENDABLE, **DROPOUT_ASCENDABLE, "subsets": "subsets"}
TOP_KEYS = {"general": "general", "datasets": "datasets"}
# Keys whose value is a rate: a number, or a schedule of numbers (kohya_multiplier.dataset.schedules).
_RATE_KINDS = {"multiplier": check_multiplier, "loss_weight": check_loss_weight, "images_per_epoch": check_multiplier}
# The kinds of dataset (sd-scripts' DreamBoothDataset, FineTuningDataset, ControlNetDataset).
_DREAMBOOTH, _FINE_TUNING, _CONDITIONING = "dreambooth", "fine_tuning", "conditioning"


# --------------------------------------------------------------------------------------------
# Loading


def load_training_config(config_path: str | None, options: CommandLineOptions | None = None) -> TrainingConfig:
    """Read a dataset config (or the DreamBooth folders of ``options``) into a TrainingConfig.

    Raises UserError for anything sd-scripts would reject, for the multiplier errors of this
    extension, and for missing or empty image folders; see the module docstring for the rules.
    """
    options = options or CommandLineOptions()
    notes: list[str] = []
    if config_path is None:
        config_path = options.dataset_config
    if config_path is not None:
        ignored = [n for n in ("train_data_dir", "reg_data_dir", "in_json") if getattr(options, n) is not None]
        if ignored:
            notes.append(
                "ignoring " + ", ".join("--" + n for n in ignored) + " because a dataset config is given (as sd-scripts does)"
            )
        raw = read_config_file(config_path)
        reader = _Reader(file=str(config_path), options=options, notes=notes)
        datasets = reader.read(raw)
        notes.extend(ignored_notes.overridden_options(raw, options, reader.prefix()))
        return TrainingConfig(source=str(config_path), datasets=datasets, notes=notes)
    if options.in_json is not None:  # sd-scripts' own config of --in_json (train_network.py, fine_tune.py)
        if not os.path.isfile(options.in_json):
            raise UserError(f"metadata file not found: {os.path.abspath(options.in_json)}", key="in_json")
        subset: dict[str, Any] = {"metadata_file": options.in_json}
        if options.train_data_dir is not None:
            subset["image_dir"] = options.train_data_dir
        reader = _Reader(file=None, options=options, notes=notes)
        datasets = reader.read({"datasets": [{"subsets": [subset]}]})
        return TrainingConfig(source=f"--in_json {options.in_json}", datasets=datasets, notes=notes)
    if options.train_data_dir is None:
        raise UserError("no dataset: give a dataset config file, --train_data_dir or --in_json")
    raw, folder_info = _config_from_folders(options, notes)
    reader = _Reader(file=None, options=options, notes=notes, folder_info=folder_info)
    datasets = reader.read(raw)
    source = f"--train_data_dir {options.train_data_dir}"
    if options.reg_data_dir is not None:
        source += f" --reg_data_dir {options.reg_data_dir}"
    return TrainingConfig(source=source, datasets=datasets, notes=notes)


def config_from_dict(raw: Mapping[str, Any], *, file: str | None, options: CommandLineOptions | None = None) -> TrainingConfig:
    """Like :func:`load_training_config` for a config already parsed into a dict (e.g. edited in
    memory); ``file`` names it in messages."""
    notes: list[str] = []
    reader = _Reader(file=file, options=options or CommandLineOptions(), notes=notes)
    return TrainingConfig(source=str(file or "<config>"), datasets=reader.read(raw), notes=notes)


def read_config_file(path: str) -> dict:
    """Parse a ``.toml`` or ``.json`` dataset config; syntax errors become one-line UserErrors."""
    shown = str(path)
    if not os.path.isfile(path):
        raise UserError(why_unreachable(path, what="file"), file=shown)
    lower = shown.lower()
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise UserError(f"cannot be read: {error.strerror or error}", file=shown) from None
    if lower.endswith(".toml"):
        if data.startswith(b"\xef\xbb\xbf"):
            raise UserError("starts with a byte-order mark (BOM), which TOML does not allow: save it as UTF-8 "
                            "without BOM", file=shown)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            raise UserError("TOML syntax error: the file is not UTF-8 text", file=shown, where=f"line {line}") from None
        try:
            return parse_toml(text, file=shown)
        except tomllib.TOMLDecodeError as error:
            message, line, column = _split_toml_error(error)
            where = f"line {line}, column {column}" if line else None
            raise UserError(f"TOML syntax error: {message}", file=shown, where=where) from None
    if lower.endswith(".json"):
        try:
            value = parse_json(data.decode("utf-8-sig"), file=shown)
        except UnicodeDecodeError:
            raise UserError("JSON syntax error: the file is not UTF-8 text", file=shown) from None
        except json.JSONDecodeError as error:
            raise UserError(f"JSON syntax error: {error.msg}", file=shown, where=f"line {error.lineno}, column {error.colno}") from None
        if not isinstance(value, dict):
            raise UserError(f"must hold an object with general and datasets, not {describe_value(value)}", file=shown)
        return value
    raise UserError("unsupported config file format: sd-scripts reads .toml or .json dataset configs", file=shown)


def _split_toml_error(error: Exception) -> tuple[str, int | None, int | None]:
    text = str(error)
    line = getattr(error, "lineno", None)
    column = getattr(error, "colno", None)
    import re

    match = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", text)
    if match:
        text = text[: match.start()]
        line, column = int(match.group(1)), int(match.group(2))
    else:
        end = re.search(r"\s*\(at end of document\)\s*$", text)
        if end:
            text = text[: end.start()] + " at the end of the file"
    msg = getattr(error, "msg", None)
    if isinstance(msg, str) and msg and line:
        text = msg
    return text, line, column


# --------------------------------------------------------------------------------------------
# DreamBooth folders


@dataclass
class _FolderInfo:
    """Where a folder-mode subset came from (for origins and messages)."""

    where: str
    from_fraction: bool
    listing_order: int  # position in sd-scripts' own listing of the base folder (file-system order)


def _config_from_folders(options: CommandLineOptions, notes: list[str]) -> tuple[dict, list[_FolderInfo]]:
    subsets: list[dict] = []
    info: list[_FolderInfo] = []
    for option, base, is_reg in (("train_data_dir", options.train_data_dir, False), ("reg_data_dir", options.reg_data_dir, True)):
        if base is None:
            continue
        root = os.path.abspath(base)
        if not os.path.isdir(root):
            raise UserError(f"{why_unreachable(root)}: {root}", key=option)
        found = 0
        listed = os.listdir(root)  # sd-scripts' Path.iterdir() order; it decides which reg images come first
        rank = {name: i for i, name in enumerate(listed)}
        for name in sorted(listed):
            path = os.path.join(base, name)
            if not os.path.isdir(path):
                continue
            parsed = parse_folder_name(name)
            table = folder_subset_table(path, parsed, is_reg) if parsed is not None else None
            if table is None:
                notes.append(ignored_notes.dropped_folder(path, None if parsed is None else parsed[0]))  # listed, as sd-scripts drops it
                continue
            subsets.append(table)
            info.append(_FolderInfo(where=path, from_fraction="multiplier" in table, listing_order=rank[name]))
            found += 1
        if not found and not is_reg:
            raise UserError(f"no subset folders named <repeats>_<name> (such as 10_alice or 0.25_alice) in {root}", key=option)
    return {"datasets": [{"subsets": subsets}]}, info


# --------------------------------------------------------------------------------------------
# The reader


@dataclass(frozen=True)
class _SubsetPaths:
    """A subset's image folder and metadata file, as written and absolute."""

    metadata_raw: str | None
    metadata_file: str | None
    image_dir_raw: str  # as written; for a fine-tuning subset without image_dir, its metadata's folder
    image_dir_given: str | None  # absolute image_dir where the table gives one
    image_dir: str
    name: str
    conditioning_raw: str | None = None  # conditioning_data_dir as written
    conditioning_dir: str | None = None  # absolute

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> "_SubsetPaths":
        metadata_raw: str | None = table.get("metadata_file")
        metadata_file = os.path.abspath(metadata_raw) if metadata_raw is not None else None
        image_dir_raw: str | None = table.get("image_dir")
        if image_dir_raw is None:  # a fine-tuning subset of absolute keys: its folder stands in for display and loss_scale.txt
            image_dir_raw = os.path.dirname(metadata_raw)
            image_dir_given = None
        else:
            image_dir_given = os.path.abspath(image_dir_raw)
        image_dir = os.path.abspath(image_dir_raw)
        name = os.path.basename(metadata_file) if metadata_file else os.path.basename(os.path.normpath(image_dir))
        conditioning_raw: str | None = table.get("conditioning_data_dir")
        conditioning_dir = os.path.abspath(conditioning_raw) if conditioning_raw is not None else None
        return cls(metadata_raw, metadata_file, image_dir_raw, image_dir_given, image_dir, name, conditioning_raw, conditioning_dir)

    def image_folders(self, images: list[ImageEntry]) -> tuple[str, ...]:
        """The folders the subset's images are in: its image_dir, or for metadata the given
        image_dir and every image's folder."""
        if self.conditioning_dir is not None:
            return (self.image_dir, self.conditioning_dir)
        if self.metadata_file is None:
            return (self.image_dir,)
        return tuple(
            dict.fromkeys([*([self.image_dir_given] if self.image_dir_given else []), *(os.path.dirname(e.path) for e in images)])
        )


class _Reader:
    def __init__(self, *, file: str | None, options: CommandLineOptions, notes: list[str], folder_info: list[_FolderInfo] | None = None):
        self.file = file
        self.options = options
        self.notes = notes
        self.folder_info = folder_info

    def error(self, message: str, where: str | None = None, key: str | None = None) -> UserError:
        return UserError(message, file=self.file, where=where, key=key)

    # -- structure ---------------------------------------------------------------------------

    def check_table(self, table: Any, allowed: Mapping[str, str], where: str, level: str, dataset_kind: str = _DREAMBOOTH) -> None:
        if not isinstance(table, Mapping):
            raise self.error(f"must be a table, not {describe_value(table)}", where=where)
        for key, value in table.items():
            if key not in allowed:
                raise self.error(self.unknown_key_message(key, level, dataset_kind), where=where, key=key)
            kind = allowed[key]
            if kind in _RATE_KINDS:
                read_rate(value, _RATE_KINDS[kind], file=self.file, where=where, key=key)
            elif kind == "num_repeats":
                check_num_repeats(value, file=self.file, where=where)
            elif kind == "epoch":
                check_epoch_window(value if key == "start_epoch" else None, value if key == "end_epoch" else None,
                                   file=self.file, where=where)
            elif kind == "total_images":
                check_total_images(value, file=self.file, where=where)
            elif kind in VALUE_KINDS:
                test, wanted = VALUE_KINDS[kind]
                if not test(value):
                    raise self.error(f"must be {wanted}, not {describe_value(value)}", where=where, key=key)

    def unknown_key_message(self, key: str, level: str, kind: str = _DREAMBOOTH) -> str:
        if kind == _CONDITIONING and level == "[[datasets.subsets]]" and key in {**SUBSET_KEYS, **FINE_TUNING_SUBSET_KEYS}:
            return "not allowed in a conditioning subset (one with conditioning_data_dir); sd-scripts accepts it only in other kinds of subset"
        if kind == _CONDITIONING and level == "[[datasets]]" and key in DATASET_KEYS:
            return "not allowed in a dataset of conditioning subsets (conditioning_data_dir); sd-scripts accepts it only for DreamBooth subsets"
        if level == "[[datasets.subsets]]" and key in SUBSET_KEYS:
            return "not allowed in a fine-tuning subset (one with metadata_file); sd-scripts accepts it only in DreamBooth subsets"
        if level == "[[datasets]]" and key in DATASET_KEYS:
            return "not allowed in a dataset of fine-tuning subsets (metadata_file); sd-scripts accepts it only for DreamBooth subsets"
        if key == "conditioning_data_dir":
            return ("allowed only when every subset of the dataset has one (a dataset of conditioning subsets, as sd-scripts "
                    "requires)")
        elsewhere = [name for name, keys in (("[[datasets.subsets]]", SUBSET_KEYS), ("[[datasets]]", DATASET_KEYS), ("[general]", GENERAL_KEYS)) if key in keys and key != "subsets"]
        if elsewhere:
            return f"not allowed in {level}; sd-scripts accepts it only in " + " and ".join(elsewhere)
        allowed = {"[general]": GENERAL_KEYS, "[[datasets]]": DATASET_KEYS, "[[datasets.subsets]]": SUBSET_KEYS, "the top level": TOP_KEYS}[level]
        close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unknown key (sd-scripts rejects it){hint}"

    # -- datasets ----------------------------------------------------------------------------

    def read(self, raw: Mapping[str, Any]) -> list[DatasetSpec]:
        for key in raw:
            if key not in TOP_KEYS:
                raise self.error(self.unknown_key_message(key, "the top level"), key=key)
        general = raw.get("general", {})
        self.check_table(general, GENERAL_KEYS, "general", "[general]")
        datasets_raw = raw.get("datasets")
        if datasets_raw is None or (isinstance(datasets_raw, list) and not datasets_raw):
            raise self.error("no datasets: add at least one [[datasets]] with [[datasets.subsets]]", key="datasets")
        if not isinstance(datasets_raw, list):
            raise self.error(f"must be an array of tables ([[datasets]]), not {describe_value(datasets_raw)}", key="datasets")
        # Validate every table first (as sd-scripts' schema does), then interpret.
        kinds: list[str] = []  # per dataset: DreamBooth, fine-tuning (metadata_file) or conditioning subsets
        for index, table in enumerate(datasets_raw):
            where = f"datasets[{index}]"
            if not isinstance(table, Mapping):
                raise self.error(f"must be a table, not {describe_value(table)}", where=where)
            subsets_raw = table.get("subsets")
            fine_tuning = _is_fine_tuning(subsets_raw)
            kind = _CONDITIONING if _is_conditioning(subsets_raw) else _FINE_TUNING if fine_tuning else _DREAMBOOTH
            if fine_tuning is None and kind != _CONDITIONING:
                raise self.error(
                    "DreamBooth subsets (image_dir only) and fine-tuning subsets (metadata_file) cannot be mixed in one dataset "
                    "(sd-scripts refuses it); split them into two [[datasets]]", where=where, key="subsets",
                )
            kinds.append(kind)
            dataset_keys = {_CONDITIONING: CONDITIONING_DATASET_KEYS, _FINE_TUNING: FINE_TUNING_DATASET_KEYS}.get(kind, DATASET_KEYS)
            self.check_table(table, dataset_keys, where, "[[datasets]]", kind)
            if subsets_raw is None or (isinstance(subsets_raw, list) and not subsets_raw):
                raise self.error("no subsets: add at least one [[datasets.subsets]] with an image_dir", where=where, key="subsets")
            if not isinstance(subsets_raw, list):
                raise self.error(
                    f"must be an array of tables ([[datasets.subsets]]), not {describe_value(subsets_raw)}", where=where, key="subsets"
                )
            subset_keys = {_CONDITIONING: CONDITIONING_SUBSET_KEYS, _FINE_TUNING: FINE_TUNING_SUBSET_KEYS}.get(kind, SUBSET_KEYS)
            for sub_index, sub_table in enumerate(subsets_raw):
                sub_where = self.subset_where(index, sub_index, sub_table)
                self.check_table(sub_table, subset_keys, sub_where, "[[datasets.subsets]]", kind)
                if kind != _FINE_TUNING and "image_dir" not in sub_table:
                    raise self.error("missing: every subset needs the folder of its images", where=sub_where, key="image_dir")
        return [self.read_dataset(index, table, general, kinds[index]) for index, table in enumerate(datasets_raw)]

    def subset_where(self, dataset_index: int, index: int, table: Any) -> str:
        if self.folder_info is not None:
            return self.folder_info[index].where
        base = f"datasets[{dataset_index}].subsets[{index}]"
        for key in ("metadata_file", "image_dir"):
            if isinstance(table, Mapping) and isinstance(table.get(key), str):
                return f"{base} ({table[key]})"
        return base

    def lookup(self, key: str, tables: list[Mapping[str, Any]], cli_value: Any = None) -> Any:
        for table in tables:
            value = table.get(key)
            if value is not None:
                return value
        if cli_value is not None:
            return cli_value
        return DEFAULTS.get(key)

    def read_dataset(self, index: int, table: Any, general: Mapping[str, Any], kind: str) -> DatasetSpec:
        where = f"datasets[{index}]"
        fine_tuning = kind == _FINE_TUNING
        opts = self.options
        levels = [table, general]
        batch_size = self.lookup("batch_size", levels, opts.train_batch_size)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise self.error(f"must be at least 1, not {batch_size!r}", where=self.where_of("batch_size", table, general, where), key="batch_size")
        resolution = self.resolve_resolution(table, general, where)
        enable_bucket = bool(self.lookup("enable_bucket", levels, opts.enable_bucket))
        min_reso = self.lookup("min_bucket_reso", levels, opts.min_bucket_reso)
        max_reso = self.lookup("max_bucket_reso", levels, opts.max_bucket_reso)
        steps = self.lookup("bucket_reso_steps", levels, opts.bucket_reso_steps)
        no_upscale = bool(self.lookup("bucket_no_upscale", levels, opts.bucket_no_upscale))
        check_sizes({"batch_size": batch_size, "resolution": resolution, "min_bucket_reso": min_reso, "max_bucket_reso": max_reso,
                     "bucket_reso_steps": steps}, file=self.file, where_of=lambda key: self.where_of(key, table, general, where))
        layout = BucketLayout.create(
            resolution=resolution,
            enable_bucket=enable_bucket,
            min_bucket_reso=min_reso,
            max_bucket_reso=max_reso,
            bucket_reso_steps=steps,
            bucket_no_upscale=no_upscale,
            file=self.file,
            where=where,
        )
        filters = self.read_filters(levels, fine_tuning, where)
        subsets, predefined_buckets = self.read_subsets(index, table, general, filters, fine_tuning, no_upscale)
        total = self.lookup("total_images_per_epoch", levels)
        scheduled = is_scheduled(subsets, total)
        uses_multiplier = scheduled or any(s.multiplier is not None for s in subsets)
        self.apply_regularization(subsets, uses_multiplier, where, scheduled)
        rates = None
        if scheduled:
            rates = dataset_rates(subsets, total, file=self.file, where=self.where_of("total_images_per_epoch", table, general, where) or where)
            for subset, peak in zip(subsets, rates.peaks()):
                subset.effective_multiplier = float(peak)  # what it trains at most; <= 0: never (excluded)
        self.note_excluded(subsets, where)
        spec = DatasetSpec(
            index=index,
            batch_size=batch_size,
            resolution=resolution,
            enable_bucket=enable_bucket,
            min_bucket_reso=layout.min_bucket_reso if enable_bucket else min_reso,
            max_bucket_reso=layout.max_bucket_reso if enable_bucket else max_reso,
            bucket_reso_steps=steps,
            bucket_no_upscale=no_upscale if enable_bucket else False,
            subsets=subsets,
            uses_multiplier=uses_multiplier,
            layout=layout,
            table=where,
            fine_tuning=fine_tuning,
            predefined_buckets=predefined_buckets,
            conditioning=kind == _CONDITIONING,
            rates=rates,
            total_images_per_epoch=total,
            file=self.file,
        )
        check_dataset(spec, file=self.file)  # bounded before any planning (kohya_multiplier.dataset.limits)
        return spec

    def read_filters(self, levels: list[Mapping[str, Any]], fine_tuning: bool, where: str) -> DatasetFilters:
        """Which images the dataset leaves out: the validation split and the skipped small images."""
        opts = self.options
        validation_split = self.lookup("validation_split", levels, opts.validation_split)
        validation_seed = self.lookup("validation_seed", levels, opts.validation_seed)
        if not isinstance(validation_split, (int, float)) or isinstance(validation_split, bool) or not 0 <= validation_split <= 1:
            raise self.error(f"must be between 0 and 1, not {validation_split!r}", where=where, key="validation_split")
        skip = self.lookup("skip_image_resolution", levels)  # checked by the schema: an int or [w, h]
        if skip is not None:
            skip = (skip, skip) if isinstance(skip, int) else (int(skip[0]), int(skip[1]))
        elif opts.skip_image_resolution is not None:
            skip = parse_resolution_option(opts.skip_image_resolution, key="--skip_image_resolution")
        # sd-scripts' FineTuningDataset accepts validation_split and ignores it
        return DatasetFilters(0.0, None, skip) if fine_tuning else DatasetFilters(float(validation_split), validation_seed, skip)

    def read_subsets(
        self, index: int, table: Mapping[str, Any], general: Mapping[str, Any], filters: DatasetFilters, fine_tuning: bool,
        no_upscale: bool,
    ) -> tuple[list[SubsetSpec], bool]:
        """The dataset's subsets (the ones sd-scripts ignores left out) and whether its buckets are
        predefined (every trained image of fine-tuning metadata has a train_resolution)."""
        where = f"datasets[{index}]"
        subsets: list[SubsetSpec] = []
        seen_dirs: dict = {}  # image_dir / metadata_file as written, and (device, inode) of each -> (where, as written)
        for sub_index, sub_table in enumerate(table["subsets"]):
            spec = self.read_subset(index, sub_index, sub_table, table, general, filters, seen_dirs)
            if spec is not None:
                subsets.append(spec)
        trained = [s for s in subsets if not s.excluded]
        predefined_buckets = fine_tuning and bool(trained) and all(s.sized_by_train_resolution for s in trained)
        if predefined_buckets and no_upscale:
            raise self.error(
                "cannot be used when every image of the metadata has train_resolution (sd-scripts <= v0.9 then asserts); "
                "remove it or the train_resolution entries", where=self.where_of("bucket_no_upscale", table, general, where) or where,
                key="bucket_no_upscale",
            )
        return subsets, predefined_buckets

    def note_excluded(self, subsets: list[SubsetSpec], where: str) -> None:
        for s in subsets:
            if s.excluded:
                self.notes.append(f"{self.prefix()}{s.table}: excluded ({_exclusion_reason(s)})")
        if subsets and all(s.excluded for s in subsets):
            raise self.error("every subset is excluded (multiplier or num_repeats <= 0); nothing to train", where=where)

    def prefix(self) -> str:
        return f"{self.file}: " if self.file else ""

    def where_of(self, key: str, table: Mapping, general: Mapping, dataset_where: str) -> str | None:
        if table.get(key) is not None:
            return dataset_where
        if general.get(key) is not None:
            return "general"
        return None

    def resolve_resolution(self, table: Mapping, general: Mapping, where: str) -> tuple[int, int]:
        for source, value in (("dataset", table.get("resolution")), ("general", general.get("resolution"))):
            if value is not None:
                if isinstance(value, int):
                    return (value, value)
                return (int(value[0]), int(value[1]))
        cli = self.options.resolution
        if cli is not None:
            return parse_resolution_option(cli)
        raise self.error(
            "required: set it in [general] or [[datasets]], or pass --resolution",
            where=where,
            key="resolution",
        )

    # -- subsets -----------------------------------------------------------------------------

    def read_subset(
        self,
        dataset_index: int,
        index: int,
        table: Any,
        dataset: Mapping[str, Any],
        general: Mapping[str, Any],
        filters: DatasetFilters,
        seen_dirs: dict,
    ) -> SubsetSpec | None:
        folder = self.folder_info[index] if self.folder_info is not None else None
        where = self.subset_where(dataset_index, index, table)
        paths = _SubsetPaths.of(table)
        is_reg = bool(table.get("is_reg", False))
        levels = [("subset", table, where), ("dataset", dataset, f"datasets[{dataset_index}]"), ("general", general, "general")]
        multiplier, origin, num_repeats, per_epoch = self.subset_multiplier(levels, folder, paths, is_reg, where)
        asked = multiplier if multiplier is not None else per_epoch
        excluded = (asked is not None and _peak(asked) <= 0) or (asked is None and num_repeats < 1)
        if not excluded and self.is_repeated(paths, where, seen_dirs):
            return None
        images, sized_by_train_resolution, image_of_key = self.read_images(paths, [table, dataset, general], filters, where, is_reg, excluded)

        multiplier, schedule, effective, effective_origin = _resolved_rate(multiplier, per_epoch, num_repeats, origin, len(images))
        loss_weight = resolve_loss_weight(levels, paths.image_dir, shown_dir=paths.image_dir_raw, file=self.file)
        start_epoch, end_epoch = self.epoch_window(levels)
        return SubsetSpec(
            multiplier_schedule=schedule,
            images_per_epoch=per_epoch,
            start_epoch=start_epoch,
            end_epoch=end_epoch,
            image_dir=paths.image_dir,
            name=paths.name,
            table=where,
            is_reg=is_reg,
            images=images,
            multiplier=multiplier,
            multiplier_origin=origin if multiplier is not None else "",
            num_repeats=num_repeats,
            effective_multiplier=effective,
            effective_origin=effective_origin,
            listing_order=folder.listing_order if folder is not None else None,
            loss_weight=loss_weight,
            metadata_file=paths.metadata_file,
            sized_by_train_resolution=sized_by_train_resolution,
            image_of_key=image_of_key,
            image_folders=paths.image_folders(images),
            conditioning_dir=paths.conditioning_dir,
        )

    def read_images(self, paths: "_SubsetPaths", tables: list, filters: DatasetFilters, where: str, is_reg: bool, excluded: bool):
        """(images, sized by train_resolution, image of each metadata key): a subset's images, from
        its metadata file or its folder (and each one's conditioning image)."""
        if paths.metadata_file is not None:
            found = read_metadata_images(
                paths.metadata_file, paths.image_dir_given, rules=rules_for_layout(self.options.sd_scripts_layout), file=self.file,
                where=where, shown_file=paths.metadata_raw,
            )
            images = skip_small_images(found.images, filters, where=f"{self.prefix()}{where}", notes=self.notes)
            return images, found.from_train_resolution, found.path_of_key
        images = read_subset_images(
            paths.image_dir, file=self.file, where=where, is_reg=is_reg, filters=filters, notes=self.notes, lenient=excluded,
            cache_info=bool(self.lookup("cache_info", tables, self.options.cache_info)),
        )
        if paths.conditioning_dir is not None and not excluded:
            check_conditioning_pairs(images, paths.conditioning_dir, shown_dir=paths.conditioning_raw, file=self.file,
                                     where=where, notes=self.notes)
        return images, False, {}

    def subset_multiplier(
        self, levels: list, folder: _FolderInfo | None, paths: "_SubsetPaths", is_reg: bool, where: str
    ) -> tuple[Any, str, int, Any]:
        """(multiplier or None, where it comes from, num_repeats, images_per_epoch or None): the tables' settings, else the
        image folder's multiply.txt; notes for a multiply.txt the tables override and for an
        inherited regularization multiplier."""
        default_repeats = self.options.dataset_repeats if self.options.dataset_repeats is not None else 1
        setting = resolve_repeat_setting(
            levels,
            file=self.file,
            default_num_repeats=default_repeats,
            check_value=lambda value, **where: read_rate(value, check_multiplier, **{"key": "multiplier", **where}),
        )
        multiplier, origin, num_repeats = setting.multiplier, setting.origin, setting.num_repeats
        per_epoch = setting.images_per_epoch
        if folder is not None and origin == "subset":
            origin = "folder name"
        # multiply.txt: applies unless the subset's own table sets a key or a multiplier is inherited.
        own_table_sets = origin in ("subset",) or (folder is not None and folder.from_fraction)
        image_dir = paths.image_dir
        if paths.metadata_file is not None:
            pass  # EveryDream2's multiply.txt belongs to image folders, not to metadata datasets
        elif not own_table_sets and multiplier is None and per_epoch is None and os.path.isdir(image_dir):
            shown = os.path.join(paths.image_dir_raw, MULTIPLY_TXT)
            from_file = read_multiply_txt(image_dir, file_for_errors=shown)
            if from_file is not None:
                multiplier, origin = from_file, "multiply.txt"
        elif os.path.isfile(os.path.join(image_dir, MULTIPLY_TXT)):
            self.notes.append(ignored_notes.lost_multiply_txt(self.prefix(), where, origin, multiplier, num_repeats))
        if is_reg and (multiplier is not None or per_epoch is not None) and origin in ("dataset", "general"):
            self.notes.append(ignored_notes.inherited_regularization(self.prefix(), where, origin, multiplier if multiplier is not None else per_epoch))
        return multiplier, origin, num_repeats, per_epoch

    def epoch_window(self, levels: list) -> tuple[int, int | None]:
        """The subset's start_epoch and end_epoch, each from the most specific level that sets it."""
        found = {}
        for key in ("start_epoch", "end_epoch"):
            found[key] = next(((table[key], where) for _, table, where in levels if table.get(key) is not None), (None, None))
        (start, start_where), (end, end_where) = found["start_epoch"], found["end_epoch"]
        return check_epoch_window(start, end, file=self.file, where=None, start_where=start_where, end_where=end_where)

    def is_repeated(self, paths: "_SubsetPaths", where: str, seen_dirs: dict) -> bool:
        """Whether an earlier subset of the dataset has the same image_dir / metadata_file as written
        (sd-scripts' subset equality: ignored, as sd-scripts does); notes another spelling of the
        same folder or file, which sd-scripts trains twice."""
        metadata_raw = paths.metadata_raw
        same = metadata_raw if metadata_raw is not None else paths.image_dir_raw  # sd-scripts' subset equality
        key = "metadata_file" if metadata_raw is not None else "image_dir"
        if same in seen_dirs:
            self.notes.append(
                f"{self.prefix()}{where}: ignored: the same {key} as an earlier subset of this dataset (as sd-scripts does)"
            )
            return True
        seen_dirs[same] = (where, same)
        identity = file_identity(paths.metadata_file if paths.metadata_file is not None else paths.image_dir)
        if identity is not None and identity in seen_dirs:
            earlier_where, earlier = seen_dirs[identity]
            self.notes.append(
                f"{self.prefix()}{where}: note: {key} {same!r} is the same {'file' if metadata_raw else 'folder'} as "
                f"{earlier_where}'s {earlier!r} (another spelling or a link); sd-scripts compares the text, so it "
                "trains both subsets and these images twice as often; write one spelling if that is not intended"
            )
        elif identity is not None:
            seen_dirs[identity] = (where, same)
        return False

    # -- regularization ------------------------------------------------------------------------

    def apply_regularization(self, subsets: list[SubsetSpec], uses_multiplier: bool, where: str, scheduled: bool = False) -> None:
        note = None if uses_multiplier else stock_regularization_note(subsets, self.prefix(), where)
        if note:
            self.notes.append(note)
        inputs = [
            RegularizationInput(
                is_reg=s.is_reg,
                image_count=len(s.images),
                multiplier=s.multiplier,
                num_repeats=s.num_repeats,
            )
            for s in subsets
        ]
        for spec, auto in zip(subsets, auto_regularization_multipliers(inputs)):
            if auto is not None:
                spec.effective_multiplier = auto
                spec.effective_origin = "auto (regularization)"
        if scheduled and any(s.effective_origin == "auto (regularization)" for s in subsets):
            self.notes.append(f"{self.prefix()}{where}: regularization subsets without a multiplier match each epoch's training images")
        elif uses_multiplier and any(s.effective_origin == "auto (regularization)" for s in subsets):
            autos = sorted({format_number(round(s.effective_multiplier, 6)) for s in subsets if s.effective_origin == "auto (regularization)"})
            self.notes.append(
                f"{self.prefix()}{where}: regularization subsets without a multiplier get {', '.join(autos)} "
                "so that regularization images per epoch match training images per epoch"
            )



def _is_conditioning(subsets_raw: Any) -> bool:
    """sd-scripts' test: a dataset is a ControlNet dataset when every subset has conditioning_data_dir."""
    tables = [t for t in subsets_raw if isinstance(t, Mapping)] if isinstance(subsets_raw, list) else []
    return bool(tables) and len(tables) == len(subsets_raw) and all("conditioning_data_dir" in t for t in tables)


def _is_fine_tuning(subsets_raw: Any) -> bool | None:
    """sd-scripts' test: a dataset is fine-tuning when every subset has metadata_file, DreamBooth
    when none has; None when mixed."""
    tables = [t for t in subsets_raw if isinstance(t, Mapping)] if isinstance(subsets_raw, list) else []
    with_metadata = sum("metadata_file" in t for t in tables)
    if with_metadata and with_metadata < len(tables):
        return None
    return bool(tables) and with_metadata == len(tables)


def _resolved_rate(multiplier, per_epoch, num_repeats: int, origin: str, images: int):
    """(multiplier, its schedule or None, effective multiplier, effective origin) of a subset of
    ``images`` images: images_per_epoch made a rate; a schedule's peak stands for it until the
    dataset resolves the rates of each epoch (read_dataset)."""
    if per_epoch is not None:  # a count per epoch: the rate of the images the subset really has
        multiplier = _per_image(per_epoch, images)
    schedule = multiplier if isinstance(multiplier, Schedule) else None
    if schedule is not None:
        multiplier = schedule.peak
    if multiplier is None:
        return None, None, float(num_repeats), "num_repeats"
    key = "images_per_epoch" if per_epoch is not None else "multiplier"
    return multiplier, schedule, multiplier, f"{key} ({origin})"


def _peak(rate) -> float:
    return rate.peak if isinstance(rate, Schedule) else float(rate)


def _per_image(per_epoch, images: int):
    """images_per_epoch as a multiplier of ``images`` images (0 without images)."""
    factor = 1.0 / images if images else 0.0
    return per_epoch.scaled(factor) if isinstance(per_epoch, Schedule) else float(per_epoch) * factor


def _exclusion_reason(s: SubsetSpec) -> str:
    if s.effective_origin == "auto (regularization)":
        return "automatic regularization multiplier is 0: there are no training images per epoch to match"
    if s.multiplier is not None:
        return f"multiplier {format_number(s.multiplier)} from {s.multiplier_origin}"
    return f"num_repeats {s.num_repeats}"


def parse_resolution_option(value: Any, *, key: str = "resolution") -> tuple[int, int]:
    """``--resolution`` as sd-scripts parses it: "512" -> (512, 512), "512,768" -> (512, 768);
    also accepts an int or a (width, height) pair."""
    if isinstance(value, bool):
        raise UserError(f"must be 'size' or 'width,height', not {value!r}", key=key)
    if isinstance(value, int):
        parts = [value]
    elif isinstance(value, str):
        try:
            parts = [int(p) for p in value.split(",")]
        except ValueError:
            raise UserError(f"must be 'size' or 'width,height', not {value!r}", key=key) from None
    elif isinstance(value, (list, tuple)):
        parts = [int(p) for p in value]
    else:
        raise UserError(f"must be 'size' or 'width,height', not {value!r}", key=key)
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise UserError(f"must be 'size' or 'width,height', not {value!r}", key=key)
    if parts[0] <= 0 or parts[1] <= 0:
        raise UserError(f"must be positive, not {value!r}", key=key)
    return (parts[0], parts[1])
