"""Listing a subset's images and reading their sizes from file headers only.

Which files count as images follows sd-scripts' ``glob_images(dir, "*")``: the files directly in the
folder whose name ends with one of ``IMAGE_EXTENSIONS`` (case-sensitive, as ``glob`` is on Linux;
both ``.png`` and ``.PNG`` are listed, ``.Png`` is not; on Windows, as ``glob`` there, in any
case), hidden names (starting with ``.``) left out as ``glob`` leaves them out, sorted by path.
The training adapter hands the same listing (:func:`image_names`) to sd-scripts in place of its
``glob_images``, which scans each folder once per extension. AVIF and JPEG-XL files are listed by sd-scripts
only when an optional Pillow plugin is installed in its environment, so they are not listed here
unless asked for (``extra_extensions``).

Sizes are read with ``imagesize`` (the library sd-scripts uses) from the header, never by decoding
pixels, with the stored width and height: no EXIF rotation, as sd-scripts' buckets and image
loading ignore it too. WebP headers are read here the way imagesize 1.4.1, the version sd-scripts
pins, reads them (see ``_read_webp_size``). BMP files, which imagesize 1.4.1 cannot read (sd-scripts
0.10 then asks Pillow; 0.9.1 has no fallback and gets -1 x -1, so it cannot train BMPs), are read
by a small header parser here. A file whose size cannot be read, or that is
empty, is skipped with one warning listing all such files.
"""

from __future__ import annotations

import inspect
import os
import stat
import struct
from dataclasses import dataclass
from typing import Iterable

import imagesize

from kohya_multiplier.progress import track
from kohya_multiplier.dataset.reading import why_unreachable
from kohya_multiplier.errors import UserError, warn_once

# sd-scripts' list, in its order.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP")
# Listed by sd-scripts only with pillow_avif / jxl plugins installed.
OPTIONAL_EXTENSIONS: tuple[str, ...] = (".avif", ".AVIF", ".jxl", ".JXL")

# How many skipped files a warning names before "and N more".
_WARN_LIST_LIMIT = 20


@dataclass(frozen=True, slots=True)  # slots: one per image, 100,000s of them at training start-up
class ImageEntry:
    """One image: absolute path and its stored size in pixels."""

    path: str
    width: int
    height: int


def _imagesize_accepts_rotation_flag() -> bool:
    try:
        return "exif_rotation" in inspect.signature(imagesize.get).parameters
    except (TypeError, ValueError):  # pragma: no cover - C implementations
        return False


_NO_ROTATION = {"exif_rotation": False} if _imagesize_accepts_rotation_flag() else {}


def image_names(folder: str, extensions: Iterable[str]) -> list[str]:
    """The names in ``folder`` that sd-scripts' ``glob_images(folder, "*")`` lists for these
    extensions (each a ``glob`` pattern ``"*" + extension``), in one pass over the folder: not
    hidden, ending with an extension as ``fnmatch`` compares names on this system (case-sensitive
    on POSIX, not on Windows). Unsorted. Raises OSError if the folder cannot be listed."""
    suffixes = tuple({os.path.normcase(e) for e in extensions})
    with os.scandir(folder) as entries:
        return [e.name for e in entries if not e.name.startswith(".") and os.path.normcase(e.name).endswith(suffixes)]


def list_image_files(image_dir: str, *, recursive: bool = False, extra_extensions: Iterable[str] = ()) -> list[str]:
    """Absolute paths of the image files of ``image_dir``, sorted, as sd-scripts lists them.

    With ``recursive`` (sd-scripts' ``glob_images_pathlib(dir, recursive=True)``, used by its
    tools), files in sub-folders are listed too, hidden names included as ``pathlib`` includes them.
    """
    extensions = tuple(IMAGE_EXTENSIONS) + tuple(extra_extensions)
    root = os.path.abspath(image_dir)
    found: list[str] = []
    if recursive:
        for folder, _dirs, names in os.walk(root, followlinks=False):
            found.extend(os.path.join(folder, n) for n in names if n.endswith(extensions))
    else:
        found = [os.path.join(root, name) for name in image_names(root, extensions)]
    found.sort()
    return found


_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # POSIX: a pipe named like an image must not block the reader
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows


def read_image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the file header, or None if it cannot be read, is not a regular file
    (a folder, a pipe: opened without blocking, never read), or is empty/zero."""
    try:
        descriptor = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_BINARY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        head = os.read(descriptor, 30)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _read_webp_size(head)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        # the IHDR fields, as imagesize reads them, from the bytes already read: one open per PNG
        width, height = struct.unpack(">LL", head[16:24])
        return (int(width), int(height)) if width > 0 and height > 0 else None
    try:
        width, height = imagesize.get(path, **_NO_ROTATION)
    except Exception:  # imagesize 1.x raises ValueError on malformed headers
        width, height = -1, -1
    if width <= 0 or height <= 0:
        size = _read_bmp_size(head)
        if size is None:
            return None
        width, height = size
    if width <= 0 or height <= 0:
        return None
    return int(width), int(height)


def _read_webp_size(head: bytes) -> tuple[int, int] | None:
    """WebP size exactly as imagesize 1.4.1 (the version sd-scripts pins) reports it.

    That version reads the VP8X canvas fields without the +1 the format defines (so an extended
    WebP of 1024x768 is seen as 1023x767) and keeps the VP8 scaling bits; sd-scripts buckets the
    image by those numbers, so the plan must too. Newer imagesize versions differ here.
    """
    if len(head) < 30:
        return None
    kind = head[12:16]
    if kind == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
    elif kind == b"VP8X":
        width = int.from_bytes(head[24:27], "little")
        height = int.from_bytes(head[27:30], "little")
    elif kind == b"VP8L":
        b = head[21:25]
        width = (((b[1] & 63) << 8) | b[0]) + 1
        height = (((b[3] & 15) << 10) | (b[2] << 2) | ((b[1] & 192) >> 6)) + 1
    else:
        return None
    if width <= 0 or height <= 0:
        return None
    return width, height


def _read_bmp_size(head: bytes) -> tuple[int, int] | None:
    """Width and height of a BMP file (Windows/OS2 headers) from its first bytes, as Pillow reports them."""
    if len(head) < 22 or head[:2] != b"BM":
        return None
    (header_size,) = struct.unpack("<I", head[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height = struct.unpack("<HH", head[18:22])
        return width, height
    if header_size >= 40 and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return width, abs(height)  # negative height = top-down rows
    return None


def load_images(
    image_dir: str,
    *,
    file: str | None = None,
    where: str | None = None,
    key: str = "image_dir",
    recursive: bool = False,
    extra_extensions: Iterable[str] = (),
) -> list[ImageEntry]:
    """The readable images of a subset folder with their header sizes, sorted by path.

    Raises a UserError (naming ``file``, ``where`` and ``key``) when the folder is missing, is not a
    folder, holds no image file, or when none of its image files can be read. Unreadable or empty
    files are skipped with one warning that lists them.
    """
    root = os.path.abspath(image_dir)
    if not os.path.isdir(root):
        raise UserError(f"{why_unreachable(root)}: {root}", file=file, where=where, key=key)
    try:
        paths = list_image_files(root, recursive=recursive, extra_extensions=extra_extensions)
    except OSError as error:
        raise UserError(f"cannot list {root}: {error.strerror or error}", file=file, where=where, key=key) from None
    if not paths:
        shown = ", ".join(sorted({e.lower() for e in IMAGE_EXTENSIONS}, key=IMAGE_EXTENSIONS.index))
        raise UserError(f"no images found in {root} (looked for {shown})", file=file, where=where, key=key)
    return images_with_sizes(paths, file=file, where=where, key=key, folder=root)


def images_with_sizes(
    paths: list[str],
    *,
    file: str | None = None,
    where: str | None = None,
    key: str = "image_dir",
    folder: str | None = None,
    known_sizes: dict[str, tuple[int, int]] | None = None,
) -> list[ImageEntry]:
    """Read the header size of each path (or take it from ``known_sizes``); skip and warn once
    about unreadable or empty files; raise a UserError if none remain. Keeps the given order."""
    entries: list[ImageEntry] = []
    skipped: list[tuple[str, str]] = []
    label = f"reading image sizes in {os.path.basename(folder or '') or 'subset'}"
    for path in track(paths, len(paths), label):
        size = known_sizes.get(path) if known_sizes else None
        if size is None:
            size = read_image_size(path)  # first: the reason is looked for only when it fails
            if size is None:
                skipped.append((path, _unreadable_reason(path) or "size not readable from header"))
                continue
        entries.append(ImageEntry(path, int(size[0]), int(size[1])))
    if skipped:
        warn_once(_skipped_message(skipped, where, folder))
    if not entries:
        place = folder or (os.path.dirname(paths[0]) if paths else "")
        raise UserError(
            f"none of the {len(paths)} image files in {place} could be read (see the warning above)",
            file=file,
            where=where,
            key=key,
        )
    return entries


def _unreadable_reason(path: str) -> str | None:
    try:
        info = os.stat(path)
    except OSError as error:
        return (error.strerror or "cannot be opened").lower()
    if not stat.S_ISREG(info.st_mode):
        return "not a file"
    if info.st_size == 0:
        return "empty file"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def _skipped_message(skipped: list[tuple[str, str]], where: str | None, folder: str | None) -> str:
    subject = where or folder or "dataset"
    shown = [f"{path} ({reason})" for path, reason in skipped[:_WARN_LIST_LIMIT]]
    more = len(skipped) - len(shown)
    if more > 0:
        shown.append(f"and {more} more")
    noun = "file" if len(skipped) == 1 else "files"
    return f"{subject}: skipping {len(skipped)} unreadable or empty image {noun}: " + ", ".join(shown)
