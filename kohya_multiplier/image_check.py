"""Check the images a run will read: fully decode every one with Pillow, in parallel.

Reading image headers (what ``plan`` does) misses files that break sd-scripts hours into a run: a
PNG cut in half, a JPEG that is really text, an image the first epoch that picks it cannot load.
:func:`check_images` opens and decodes each file completely, as sd-scripts' ``load_image`` does
(``Image.open`` then ``convert("RGB")``), over a process pool with one worker per core, and returns
one :class:`ImageProblem` per unreadable or implausible image:

* ``empty``: a file of 0 bytes;
* ``undecodable``: Pillow cannot identify or decode it (not an image, a wrong extension, corrupt data);
* ``truncated``: the data stops before the image ends;
* ``size mismatch``: the header size (what the buckets use) is not the decoded size;
* ``too large``: the declared size is beyond Pillow's decompression-bomb limit
  (``Image.MAX_IMAGE_PIXELS``, about 89 megapixels; sd-scripts' Pillow warns above it and refuses
  above twice it), far beyond what any bucket holds: decoding it needs gigabytes per image; such a
  file is not decoded here;
* ``rotated``: an EXIF orientation other than 1; sd-scripts does not apply it, so the image
  trains rotated or mirrored relative to how viewers show it.

Pillow is an optional dependency of the core (``pip install 'kohya-multiplier[check]'``; sd-scripts'
own environment has it); without it a one-line error says how to install it.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence

from kohya_multiplier.errors import UserError
from kohya_multiplier.images import read_image_size
from kohya_multiplier.progress import Progress

# EXIF tag 0x0112: 1 is upright; 2-8 are mirrored and/or rotated.
_ORIENTATION_TAG = 0x0112
_ORIENTATIONS = {
    2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom", 5: "mirrored and rotated 90 degrees",
    6: "rotated 90 degrees clockwise", 7: "mirrored and rotated 270 degrees", 8: "rotated 90 degrees counter-clockwise",
}
_CHUNK = 16  # images per task handed to a worker


@dataclass(frozen=True)
class ImageProblem:
    path: str
    kind: str  # "empty", "undecodable", "truncated", "size mismatch", "too large", "rotated"
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.kind}: {self.reason}"


@dataclass(frozen=True)
class CheckResult:
    checked: int
    problems: list[ImageProblem]
    seconds: float
    workers: int

    @property
    def images_per_second(self) -> float:
        return self.checked / self.seconds if self.seconds > 0 else float("inf")


def require_pillow():
    try:
        from PIL import Image  # noqa: F401
    except ImportError:
        raise UserError(
            "checking images needs Pillow: pip install 'kohya-multiplier[check]' (or run it with sd-scripts' Python)",
            key="check",
        ) from None
    return Image


def check_one(path: str) -> ImageProblem | None:
    """Decode one image completely; the problem found, or None."""
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        if os.path.getsize(path) == 0:
            return ImageProblem(path, "empty", "the file has 0 bytes")
    except OSError as error:
        return ImageProblem(path, "undecodable", f"cannot be read: {error.strerror or error}")
    header = read_image_size(path)
    limit = Image.MAX_IMAGE_PIXELS
    if header is not None and limit and header[0] * header[1] > limit:
        return ImageProblem(path, "too large", f"declares {header[0]}x{header[1]} pixels ({header[0] * header[1] / 1e6:.0f} "
                            f"megapixels), beyond Pillow's limit of {limit / 1e6:.0f} megapixels and far beyond any bucket")
    try:
        with Image.open(path) as image:
            size = image.size
            orientation = image.getexif().get(_ORIENTATION_TAG)
            image.load()
            if image.mode != "RGB":
                image.convert("RGB")
    except Image.DecompressionBombError as error:
        return ImageProblem(path, "too large", str(error))
    except OSError as error:
        text = str(error)
        if "truncated" in text or "broken data stream" in text or "unrecognized data stream contents" in text:
            return ImageProblem(path, "truncated", f"the data ends before the image does ({text})")
        return ImageProblem(path, "undecodable", f"Pillow cannot decode it ({text})")
    except (ValueError, SyntaxError, EOFError, MemoryError) as error:  # Pillow raises these for corrupt files too
        return ImageProblem(path, "undecodable", f"Pillow cannot decode it ({type(error).__name__}: {error})")
    if header is not None and tuple(header) != tuple(size):
        return ImageProblem(path, "size mismatch", f"the header says {header[0]}x{header[1]}, the image decodes to "
                            f"{size[0]}x{size[1]}; buckets would be computed from the wrong size")
    if header is None:
        return ImageProblem(path, "undecodable", "its header gives no size (sd-scripts cannot bucket it)")
    if orientation not in (None, 1):
        what = _ORIENTATIONS.get(orientation, f"orientation {orientation}")
        return ImageProblem(path, "rotated", f"EXIF orientation {orientation} ({what}); sd-scripts does not apply it, "
                            "so it would train that way")
    return None


def _check_chunk(paths: Sequence[str]) -> list[ImageProblem]:
    return [p for p in map(check_one, paths) if p is not None]


def check_images(paths: Iterable[str], *, workers: int | None = None) -> CheckResult:
    """Decode every image of ``paths`` over ``workers`` processes (default: every core), with a
    progress bar; problems in path order."""
    require_pillow()
    paths = list(dict.fromkeys(paths))
    workers = max(1, min(workers or os.cpu_count() or 1, max(1, len(paths) // _CHUNK)))
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    problems: list[ImageProblem] = []
    start = time.monotonic()
    with Progress(len(paths), "checking images") as bar:
        if workers == 1:
            for chunk in chunks:
                problems.extend(_check_chunk(chunk))
                bar.advance(len(chunk))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for chunk, found in zip(chunks, pool.map(_check_chunk, chunks)):
                    problems.extend(found)
                    bar.advance(len(chunk))
    seconds = time.monotonic() - start
    problems.sort(key=lambda p: p.path)
    return CheckResult(len(paths), problems, seconds, workers)


def config_image_paths(config) -> list[str]:
    """Every image file of every subset that trains (sd-scripts' listing of each folder, so files
    ``plan`` skipped as unreadable are checked too)."""
    from kohya_multiplier.images import list_image_files

    paths: list[str] = []
    for dataset in config.datasets:
        for subset in dataset.subsets:
            if subset.excluded:
                continue
            if subset.metadata_file is not None:  # a fine-tuning subset trains the images its metadata names
                paths.extend(image.path for image in subset.images if os.path.isfile(image.path))
                continue
            try:
                paths.extend(list_image_files(subset.image_dir))
            except OSError:
                paths.extend(image.path for image in subset.images)
    return paths


def report_lines(result: CheckResult) -> list[str]:
    lines = [problem.line() for problem in result.problems]
    verdict = (f"{len(result.problems)} of {result.checked} images unreadable or implausible" if result.problems
               else f"all {result.checked} images decode")
    lines.append(f"{verdict} (checked in {result.seconds:.1f} s, {result.images_per_second:.0f} images/s, "
                 f"{result.workers} process{'es' * (result.workers != 1)})")
    return lines
