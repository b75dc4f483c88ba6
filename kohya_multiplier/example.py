"""A small example dataset, generated on demand: subjects of very different sizes plus
regularization images, and a dataset config that balances them with multipliers.

The images are real PNG files (one flat colour each, so they are tiny on disk) in several aspect
ratios, so bucketing has something to do.
"""

from __future__ import annotations

import os
import struct
import zlib

from kohya_multiplier import rng
from kohya_multiplier.errors import UserError
from kohya_multiplier.writer import write_file

# (folder, images, multiplier or None, is_reg)
SUBJECTS = [
    ("alice", 300, 0.1, False),  # a big subject: 30 images per epoch, a different 30 each epoch
    ("bob", 60, 0.5, False),  # 30 per epoch: every image every other epoch
    ("carol", 12, 2.5, False),  # a small subject: every image twice, half of them a third time
    ("watercolor_style", 150, 0.2, False),
    ("reg_person", 400, None, True),  # regularization: automatic multiplier, all images rotate
]

# Sizes with the aspect ratios of typical photos (small, so the files stay small).
SIZES = [(128, 128), (96, 128), (128, 96), (80, 128), (128, 80), (72, 128), (128, 72)]

CONFIG = """\
# Example dataset for kohya-multiplier. Every subset contributes about 30 images per epoch,
# although the subjects have from 12 to 300 images.
[general]
enable_bucket = true
resolution = 512
min_bucket_reso = 256
max_bucket_reso = 1024
caption_extension = ".txt"

[[datasets]]
batch_size = 4
{subsets}"""

SUBSET = """
  [[datasets.subsets]]
  image_dir = "{image_dir}"
  class_tokens = "{token}"
{extra}"""


def png_bytes(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    row = b"\x00" + bytes(colour) * width
    data = zlib.compress(row * height, 6)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def write_png(path: str, width: int, height: int, colour: tuple[int, int, int]) -> None:
    """A test image (tests and benchmarks build datasets with it)."""
    with open(path, "wb") as stream:
        stream.write(png_bytes(width, height, colour))


# Written into every folder ``generate`` makes: the proof that the folder is the example's own.
MARKER = ".kohya-multiplier-example"


def check_target(directory: str) -> None:
    """Refuse a target the example did not make: a file, or a non-empty folder without MARKER, or
    one where a folder or file the example writes is a link (it never writes through a link it did
    not make: the link could lead to the user's own photos).

    The example writes only into an empty or new folder, or into one it made before (then it
    rewrites its own files, byte for byte the same), so it never overwrites or adds to a user's files.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UserError("is not a directory; give a new or empty folder", file=directory, key="--dir")
    if os.path.isdir(directory) and os.listdir(directory) and not os.path.isfile(os.path.join(directory, MARKER)):
        raise UserError(
            "is a non-empty folder not made by `kohya-multiplier example`; give a new or empty folder (--dir DIR)",
            file=directory, key="--dir",
        )
    if not os.path.isdir(directory):
        return
    written = [MARKER, "dataset.toml"]
    for folder, count, *_ in SUBJECTS:
        written.append(folder)
        written += [os.path.join(folder, f"{folder}_{i:04d}{ext}") for i in range(count) for ext in (".png", ".txt")]
    for relative in written:
        path = os.path.join(directory, relative)
        if os.path.islink(path):
            raise UserError(f"is a link the example did not make ({relative} points to {os.readlink(path)}); "
                            "remove it or give a new folder", file=directory, key="--dir")
    for folder, *_ in SUBJECTS:
        if os.path.lexists(os.path.join(directory, folder)) and not os.path.isdir(os.path.join(directory, folder)):
            raise UserError(f"holds {folder}, which is not a folder; give a new or empty folder", file=directory, key="--dir")


def generate(directory: str) -> str:
    """Write the example images and ``dataset.toml`` under ``directory`` (checked by
    :func:`check_target` first); return the config's path. Every file goes through the one writer."""
    check_target(directory)
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    write_file(os.path.join(directory, MARKER), "made by `kohya-multiplier example`; it may rewrite this folder\n", key="--dir")
    subsets = []
    for s, (folder, count, multiplier, is_reg) in enumerate(SUBJECTS):
        image_dir = os.path.join(directory, folder)
        os.makedirs(image_dir, exist_ok=True)
        gen = rng.generator(0, rng.SYNTHETIC, s)
        size_choice = gen.integers(0, len(SIZES), count)
        colours = gen.integers(0, 256, (count, 3))
        for i in range(count):
            width, height = SIZES[size_choice[i]]
            stem = os.path.join(image_dir, f"{folder}_{i:04d}")
            write_file(stem + ".png", png_bytes(width, height, tuple(int(c) for c in colours[i])), key="--dir")
            write_file(stem + ".txt", f"a photo of {folder.replace('_', ' ')}\n", key="--dir")
        extra = []
        if multiplier is not None:
            extra.append(f"  multiplier = {multiplier}")
        if is_reg:
            extra.append("  is_reg = true")
        subsets.append(SUBSET.format(image_dir=image_dir.replace("\\", "/"), token=folder, extra="\n".join(extra) + "\n"))
    config_path = os.path.join(directory, "dataset.toml")
    write_file(config_path, CONFIG.format(subsets="".join(subsets)), key="--dir")
    return config_path
