"""The images of a fine-tuning subset (``metadata_file``), as sd-scripts' FineTuningDataset finds them.

A fine-tuning subset names a metadata file: JSON ``{image key: {"caption", "tags", ...}}`` as
``finetune/merge_*_to_metadata.py`` and ``prepare_buckets_latents.py`` write it, or (sd-scripts
v0.10 and later) JSON Lines with one ``{"image_path", "caption", "image_size"}`` object per line.
Which image a key means and which size it has depend on the sd-scripts revision:

* **v0.10 and later** (``CURRENT``, and ``SPLIT`` for v0.11): a relative key is joined to
  ``image_dir`` (sd-scripts asserts that there is one), an absolute key is the path; from v0.11 a
  key without extension, or naming no file, is looked up as ``key.<image extension>`` in its
  folder (``glob_images``). The size is the entry's ``image_size`` (JSON Lines: ``image_size``, and
  from v0.11 ``width`` and ``height``), else the original size in the name of a latent cache file
  ``<stem>_<W>x<H>_*.npz`` beside the image, else the image's header. ``train_resolution`` is not
  read any more.
* **v0.9 and earlier** (``LEGACY``): the key as a path if that file exists, else
  ``<image_dir>/<key>.<image extension>``; the size is ``train_resolution`` (written by
  ``prepare_buckets_latents.py``), else the header. When every image of the dataset has a
  ``train_resolution``, those are the buckets themselves (sd-scripts' predefined bucket list):
  each image trains at its own ``train_resolution``.

The path found is each image's identity for the planner, in the dry run and in training alike
(:func:`image_path` is the one place it is decided), whether or not sd-scripts later reads the image
from a latent cache instead. Torch-free.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from kohya_multiplier.dataset.reading import image_side, parse_json
from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.images import IMAGE_EXTENSIONS, ImageEntry, images_with_sizes

CURRENT = "v0.10"  # sd-scripts v0.10 up to main 48d368fa: image_size, keys taken as written
SPLIT = "v0.11"  # v0.11: CURRENT, and keys without extension found by glob_images
LEGACY = "v0.9"  # sd-scripts up to v0.9: train_resolution, keys found by glob_images

_CACHE_SIZE = re.compile(r"_(\d{4,})x(\d{4,})_[^/\\]*\.npz$")


@dataclass(frozen=True)
class MetadataImages:
    images: list[ImageEntry]  # sorted by path; sizes as sd-scripts buckets them
    from_train_resolution: bool  # LEGACY: every size is the entry's train_resolution
    path_of_key: dict[str, str]  # each metadata key's image (training names images by these paths too)


def rules_for_layout(layout: str | None) -> str:
    """The rules of an sd-scripts code layout (``checkouts.locate.detect_layout``: "v0.9",
    "strategies", "split"); unknown (no checkout): the newest, v0.11's."""
    return {"v0.9": LEGACY, "strategies": CURRENT}.get(layout or "", SPLIT)


def read_metadata(
    path: str, *, file: str | None, where: str, jsonl: bool, width_height: bool = False, shown: str | None = None
) -> dict[str, dict]:
    """The metadata file as sd-scripts loads it: image key -> entry. JSON Lines only where the
    revision reads them (``jsonl``); otherwise a ``.jsonl`` file is parsed as JSON, as sd-scripts does.
    ``shown``: the file as messages name it (as the config writes it)."""
    shown = shown or path
    if not os.path.isfile(path):
        raise UserError(f"metadata file not found: {path}", file=file, where=where, key="metadata_file")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {shown}: {getattr(error, 'strerror', None) or error}", file=file, where=where, key="metadata_file") from None
    if jsonl and path.endswith(".jsonl"):
        metadata: dict[str, dict] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = parse_json(line, file=file, where=where, key="metadata_file")
            except json.JSONDecodeError as error:
                raise UserError(f"{shown} line {number}: JSON syntax error: {error.msg}", file=file, where=where, key="metadata_file") from None
            if not isinstance(record, dict) or not isinstance(record.get("image_path"), str):
                raise UserError(f"{shown} line {number}: needs an \"image_path\" string", file=file, where=where, key="metadata_file")
            entry: dict[str, Any] = {}
            if "image_size" in record:
                entry["image_size"] = record["image_size"]
            elif width_height and "width" in record and "height" in record:  # v0.11
                entry["image_size"] = [record["width"], record["height"]]
            metadata[record["image_path"]] = entry
        return metadata
    try:
        metadata = parse_json(text, file=file, where=where, key="metadata_file")
    except json.JSONDecodeError as error:
        raise UserError(
            f"{shown}: JSON syntax error: {error.msg} (line {error.lineno}, column {error.colno})", file=file, where=where, key="metadata_file"
        ) from None
    if not isinstance(metadata, dict) or not all(isinstance(v, dict) for v in metadata.values()):
        raise UserError(f"{shown}: must be a JSON object of image key -> entry", file=file, where=where, key="metadata_file")
    return metadata


def _glob_images(directory: str, base: str) -> list[str]:
    """sd-scripts' glob_images(directory, base)."""
    found = set()
    for ext in IMAGE_EXTENSIONS:
        found.update(glob.glob(glob.escape(os.path.join(directory, base + ext))))
    return sorted(found)


def image_path(key: str, image_dir: str | None, rules: str) -> str | None:
    """The absolute path of the image that ``key`` names, as sd-scripts resolves it; None where a
    relative key has no ``image_dir`` to resolve it against, or (v0.9) where sd-scripts finds neither
    an image nor a latent cache for it."""
    if rules == LEGACY:
        if os.path.exists(key):
            return os.path.abspath(key)
        if image_dir is None:
            return None
        found = _glob_images(image_dir, key)
        if found:
            return os.path.abspath(found[0])
        caches = (os.path.splitext(key)[0] + ".npz", os.path.join(image_dir, key + ".npz"))
        return os.path.abspath(os.path.join(image_dir, key)) if any(os.path.exists(c) for c in caches) else None
    if os.path.isabs(key):
        path = key
    elif image_dir is None:
        return None
    else:
        path = os.path.join(image_dir, key)
    if rules == SPLIT and (not os.path.splitext(key)[1] or not os.path.exists(path)):
        found = _glob_images(os.path.dirname(path), os.path.basename(key))
        if found:
            path = found[0]
    return os.path.abspath(path)


def _size_from_cache_name(path: str) -> tuple[int, int] | None:
    stem = os.path.splitext(path)[0]
    for candidate in sorted(glob.glob(glob.escape(stem) + "_*.npz")):
        match = _CACHE_SIZE.search(candidate[len(stem):])
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def _pair(value: Any) -> tuple[int, int] | None:
    """[width, height]: two whole numbers of pixels, each at most MAX_IMAGE_SIDE."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        width, height = image_side(value[0]), image_side(value[1])
        if width is not None and height is not None:
            return width, height
    return None


def read_metadata_images(
    metadata_file: str, image_dir: str | None, *, rules: str, file: str | None, where: str, shown_file: str | None = None
) -> MetadataImages:
    """Every image of a fine-tuning subset, with the size sd-scripts buckets it by.

    Raises a UserError for what sd-scripts would stop on: a missing or malformed metadata file, a
    relative key without ``image_dir``, an image it could not find, a size given in another form
    than ``[width, height]``."""
    shown = shown_file or metadata_file
    metadata = read_metadata(metadata_file, file=file, where=where, jsonl=rules != LEGACY, width_height=rules == SPLIT, shown=shown)
    size_key = "train_resolution" if rules == LEGACY else "image_size"
    known: dict[str, tuple[int, int]] = {}
    path_of_key: dict[str, str] = {}
    all_given = bool(metadata)
    for key, entry in metadata.items():
        path = image_path(key, image_dir, rules)
        if path is None and image_dir is None:
            raise UserError(
                f"{shown}: image key {key!r} is not a file as it stands, so sd-scripts needs image_dir to find it",
                file=file, where=where, key="image_dir",
            )
        if path is None:  # v0.9
            raise UserError(
                f"{shown}: no image for key {key!r}: sd-scripts v0.9 opens the key as a path, else "
                f"{os.path.join(image_dir, key)}.<image extension> (write keys without extension)",
                file=file, where=where, key="metadata_file",
            )
        given = entry.get(size_key)
        size = _pair(given)
        if given is not None and size is None:
            raise UserError(f"{shown}: {key!r}: {size_key} must be [width, height] in pixels, not {given!r}", file=file, where=where, key="metadata_file")
        if size is None:
            all_given = False
            on_disk = os.path.isfile(path)  # then its header says, read below with the others
            if not on_disk and rules != LEGACY:
                size = _size_from_cache_name(path)
            if size is None and not on_disk:
                raise UserError(
                    f"{shown}: no image for {key!r} (looked for {path}) and no {size_key} in its entry", file=file, where=where, key="metadata_file"
                )
        if size is not None:
            known[path] = size
        path_of_key[key] = path
    if not path_of_key:
        return MetadataImages([], False, {})
    entries = images_with_sizes(list(path_of_key.values()), file=file, where=where, key="metadata_file", folder=os.path.dirname(metadata_file), known_sizes=known)
    entries.sort(key=lambda e: e.path)
    return MetadataImages(entries, from_train_resolution=rules == LEGACY and all_given, path_of_key=path_of_key)


__all__ = ["CURRENT", "LEGACY", "SPLIT", "MetadataImages", "image_path", "read_metadata", "read_metadata_images", "rules_for_layout"]
