"""Conditioning subsets (ControlNet, LLLite, masked loss): each image paired with its conditioning image.

sd-scripts' ``ControlNetDataset`` (train_util.py, or controlnet_dataset.py at v0.11) registers the
subsets' images through an internal DreamBoothDataset, so a conditioning subset trains exactly the
images a DreamBooth subset of the same ``image_dir`` would (validation split and
``skip_image_resolution`` included; never regularization). It then pairs every registered image
with the file of the same stem in ``conditioning_data_dir`` (``glob_images(dir, stem)``: the stem
followed by one of the image extensions, the first in path order):

- an image without a conditioning image stops sd-scripts (an assertion listing them): an error here;
- a ``conditioning_data_dir`` that is not a folder is only a warning in sd-scripts, whose training
  then fails at the first batch that loads a conditioning image: an error here;
- conditioning images without an image are a warning in sd-scripts: a note here.

Which images are planned does not depend on the conditioning images: the checks only stop, before
training, a run that sd-scripts would stop.
"""

from __future__ import annotations

import os

from kohya_multiplier.dataset.images import ImageEntry, list_image_files
from kohya_multiplier.dataset.reading import why_unreachable
from kohya_multiplier.errors import UserError

KEY = "conditioning_data_dir"
_LIST_LIMIT = 5  # how many unpaired images a message names before "and N more"


def check_conditioning_pairs(
    images: list[ImageEntry], conditioning_dir: str, *, shown_dir: str, file: str | None, where: str, notes: list[str],
) -> None:
    """Raise a one-line UserError unless every image has a conditioning image of the same stem in
    ``conditioning_dir`` (absolute; ``shown_dir`` as written); note the conditioning images
    nothing pairs with."""
    if not os.path.isdir(conditioning_dir):
        raise UserError(f"{why_unreachable(conditioning_dir)}: {conditioning_dir}", file=file, where=where, key=KEY)
    try:
        listed = list_image_files(conditioning_dir)
    except OSError as error:
        raise UserError(f"cannot list {conditioning_dir}: {error.strerror or error}", file=file, where=where, key=KEY) from None
    stems = {_stem(path) for path in listed}
    missing = [os.path.basename(e.path) for e in images if _stem(e.path) not in stems]
    if missing:
        shown = ", ".join(missing[:_LIST_LIMIT]) + (f" and {len(missing) - _LIST_LIMIT} more" if len(missing) > _LIST_LIMIT else "")
        raise UserError(
            f"{len(missing)} of {len(images)} images have no conditioning image of the same name in {shown_dir!r} "
            f"(sd-scripts stops on it): {shown}", file=file, where=where, key=KEY,
        )
    paired = {_stem(e.path) for e in images}
    extra = sum(1 for stem in stems if stem not in paired)
    if extra:
        prefix = f"{file}: " if file else ""
        notes.append(
            f"{prefix}{where}: {extra} of the conditioning images in {shown_dir!r} pair with no trained image "
            "and are not used (sd-scripts warns about them)"
        )


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


__all__ = ["check_conditioning_pairs"]
