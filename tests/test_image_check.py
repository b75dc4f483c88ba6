"""`kohya-multiplier check` and `plan --verify-images` (issue 11, point 6): every image fully
decoded; each unreadable or implausible one listed with its reason; exit 1 when any."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from kohya_multiplier.cli import main  # noqa: E402
from kohya_multiplier.dataset.image_check import check_images, check_one  # noqa: E402


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def noisy_png(width: int, height: int) -> bytes:
    import numpy as np

    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring width x height, with almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def rotated_jpeg(orientation: int) -> bytes:
    image = Image.new("RGB", (40, 20), (1, 2, 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


BAD = {
    "empty.png": (b"", "empty"),
    "text.jpg": (b"this is not a picture at all, only words\n" * 20, "undecodable"),
    "half.png": (None, "truncated"),  # filled in below: a noisy PNG cut in half
    "huge.png": (huge_png_header(30000, 30000), "too large"),
    "turned.jpg": (rotated_jpeg(6), "rotated"),
}


def make_dataset(root: Path, bad: dict[str, bytes]) -> Path:
    folder = root / "subject"
    folder.mkdir(parents=True)
    for i in range(20):
        (folder / f"good{i:02d}.png").write_bytes(png_bytes(48 + i, 64))
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    config = root / "ds.toml"
    config.write_text(f'[general]\nresolution = 512\nenable_bucket = true\n[[datasets]]\n[[datasets.subsets]]\n'
                      f'image_dir = "{folder.as_posix()}"\nmultiplier = 0.5\n')
    return config


def bad_files() -> dict[str, bytes]:
    noisy = noisy_png(64, 64)
    files = {name: data for name, (data, _) in BAD.items() if data is not None}
    files["half.png"] = noisy[: len(noisy) // 2]
    return files


@pytest.mark.parametrize("name", list(BAD))
def test_each_kind_of_bad_image_is_named_with_its_reason(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(bad_files()[name])
    problem = check_one(str(path))
    assert problem is not None and problem.kind == BAD[name][1], problem
    assert problem.line().startswith(f"{path}: {BAD[name][1]}: ")


def test_good_images_pass(tmp_path):
    for i, data in enumerate([png_bytes(30, 20), noisy_png(17, 9), rotated_jpeg(1)]):
        path = tmp_path / f"{i}.img"
        path.write_bytes(data)
        assert check_one(str(path)) is None


@pytest.mark.parametrize("workers", [1, 2])
def test_check_lists_every_bad_image_and_exits_1(tmp_path, capsys, workers):
    config = make_dataset(tmp_path, bad_files())
    assert main(["check", str(config), "--workers", str(workers)]) == 1
    out = capsys.readouterr().out.splitlines()
    listed = [line for line in out if ": " in line and line.startswith(str(tmp_path))]
    assert [Path(line.split(":")[0]).name for line in listed] == sorted(BAD)
    assert out[-1].startswith(f"{len(BAD)} of {20 + len(BAD)} images unreadable or implausible (checked in ")
    assert "images/s" in out[-1]


def test_check_of_good_images_exits_0(tmp_path, capsys):
    config = make_dataset(tmp_path, {})
    assert main(["check", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("all 20 images decode")


def test_plan_verify_images_stops_before_planning(tmp_path, capsys):
    config = make_dataset(tmp_path, {"half.png": bad_files()["half.png"]})
    assert main(["plan", str(config), "--verify-images"]) == 1
    captured = capsys.readouterr()
    assert "half.png: truncated: " in captured.err and "images per epoch" not in captured.out
    good = make_dataset(tmp_path / "good", {})
    assert main(["plan", str(good), "--verify-images", "--epochs", "2"]) == 0
    assert "images per epoch" in capsys.readouterr().out


def test_results_do_not_depend_on_the_worker_count(tmp_path):
    config_root = tmp_path / "d"
    make_dataset(config_root, bad_files())
    paths = sorted(str(p) for p in (config_root / "subject").iterdir())
    one, two = check_images(paths, workers=1), check_images(paths, workers=2)
    assert one.problems == two.problems and one.checked == two.checked == len(paths)
