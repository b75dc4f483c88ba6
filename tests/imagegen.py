"""Tiny image files for tests, without PIL: valid headers with a chosen size.

``write_png`` writes a complete, valid PNG (1-bit grayscale, zlib-compressed rows), small even for
large sizes. ``write_jpeg`` writes a baseline JPEG header (SOI, APP0, DQT, SOF0 ... EOI) that size
readers parse; ``write_webp`` writes VP8 / VP8L / VP8X headers; ``write_bmp`` a BMP header.
``make_image`` picks the writer from the file extension.
"""

from __future__ import annotations

import os
import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def jpeg_bytes(width: int, height: int, *, progressive: bool = False, exif_orientation: int | None = None) -> bytes:
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    if exif_orientation is not None:
        tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
        tiff += struct.pack(">HHIHH", 0x0112, 3, 1, exif_orientation, 0) + struct.pack(">I", 0)
        payload = b"Exif\x00\x00" + tiff
        out += b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    out += b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    marker = b"\xff\xc2" if progressive else b"\xff\xc0"
    out += marker + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    out += b"\xff\xd9"
    return bytes(out)


def webp_bytes(width: int, height: int, *, kind: str = "VP8") -> bytes:
    if kind == "VP8":
        frame = b"\x9d\x01\x2a" + struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
        payload = b"\x00\x00\x00" + frame + b"\x00" * 10  # 3-byte frame tag, start code, sizes
    elif kind == "VP8L":
        bits = (width - 1) | ((height - 1) << 14)
        payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 10
    elif kind == "VP8X":
        payload = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    else:
        raise ValueError(kind)
    chunk = kind.encode().ljust(4, b" ") + struct.pack("<I", len(payload)) + payload
    if len(payload) % 2:
        chunk += b"\x00"
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def bmp_bytes(width: int, height: int, *, top_down: bool = False) -> bytes:
    row = ((width * 24 + 31) // 32) * 4
    pixels = b"\x00" * (row * min(height, 2))  # truncated pixel data: size readers need the header only
    info = struct.pack("<IiiHHIIiiII", 40, width, -height if top_down else height, 1, 24, 0, row * height, 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def image_bytes(name: str, width: int, height: int) -> bytes:
    ext = os.path.splitext(name)[1].lower()
    if ext == ".png":
        return png_bytes(width, height)
    if ext in (".jpg", ".jpeg"):
        return jpeg_bytes(width, height)
    if ext == ".webp":
        return webp_bytes(width, height)
    if ext == ".bmp":
        return bmp_bytes(width, height)
    raise ValueError(f"no writer for {name}")


def make_image(path: str | os.PathLike, width: int, height: int) -> str:
    """Write an image file whose header says ``width`` x ``height``; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(image_bytes(path, width, height))
    return path


def make_folder(folder: str | os.PathLike, sizes: list[tuple[int, int]], *, ext: str = ".png", prefix: str = "img") -> list[str]:
    """Write ``len(sizes)`` images ``<prefix>NNNN<ext>`` into ``folder``; returns their paths."""
    folder = os.fspath(folder)
    return [make_image(os.path.join(folder, f"{prefix}{i:04d}{ext}"), w, h) for i, (w, h) in enumerate(sizes)]
