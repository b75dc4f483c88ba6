"""Small PNG images for the integration datasets, written without PIL (the test runner's Python may
not have it; sd-scripts' venv does, but the dataset is made before any venv process starts)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, seed: int) -> bytes:
    """An RGB gradient whose colours depend on ``seed`` (so images differ)."""
    r0, g0, b0 = (seed * 53) % 256, (seed * 97) % 256, (seed * 193) % 256
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type: none
        for x in range(width):
            row += bytes(((r0 + x) % 256, (g0 + y) % 256, (b0 + x + y) % 256))
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) + _chunk(b"IEND", b"")


def write_images(folder: Path, count: int, size: tuple[int, int], *, seed: int, caption: str | None = None, stem: str = "img") -> list[Path]:
    """Write ``count`` PNGs of ``size`` (w, h) into ``folder``, with a ``.txt`` caption each if given."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{stem}{i:03d}.png"
        path.write_bytes(png_bytes(size[0], size[1], seed * 1000 + i))
        if caption is not None:
            path.with_suffix(".txt").write_text(caption, encoding="utf-8")
        paths.append(path)
    return paths
