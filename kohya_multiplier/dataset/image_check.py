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
from dataclasses import dataclass
from typing import Iterable, Sequence

from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.images import read_image_size
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


# A worker that shows no progress on one image for this long is taken as hung (a legitimate image
# at Pillow's 89-megapixel limit decodes in a few seconds).
DEFAULT_IMAGE_TIMEOUT = 120.0


class WorkerLost(UserError):
    """A decoding worker died or hung; ``result`` holds what was checked before."""

    def __init__(self, image: str, message: str, result: "CheckResult"):
        super().__init__(message, file=image)
        self.result = result


def _worker(worker: int, tasks, results, current) -> None:
    """Decode the chunks handed out on ``tasks``; ``current[worker]`` names the image being decoded,
    so the parent can say which one a dead or hung worker was on."""
    while True:
        chunk = tasks.get()
        if chunk is None:
            return
        problems = []
        for index, path in chunk:
            current[worker] = index
            problem = check_one(path)
            if problem is not None:
                problems.append(problem)
        current[worker] = -1
        results.put((worker, len(chunk), problems))


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer does this to huge images)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {code}"


def check_images(paths: Iterable[str], *, workers: int | None = None,
                 image_timeout: float = DEFAULT_IMAGE_TIMEOUT) -> CheckResult:
    """Decode every image of ``paths`` over ``workers`` processes (default: every core), with a
    progress bar; problems in path order. A worker that dies (killed, out of memory) or shows no
    progress on one image for ``image_timeout`` seconds stops the check with :class:`WorkerLost`,
    naming that image, never a traceback or a hang."""
    require_pillow()
    paths = list(dict.fromkeys(paths))
    workers = max(1, min(workers or os.cpu_count() or 1, max(1, len(paths) // _CHUNK)))
    problems: list[ImageProblem] = []
    start = time.monotonic()
    with Progress(len(paths), "checking images") as bar:
        if workers == 1:
            for i in range(0, len(paths), _CHUNK):
                chunk = paths[i : i + _CHUNK]
                problems.extend(_check_chunk(chunk))
                bar.advance(len(chunk))
            checked = len(paths)
        else:
            checked = _check_in_workers(paths, workers, image_timeout, problems, bar, start)
    problems.sort(key=lambda p: p.path)
    return CheckResult(checked, problems, time.monotonic() - start, workers)


def _check_in_workers(paths: list[str], workers: int, image_timeout: float, problems: list[ImageProblem], bar,
                      start: float) -> int:
    import multiprocessing
    import queue

    context = multiprocessing.get_context("spawn")  # as on Windows: no state inherited by fork
    tasks, results = context.Queue(), context.Queue()
    current = context.Array("q", [-1] * workers, lock=False)
    for i in range(0, len(paths), _CHUNK):
        tasks.put([(j, paths[j]) for j in range(i, min(i + _CHUNK, len(paths)))])
    for _ in range(workers):
        tasks.put(None)
    processes = [context.Process(target=_worker, args=(w, tasks, results, current), daemon=True) for w in range(workers)]
    for process in processes:
        process.start()
    checked = 0
    watched = [(-1, time.monotonic())] * workers  # (image index, since when) per worker
    try:
        while checked < len(paths):
            try:
                _, count, found = results.get(timeout=0.5)
                checked += count
                problems.extend(found)
                bar.advance(count)
                continue
            except queue.Empty:
                pass
            now = time.monotonic()
            for w, process in enumerate(processes):
                index = current[w]
                if index != watched[w][0]:
                    watched[w] = (index, now)
                if process.exitcode is not None and (process.exitcode != 0 or index >= 0):  # gone, or gone mid-image
                    _lost(paths, index, f"the worker decoding it {_describe_exit(process.exitcode)}", checked, problems,
                          workers, start)
                if index >= 0 and now - watched[w][1] > image_timeout:
                    _lost(paths, index, f"no progress decoding it for {image_timeout:.0f} s (a hung decoder)", checked,
                          problems, workers, start)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=5)
        tasks.cancel_join_thread()
        results.cancel_join_thread()
    return checked


def _lost(paths: list[str], index: int, what: str, checked: int, problems: list[ImageProblem], workers: int,
          start: float) -> None:
    problems.sort(key=lambda p: p.path)
    result = CheckResult(checked, problems, time.monotonic() - start, workers)
    where = paths[index] if index >= 0 else "(between two images)"
    raise WorkerLost(where, f"{what}; check stopped after {checked} of {len(paths)} images", result)


def config_image_paths(config) -> list[str]:
    """Every image file of every subset that trains (sd-scripts' listing of each folder, so files
    ``plan`` skipped as unreadable are checked too)."""
    from kohya_multiplier.dataset.images import list_image_files

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


def report_lines(result: CheckResult, *, stopped: bool = False) -> list[str]:
    """The problems and the summary; ``stopped``: the check ended early (a worker lost)."""
    lines = [problem.line() for problem in result.problems]
    if stopped:
        verdict = f"{len(result.problems)} of the {result.checked} images checked before the stop unreadable or implausible"
    else:
        verdict = (f"{len(result.problems)} of {result.checked} images unreadable or implausible" if result.problems
                   else f"all {result.checked} images decode")
    lines.append(f"{verdict} (checked in {result.seconds:.1f} s, {result.images_per_second:.0f} images/s, "
                 f"{result.workers} process{'es' * (result.workers != 1)})")
    return lines
