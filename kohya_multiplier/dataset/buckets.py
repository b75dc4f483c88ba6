"""Aspect-ratio bucket assignment, identical to sd-scripts'.

Written from the behaviour of sd-scripts' ``model_util.make_bucket_resolutions``,
``train_util.BucketManager.select_bucket``, ``BaseDataset.adjust_min_max_bucket_reso_by_steps`` and
``make_buckets`` (the same at v0.9.1 and current main):

* **Bucketing off** (``enable_bucket = false``): one fixed bucket, the dataset resolution, for every
  image; the bucket options are ignored.
* **Bucketing on**: ``min_bucket_reso`` is rounded down and ``max_bucket_reso`` up to multiples of
  ``bucket_reso_steps`` (sd-scripts warns), then it must hold that
  ``min_bucket_reso <= min(resolution)`` and ``max(resolution) <= max_bucket_reso``.

  - Default (upscaling allowed): the candidate buckets come from :func:`make_bucket_resolutions`
    for the area of the resolution. An image whose exact size is a candidate goes there; every
    other image goes to the candidate whose aspect ratio (width / height) is closest to its own,
    the first such candidate in sorted order on a tie.
  - ``bucket_no_upscale``: no candidate list (min/max bucket reso are then ignored). An image not
    larger in area than the resolution keeps its size; a larger one is scaled down to that area
    keeping its aspect ratio, one side rounded to the steps (whichever rounding keeps the aspect
    ratio closer). Both sides are then cut down to multiples of ``bucket_reso_steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from kohya_multiplier.errors import UserError, warn_once

Size = tuple[int, int]

# Images per numpy block when matching aspect ratios (bounds the temporary matrix).
_CHUNK = 16384


def make_bucket_resolutions(max_reso: Sequence[int], min_size: int = 256, max_size: int = 1024, divisible: int = 64) -> list[Size]:
    """The candidate bucket sizes for a training resolution, sorted, as sd-scripts makes them.

    The area budget is ``max_reso[0] * max_reso[1]``. The list holds the square whose side is the
    square root of the area floored to a multiple of ``divisible``, and, for every width from
    ``min_size`` to ``max_size`` in steps of ``divisible``, the pair (width, height) and its
    transpose, where height is the largest multiple of ``divisible`` with width x height within the
    area, capped at ``max_size``, kept only when it is at least ``min_size``.
    """
    area = int(max_reso[0]) * int(max_reso[1])
    square = int(math.sqrt(area) // divisible) * divisible
    found = {(square, square)}
    for width in range(min_size, max_size + 1, divisible) if divisible > 0 else ():
        height = min(max_size, int((area // width) // divisible) * divisible)
        if height >= min_size:
            found.add((width, height))
            found.add((height, width))
    return sorted(found)


@dataclass(frozen=True)
class BucketLayout:
    """The bucket rules of one dataset, validated; options already adjusted as sd-scripts adjusts
    them (min/max bucket reso rounded to the steps; None when bucketing is off).

    Build it with :meth:`create`, which raises UserErrors for what sd-scripts asserts.
    """

    resolution: Size
    enable_bucket: bool
    min_bucket_reso: int | None
    max_bucket_reso: int | None
    bucket_reso_steps: int | None
    bucket_no_upscale: bool
    candidates: tuple[Size, ...] = field(default=())

    @classmethod
    def create(
        cls,
        *,
        resolution: Sequence[int],
        enable_bucket: bool,
        min_bucket_reso: int = 256,
        max_bucket_reso: int = 1024,
        bucket_reso_steps: int = 64,
        bucket_no_upscale: bool = False,
        file: str | None = None,
        where: str | None = None,
    ) -> "BucketLayout":
        res = _check_resolution(resolution, file=file, where=where)
        if not enable_bucket:
            return cls(res, False, None, None, None, False, (res,))
        low, high, steps = _bucket_bounds(res, min_bucket_reso, max_bucket_reso, bucket_reso_steps, file=file, where=where)
        candidates: tuple[Size, ...] = ()
        if not bucket_no_upscale:
            candidates = tuple(make_bucket_resolutions(res, low, high, steps))
        return cls(res, True, low, high, steps, bool(bucket_no_upscale), candidates)

    # ----------------------------------------------------------------------------------------
    # One image

    def select(self, width: int, height: int) -> Size:
        """The bucket of one image of ``width`` x ``height`` pixels (the reference algorithm)."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive: {width}x{height}")
        aspect = width / height
        if not self.enable_bucket:
            return self.resolution
        if not self.bucket_no_upscale:
            if (width, height) in self.candidates:
                return (width, height)
            best = 0
            best_error = math.inf
            for index, (cw, ch) in enumerate(self.candidates):
                error = abs(cw / ch - aspect)
                if error < best_error:  # strict: the first candidate wins a tie
                    best, best_error = index, error
            return self.candidates[best]
        steps = self.bucket_reso_steps
        max_area = self.resolution[0] * self.resolution[1]
        if width * height > max_area:
            scaled_w = math.sqrt(max_area * aspect)
            scaled_h = max_area / scaled_w
            by_w = _round_to_steps(scaled_w, steps)
            h_for_w = _round_to_steps(by_w / aspect, steps)
            by_h = _round_to_steps(scaled_h, steps)
            w_for_h = _round_to_steps(by_h * aspect, steps)
            if h_for_w == 0 or by_h == 0:
                raise _degenerate(width, height, steps)
            if abs(by_w / h_for_w - aspect) < abs(w_for_h / by_h - aspect):
                resized = (by_w, int(by_w / aspect + 0.5))
            else:
                resized = (int(by_h * aspect + 0.5), by_h)
        else:
            resized = (width, height)
        bucket = (resized[0] - resized[0] % steps, resized[1] - resized[1] % steps)
        if bucket[0] <= 0 or bucket[1] <= 0:
            raise _degenerate(width, height, steps)
        return bucket

    # ----------------------------------------------------------------------------------------
    # Many images

    def assign(self, widths: Sequence[int] | np.ndarray, heights: Sequence[int] | np.ndarray, *, paths: Sequence[str] | None = None) -> np.ndarray:
        """Buckets of many images at once: an int64 array of shape (N, 2) holding (width, height).

        Equal to calling :meth:`select` on each image (vectorised with numpy, the same float64
        arithmetic). ``paths``, if given, names the image in the message of a degenerate bucket.
        """
        w = np.asarray(widths, dtype=np.int64).reshape(-1)
        h = np.asarray(heights, dtype=np.int64).reshape(-1)
        if w.shape != h.shape:
            raise ValueError("widths and heights differ in length")
        out = np.empty((w.size, 2), dtype=np.int64)
        if w.size == 0:
            return out
        bad = np.flatnonzero((w <= 0) | (h <= 0))
        if bad.size:
            raise ValueError(f"image size must be positive: {w[bad[0]]}x{h[bad[0]]}")
        if not self.enable_bucket:
            out[:, 0], out[:, 1] = self.resolution
            return out
        if not self.bucket_no_upscale:
            self._assign_nearest_aspect(w, h, out)
        else:
            self._assign_no_upscale(w, h, out, paths)
        return out

    def assign_ids(self, widths, heights, *, paths: Sequence[str] | None = None) -> tuple[np.ndarray, list[Size]]:
        """Bucket index of each image and the bucket sizes, sorted by (width, height) as
        sd-scripts sorts its buckets; only buckets holding an image are listed."""
        sizes = self.assign(widths, heights, paths=paths)
        if sizes.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), []
        unique, inverse = np.unique(sizes, axis=0, return_inverse=True)
        return inverse.reshape(-1).astype(np.int64), [(int(a), int(b)) for a, b in unique]

    def _assign_nearest_aspect(self, w: np.ndarray, h: np.ndarray, out: np.ndarray) -> None:
        cand = np.array(self.candidates, dtype=np.int64)
        cand_aspect = np.array([cw / ch for cw, ch in self.candidates], dtype=np.float64)
        # Exact-size shortcut: encode (w, h) pairs as one integer to test membership.
        scale = int(max(int(w.max()), int(cand[:, 1].max()), int(h.max()))) + 1
        codes = w * scale + h
        cand_codes = cand[:, 0] * scale + cand[:, 1]
        exact = np.isin(codes, cand_codes)
        for start in range(0, w.size, _CHUNK):
            stop = min(start + _CHUNK, w.size)
            aspect = w[start:stop] / h[start:stop]
            best = np.abs(cand_aspect[None, :] - aspect[:, None]).argmin(axis=1)
            out[start:stop] = cand[best]
        out[exact, 0] = w[exact]
        out[exact, 1] = h[exact]

    def _assign_no_upscale(self, w: np.ndarray, h: np.ndarray, out: np.ndarray, paths) -> None:
        steps = self.bucket_reso_steps
        max_area = self.resolution[0] * self.resolution[1]
        rw = w.copy()
        rh = h.copy()
        big = np.flatnonzero(w * h > max_area)
        if big.size:
            aspect = w[big] / h[big]
            scaled_w = np.sqrt(max_area * aspect)
            scaled_h = max_area / scaled_w
            by_w = _round_to_steps_array(scaled_w, steps)
            by_h = _round_to_steps_array(scaled_h, steps)
            with np.errstate(divide="ignore", invalid="ignore"):
                h_for_w = _round_to_steps_array(by_w / aspect, steps)
                w_for_h = _round_to_steps_array(by_h * aspect, steps)
                zero = (h_for_w == 0) | (by_h == 0)
                if zero.any():
                    i = big[np.flatnonzero(zero)[0]]
                    raise _degenerate(int(w[i]), int(h[i]), steps, paths[i] if paths is not None else None)
                use_w = np.abs(by_w / h_for_w - aspect) < np.abs(w_for_h / by_h - aspect)
            rw[big] = np.where(use_w, by_w, np.floor(by_h * aspect + 0.5).astype(np.int64))
            rh[big] = np.where(use_w, np.floor(by_w / aspect + 0.5).astype(np.int64), by_h)
        out[:, 0] = rw - rw % steps
        out[:, 1] = rh - rh % steps
        zero = np.flatnonzero((out[:, 0] <= 0) | (out[:, 1] <= 0))
        if zero.size:
            i = zero[0]
            raise _degenerate(int(w[i]), int(h[i]), steps, paths[i] if paths is not None else None)


def assign_buckets(
    widths: Sequence[int],
    heights: Sequence[int],
    *,
    resolution: Sequence[int],
    enable_bucket: bool,
    min_bucket_reso: int = 256,
    max_bucket_reso: int = 1024,
    bucket_reso_steps: int = 64,
    bucket_no_upscale: bool = False,
) -> list[Size]:
    """The bucket (width, height) of each image, exactly as sd-scripts assigns it."""
    layout = BucketLayout.create(
        resolution=resolution,
        enable_bucket=enable_bucket,
        min_bucket_reso=min_bucket_reso,
        max_bucket_reso=max_bucket_reso,
        bucket_reso_steps=bucket_reso_steps,
        bucket_no_upscale=bucket_no_upscale,
    )
    return [(int(a), int(b)) for a, b in layout.assign(widths, heights)]


def _round_to_steps(x: float, steps: int) -> int:
    value = int(x + 0.5)
    return value - value % steps


def _round_to_steps_array(x: np.ndarray, steps: int) -> np.ndarray:
    value = np.floor(x + 0.5).astype(np.int64)  # x > 0, so floor equals int() truncation
    return value - value % steps


def _check_resolution(resolution: Sequence[int], *, file, where) -> Size:
    try:
        width, height = (int(v) for v in resolution)
    except (TypeError, ValueError):
        raise UserError(f"must be one size or [width, height], not {resolution!r}", file=file, where=where, key="resolution") from None
    if width <= 0 or height <= 0:
        raise UserError(f"must be positive, not {width}x{height}", file=file, where=where, key="resolution")
    return (width, height)


def _degenerate(width: int, height: int, steps: int, path: str | None = None) -> UserError:
    subject = f"{path}: " if path else ""
    return UserError(
        f"{subject}image of {width}x{height} pixels gets a zero-size bucket with bucket_no_upscale and "
        f"bucket_reso_steps {steps} (sd-scripts cannot train it); remove or enlarge it",
        key="bucket_no_upscale",
    )


def _prefix(file: str | None, where: str | None) -> str:
    parts = [p for p in (file, where) if p]
    return ": ".join(parts) + ": " if parts else ""


def _bucket_bounds(res: Size, min_bucket_reso, max_bucket_reso, bucket_reso_steps, *, file, where) -> tuple[int, int, int]:
    """(min, max, steps) of the bucket sides after checking them: min and max rounded to
    multiples of the steps as sd-scripts does, and around the resolution as it requires."""
    for key, value in (("min_bucket_reso", min_bucket_reso), ("max_bucket_reso", max_bucket_reso)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"must be a positive integer, not {value!r}", file=file, where=where, key=key)
    steps = bucket_reso_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise UserError(f"must be a positive integer, not {steps!r}", file=file, where=where, key="bucket_reso_steps")
    low, high = min_bucket_reso, max_bucket_reso
    if low % steps:
        low = low - low % steps
        warn_once(
            f"{_prefix(file, where)}min_bucket_reso {min_bucket_reso} is rounded down to {low}, "
            f"a multiple of bucket_reso_steps {steps}, as sd-scripts does"
        )
    if high % steps:
        high = high + steps - high % steps
        warn_once(
            f"{_prefix(file, where)}max_bucket_reso {max_bucket_reso} is rounded up to {high}, "
            f"a multiple of bucket_reso_steps {steps}, as sd-scripts does"
        )
    if low <= 0:
        raise UserError(
            f"{min_bucket_reso} rounds down to 0 with bucket_reso_steps {steps}; use at least {steps}",
            file=file,
            where=where,
            key="min_bucket_reso",
        )
    if low > min(res):
        raise UserError(
            f"{low} is larger than the shorter side of resolution {res[0]}x{res[1]}; "
            "sd-scripts requires min_bucket_reso <= min(resolution)",
            file=file,
            where=where,
            key="min_bucket_reso",
        )
    if high < max(res):
        raise UserError(
            f"{high} is smaller than the longer side of resolution {res[0]}x{res[1]}; "
            "sd-scripts requires max_bucket_reso >= max(resolution)",
            file=file,
            where=where,
            key="max_bucket_reso",
        )
    return low, high, steps
