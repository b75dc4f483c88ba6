"""Bounds on every number a run is planned with, checked before any work.

A value beyond what a real training run could use is refused with the one-line error (exit 2)
within a second and in bounded memory, instead of running for minutes, filling memory or planning
something no GPU would ever train. The limits (documented in the README's reference):

* ``MAX_EPOCH``: the last epoch planned (``--from-epoch K`` + ``--epochs N`` - 1), and so the
  longest jump a resume replays: 10,000. Real runs train tens to a few thousand epochs; a jump
  replays the credits of every earlier epoch (about 0.4 ms per epoch for a small dataset, more
  for thousands of cells), so 10,000 keeps the longest jump to seconds.
* ``MAX_PLANNED_EPOCHS``: epochs one ``plan`` prints statistics for (``--epochs``): 10,000.
* ``MAX_MULTIPLIER``: a multiplier (or ``num_repeats``) above 10,000 repeats every image more than
  10,000 times per epoch; refused.
* ``MAX_IMAGES_PER_EPOCH``: the images one dataset trains per epoch (multiplier x images summed,
  integer and fractional parts): 10,000,000, ten times a large real run (a day of an epoch on a
  fast GPU is about a million images). The planner holds about 8 bytes per appearance, so this
  also bounds its memory (under 200 MB).
* ``MAX_BATCH_SIZE``: 4,096 images per batch (per GPU); ``MAX_SIDE``: 16,384 pixels for a side of
  ``resolution`` and for ``min_bucket_reso``/``max_bucket_reso``/``bucket_reso_steps``, four times
  the largest training resolution in use (and what enumerating the buckets costs: a bound on
  ``max_bucket_reso`` keeps it under a second or two).
* ``MIN_FRACTIONAL_IMAGES``: a subset's fractional part must ask for at least 2^-10 images per
  epoch (f x N >= 1/1024, one image in 1024 epochs). The planner counts credit in 2^-20 image
  units (``planner.layout.UNITS_PER_IMAGE``); from 2^-10 images on, that quantises the request by
  at most 1/2048 of itself (0.05 %). Smaller requests would be distorted by the quantisation and
  by the whole extra batch an epoch needs, so they are refused (set the multiplier to 0 to
  exclude the subset, or raise it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.multipliers import describe_value, format_number, split_multiplier

if TYPE_CHECKING:
    from kohya_multiplier.dataset.types import DatasetSpec

MAX_EPOCH = 10_000
MAX_PLANNED_EPOCHS = 10_000
MAX_MULTIPLIER = 10_000.0
MAX_IMAGES_PER_EPOCH = 10_000_000
MIN_FRACTIONAL_IMAGES = 2.0 ** -10
MAX_BATCH_SIZE = 4096
MAX_SIDE = 16384


def check_sizes(values: dict, *, file: str | None, where_of) -> None:
    """Batch size and bucket numbers of a dataset (``{key: value}``; ``where_of(key)`` names the
    table that set it, None for the command line) within the limits, before buckets are built."""
    for key, value in values.items():
        limit = MAX_BATCH_SIZE if key == "batch_size" else MAX_SIDE
        numbers = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v > limit for v in numbers):
            what = "images per batch" if key == "batch_size" else "pixels"
            where = where_of(key)
            shown = key if where else ("--train_batch_size" if key == "batch_size" else f"--{key}")  # from the command line
            value = list(value) if isinstance(value, tuple) else value
            raise UserError(f"must be at most {limit:,} {what}, not {value!r}", file=file, where=where, key=shown)


def check_epoch_range(first: int, count: int) -> None:
    """``--from-epoch first`` and ``--epochs count`` of ``plan``: within the limits."""
    if count > MAX_PLANNED_EPOCHS:
        raise UserError(f"at most {MAX_PLANNED_EPOCHS:,} epochs are planned at once, got {count:,}", key="--epochs")
    if first > MAX_EPOCH:
        raise UserError(f"at most {MAX_EPOCH:,} (no training run reaches a later epoch), got {first:,}", key="--from-epoch")
    last = first + count - 1
    if last > MAX_EPOCH:
        raise UserError(
            f"plans up to epoch {last:,} with --from-epoch {first:,}; the last epoch can be at most {MAX_EPOCH:,}",
            key="--epochs",
        )


def check_multiplier_bound(value: float, *, file: str | None, where: str | None, key: str = "multiplier") -> None:
    """A multiplier or num_repeats above MAX_MULTIPLIER is refused."""
    if value > MAX_MULTIPLIER:
        raise UserError(
            f"{format_number(value)} is more than {format_number(MAX_MULTIPLIER)} repeats of every image per epoch, "
            "beyond what a training run can use",
            file=file, where=where, key=key,
        )


def check_dataset(dataset: "DatasetSpec", *, file: str | None) -> None:
    """Images per epoch of one dataset, and each subset's fractional request, within the limits."""
    total = 0.0
    for subset in dataset.subsets:
        if subset.excluded:
            continue
        m = subset.effective_multiplier
        key = "multiplier" if subset.multiplier is not None else ("num_repeats" if not subset.effective_origin.startswith("auto") else "is_reg")
        check_multiplier_bound(m, file=file, where=subset.table, key=key)
        n = len(subset.images)
        total += m * n
        if dataset.scheduled:
            continue  # its rates change every epoch; the total below is its constant T
        whole, fraction = split_multiplier(m)
        if whole == 0 and fraction == 0:
            fraction = m  # a positive multiplier the split rounds to 0 would silently train nothing
        if fraction > 0 and n and fraction * n < MIN_FRACTIONAL_IMAGES:
            how = "the automatic regularization multiplier " if subset.effective_origin.startswith("auto") else ""
            raise UserError(
                f"{how}{format_number(m)} x {n} image{'s' * (n != 1)} asks for {fraction * n:.3g} images per epoch from its "
                f"fractional part, less than one image in 1024 epochs (the planner's resolution is 2^-20 image); "
                "use 0 to exclude the subset, or a larger multiplier",
                file=file, where=subset.table, key=key,
            )
    if dataset.scheduled:
        total = dataset.rates.total
    if total > MAX_IMAGES_PER_EPOCH:
        raise UserError(
            f"an epoch would train {_count(total)} images; at most {MAX_IMAGES_PER_EPOCH:,} per epoch are planned "
            "(lower the multipliers or num_repeats)",
            file=file, where=dataset.table or f"datasets[{dataset.index}]",
        )


def check_total_images(value, *, file: str | None, where: str | None, key: str = "total_images_per_epoch") -> float:
    """A scheduled dataset's constant total of images per epoch (rates.py)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value > MAX_IMAGES_PER_EPOCH:
        raise UserError(f"must be a number of images above 0 and at most {MAX_IMAGES_PER_EPOCH:,}, not {describe_value(value)}",
                        file=file, where=where, key=key)
    return float(value)


def _count(value: float) -> str:
    return f"{value:,.0f}" if value < 1e15 else f"{value:.3g}"


def check_epoch_length(dataset_index: int, epoch_length: int, *, file: str | None) -> None:
    """A plan with 0 batches per epoch cannot train (sd-scripts divides by it)."""
    if epoch_length <= 0:
        raise UserError(
            "an epoch would have 0 batches: no image is trained (multipliers or num_repeats too small, or every "
            "regularization image left unused); sd-scripts cannot train it",
            file=file, where=f"datasets[{dataset_index}]",
        )


__all__ = [
    "MAX_EPOCH", "MAX_PLANNED_EPOCHS", "MAX_MULTIPLIER", "MAX_IMAGES_PER_EPOCH", "MIN_FRACTIONAL_IMAGES",
    "MAX_BATCH_SIZE", "MAX_SIDE", "check_sizes", "check_epoch_range", "check_multiplier_bound", "check_dataset", "check_epoch_length", "check_total_images",
]
