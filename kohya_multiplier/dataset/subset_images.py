"""Which images of a subset folder sd-scripts trains, in the order it lists them.

sd-scripts' ``load_dreambooth_dir`` (``DreamBoothDataset.__init__``; train_util.py up to main,
dreambooth_dataset.py at v0.11.1), step by step:

1. List the folder (``glob_images``: sorted by path), or, with ``cache_info`` and a
   ``metadata_cache.json`` in the folder, take the cache's paths and sizes as they are.
2. v0.11.1: with ``skip_image_resolution`` (w, h), drop every image whose original area
   ``width x height`` is at most ``w x h`` (an image whose size cannot be read counts as 0 x 0).
3. main and v0.11.1, with ``validation_split`` > 0: a training subset keeps the first
   ``ceil(n x (1 - split))`` images of the list shuffled by ``validation_seed``; a regularization
   subset keeps all its images in a training dataset.

A subset left without images is skipped by sd-scripts; here it gets an empty image list. A missing
folder, or one without any image file, is an error before any filter (the user asked for it).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass
from typing import Any

from kohya_multiplier.dataset.reading import image_side, parse_json
from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.images import ImageEntry, images_with_sizes, list_image_files, load_images


@dataclass(frozen=True)
class DatasetFilters:
    """The dataset-level options that decide which images of a subset are trained."""

    validation_split: float = 0.0
    validation_seed: int | None = None
    skip_image_resolution: tuple[int, int] | None = None  # (w, h): images of area <= w x h are skipped


def read_subset_images(
    image_dir: str,
    *,
    file: str | None,
    where: str,
    is_reg: bool,
    cache_info: bool,
    filters: DatasetFilters,
    notes: list[str],
    lenient: bool = False,
) -> list[ImageEntry]:
    """The images sd-scripts registers for one subset of a training dataset, sorted by path.

    ``notes`` receives what the user should be told once (images filtered, a split that cannot be
    reproduced). ``lenient``: an excluded subset, listed for display only; never fails.
    """
    prefix = f"{file}: " if file else ""
    validation_split, validation_seed = filters.validation_split, filters.validation_seed
    skip_image_resolution = filters.skip_image_resolution
    if lenient:
        try:
            paths = list_image_files(image_dir)
        except OSError:
            return []
        with contextlib.suppress(UserError):
            return images_with_sizes(paths, file=file, where=where, folder=image_dir)
        return []
    cached = read_info_cache(image_dir, file=file, where=where) if cache_info else None
    if cached is None and validation_split <= 0 and skip_image_resolution is None:
        return load_images(image_dir, file=file, where=where)
    if cached is not None:
        paths = [os.path.abspath(p) for p in cached]
        sizes = {os.path.abspath(p): tuple(v) for p, v in cached.items() if v is not None}
    else:
        if not os.path.isdir(image_dir):
            return load_images(image_dir, file=file, where=where)  # raises the folder error
        paths = list_image_files(image_dir)
        sizes = {}
        if not paths:
            return load_images(image_dir, file=file, where=where)  # raises "no images found"
    if skip_image_resolution is not None and paths:
        entries = images_with_sizes(paths, file=file, where=where, folder=image_dir, known_sizes=sizes)
        kept = skip_small_images(entries, filters, where=f"{prefix}{where}", notes=notes)
        paths = [e.path for e in kept]
        sizes = {e.path: (e.width, e.height) for e in kept}
    if validation_split > 0 and not is_reg and paths:
        if validation_seed is None:
            notes.append(
                f"{prefix}{where}: validation_split without validation_seed: sd-scripts splits at random, "
                "so this plan uses all images of the subset"
            )
        else:
            pairs = list(paths)
            random.Random(validation_seed).shuffle(pairs)  # sd-scripts: random.seed(validation_seed); random.shuffle
            paths = pairs[: math.ceil(len(pairs) * (1 - validation_split))]
    if not paths:
        return []
    entries = images_with_sizes(paths, file=file, where=where, folder=image_dir, known_sizes=sizes)
    entries.sort(key=lambda e: e.path)
    return entries


def skip_small_images(entries: list[ImageEntry], filters: DatasetFilters, *, where: str, notes: list[str]) -> list[ImageEntry]:
    """The images sd-scripts v0.11.1 keeps under ``skip_image_resolution`` (area larger than w x h)."""
    if filters.skip_image_resolution is None or not entries:
        return entries
    w, h = filters.skip_image_resolution
    kept = [e for e in entries if e.width * e.height > w * h]
    if len(kept) < len(entries):
        notes.append(
            f"{where}: skip_image_resolution {w}x{h}: {len(entries) - len(kept)} of {len(entries)} images "
            f"are not larger than {w * h} pixels and are not trained (as sd-scripts v0.11.1 skips them)"
        )
    return kept


def read_info_cache(image_dir: str, *, file: str | None = None, where: str | None = None) -> dict[str, Any] | None:
    """sd-scripts' ``metadata_cache.json`` (``cache_info``): image path -> [width, height] (or None
    where the entry has no resolution, read from the image). None when the folder has no cache; a
    cache that sd-scripts could not use (not JSON, another shape, a size that is not two pixel
    counts) is a one-line error naming it: sd-scripts would stop on it or train from wrong sizes."""
    path = os.path.join(image_dir, "metadata_cache.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {getattr(error, 'strerror', None) or 'not UTF-8 text'}", file=file,
                        where=where, key="cache_info") from None
    try:
        data = parse_json(text, file=path, key="cache_info")
    except ValueError as error:
        raise UserError(f"{path} is not valid JSON ({error}); delete it and sd-scripts writes it anew", file=file,
                        where=where, key="cache_info") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a JSON object of image path -> entry; delete it and sd-scripts writes it anew",
                        file=file, where=where, key="cache_info")
    sizes: dict[str, Any] = {}
    for image, entry in data.items():
        resolution = entry.get("resolution") if isinstance(entry, dict) else None
        if resolution is not None:
            pair = [image_side(v) for v in resolution] if isinstance(resolution, list) and len(resolution) == 2 else [None]
            if None in pair:
                raise UserError(f"{path}: {image!r}: resolution must be [width, height] in pixels, not {resolution!r}; "
                                "delete the file and sd-scripts writes it anew", file=file, where=where, key="cache_info")
            resolution = tuple(pair)
        sizes[str(image)] = resolution
    return sizes


__all__ = ["DatasetFilters", "read_subset_images", "read_info_cache"]
