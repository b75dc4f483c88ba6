"""musubi-tuner's bucket rules and cache-file names, torch-free.

Written from musubi-tuner v0.3.4 (``dataset/bucket.py`` ``BucketSelector``,
``dataset/image_video_dataset.py`` ``prepare_for_training`` and ``get_latent_cache_path``):

* **Bucketing off**: one bucket, the dataset resolution.
* **Bucketing on**: candidate (w, h) pairs for every width from ``divisible(sqrt(area) // 2)`` up
  to ``sqrt(area)`` in the architecture's steps, each with ``h = divisible(area // w)``, and their
  transposes; an item goes to the candidate whose aspect ratio is nearest its own (the first in
  sorted order on a tie, as ``numpy.argmin``). With ``bucket_no_upscale`` an item no larger in area
  than the resolution keeps its size cut down to the steps.
* A video clip's bucket adds its frame count: ``(w, h, frames)``.

Training reads only caches, named ``{key}_{WWWW}x{HHHH}_{arch}.safetensors`` for an image and
``{key}_{pos:05d}-{frames:03d}_{WWWW}x{HHHH}_{arch}.safetensors`` for a clip (the size is the
source's), each beside ``{key}_{arch}_te.safetensors`` (the text encoder's output).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

# musubi's short architecture names (they never hold "_", which its cache names split on) and
# each one's resolution steps; the training scripts that use each.
RESOLUTION_STEPS = {
    "hv": 16, "wan": 16, "fp": 16, "fk": 16, "f2d": 16, "f2k4b": 16, "f2k9b": 16, "qi": 16, "qie": 16, "qil": 16,
    "k5": 16, "hv15": 16, "zi": 16, "ho1": 32, "i4": 16, "kr2": 16,
}
VIDEO_ARCHITECTURES = ("hv", "wan", "fp", "k5", "hv15")  # those whose VideoDataset has a frame rate


@dataclass(frozen=True)
class MusubiBuckets:
    """One dataset's bucket rule (``BucketSelector`` of its resolution and options)."""

    resolution: tuple[int, int]
    enable_bucket: bool
    no_upscale: bool
    steps: int

    @classmethod
    def create(cls, resolution: tuple[int, int], enable_bucket: bool, no_upscale: bool, architecture: str) -> "MusubiBuckets":
        return cls(tuple(resolution), bool(enable_bucket), bool(no_upscale and enable_bucket), RESOLUTION_STEPS[architecture])

    def candidates(self) -> list[tuple[int, int]]:
        if not self.enable_bucket:
            return [tuple(self.resolution)]
        area = self.resolution[0] * self.resolution[1]
        side = int(math.sqrt(area))
        found = set()
        for width in range(_divisible(side // 2, self.steps), side + self.steps, self.steps):
            height = _divisible(area // width, self.steps)
            found.add((width, height))
            found.add((height, width))
        return sorted(found)

    def bucket_of(self, width: int, height: int) -> tuple[int, int]:
        return self.assign([(width, height)])[0]

    def assign(self, sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Each (width, height)'s bucket, as ``BucketSelector.get_bucket_resolution``."""
        candidates = self.candidates()
        ratios = np.array([w / h for w, h in candidates])  # float64, as musubi's
        area = self.resolution[0] * self.resolution[1]
        out = []
        for width, height in sizes:
            if self.no_upscale and width * height <= area:
                out.append((_divisible(width, self.steps), _divisible(height, self.steps)))
                continue
            out.append(candidates[int(np.abs(ratios - width / height).argmin())])
        return out


def _divisible(number: int, divisor: int) -> int:
    return number - number % divisor


@dataclass(frozen=True)
class CacheName:
    """What a latent cache file's name says."""

    key: str  # the item's name: the source file's name without extension
    size: tuple[int, int]  # the source's (width, height)
    architecture: str
    clip: tuple[int, int] | None = None  # (first frame, frames) of a video clip

    @property
    def item(self) -> str:
        """The trained item: the image, or the clip of the video."""
        return self.key if self.clip is None else f"{self.key}_{self.clip[0]:05d}-{self.clip[1]:03d}"

    def text_encoder_file(self, folder: str) -> str:
        return os.path.join(folder, f"{self.key}_{self.architecture}_te.safetensors")


def parse_cache_name(name: str, *, video: bool) -> CacheName | None:
    """``name`` (a file name) as musubi's ``prepare_for_training`` splits it; None when it is not a
    latent cache of that kind."""
    if not name.endswith(".safetensors") or name.endswith("_te.safetensors"):
        return None
    tokens = name[: -len(".safetensors")].split("_")
    needed = 4 if video else 3
    if len(tokens) < needed:
        return None
    architecture, size = tokens[-1], tokens[-2].split("x")
    if len(size) != 2 or not all(part.isdigit() for part in size):
        return None
    width, height = int(size[0]), int(size[1])
    if not video:
        return CacheName("_".join(tokens[:-2]), (width, height), architecture)
    clip = tokens[-3].split("-")
    if len(clip) < 2 or not clip[0].isdigit() or not clip[1].isdigit():
        return None
    return CacheName("_".join(tokens[:-3]), (width, height), architecture, (int(clip[0]), int(clip[1])))


def cache_architectures(names: list[str]) -> set[str]:
    """The architectures of the latent caches among ``names`` (image or clip caches)."""
    found = set()
    for name in names:
        parsed = parse_cache_name(name, video=False)
        if parsed is not None:
            found.add(parsed.architecture)
    return found


def clips_of(frame_count: int, target_frames: tuple[int, ...], extraction: str, stride: int, sample: int,
             max_frames: int) -> list[tuple[int, int]]:
    """The (first frame, frames) of each clip musubi's caching cuts from a video of ``frame_count``
    frames (``VideoDataset.retrieve_latent_cache_batches``); ``target_frames`` already rounded to
    4n+1 and sorted."""
    clips: list[tuple[int, int]] = []
    if extraction == "uniform" and sample == 1:
        extraction = "head"
    if extraction == "head":
        clips = [(0, t) for t in target_frames if frame_count >= t]
    elif extraction == "chunk":
        clips = [(i, t) for t in target_frames for i in range(0, frame_count, t) if i + t <= frame_count]
    elif extraction == "slide":
        clips = [(i, t) for t in target_frames if frame_count >= t for i in range(0, frame_count - t + 1, stride)]
    elif extraction == "uniform":
        for t in target_frames:
            if frame_count >= t:
                clips.extend((int(i), t) for i in np.linspace(0, frame_count - t, sample, dtype=int))
    elif extraction == "full":
        t = min(frame_count, max_frames)
        clips = [(0, (t - 1) // 4 * 4 + 1)]
    return clips


def rounded_target_frames(target_frames) -> tuple[int, ...]:
    """``target_frames`` as musubi's VideoDataset keeps them: each rounded down to 4n+1, unique, sorted."""
    return tuple(sorted({(int(f) - 1) // 4 * 4 + 1 for f in target_frames}))
