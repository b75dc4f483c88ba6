"""Listing images like sd-scripts' glob_images and reading sizes from headers only."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegen import bmp_bytes, jpeg_bytes, make_image, png_bytes, webp_bytes
from kohya_multiplier import errors
from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.images import ImageEntry, list_image_files, load_images, read_image_size


@pytest.fixture(autouse=True)
def fresh_warnings():
    errors._warned.clear()
    yield
    errors._warned.clear()


@pytest.mark.parametrize(
    "name, data, size",
    [
        ("a.png", png_bytes(640, 480), (640, 480)),
        ("a.jpg", jpeg_bytes(800, 1200), (800, 1200)),
        ("a.jpeg", jpeg_bytes(3000, 17, progressive=True), (3000, 17)),
        ("rot.jpg", jpeg_bytes(640, 480, exif_orientation=6), (640, 480)),  # stored size: no EXIF rotation
        ("a.webp", webp_bytes(300, 200), (300, 200)),
        ("l.webp", webp_bytes(500, 400, kind="VP8L"), (500, 400)),
        # imagesize 1.4.1 (pinned by sd-scripts) reads extended WebP canvases one pixel short
        ("x.webp", webp_bytes(1024, 768, kind="VP8X"), (1023, 767)),
        ("a.bmp", bmp_bytes(123, 77), (123, 77)),
        ("t.bmp", bmp_bytes(64, 32, top_down=True), (64, 32)),
    ],
)
def test_header_sizes(tmp_path, name, data, size):
    path = tmp_path / name
    path.write_bytes(data)
    assert read_image_size(str(path)) == size


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 16383), st.integers(1, 16383), st.sampled_from([".png", ".jpg", ".webp", ".bmp"]))
def test_header_sizes_roundtrip(tmp_path_factory, w, h, ext):
    if ext == ".png" and w * h > 4_000_000:
        w, h = min(w, 2000), min(h, 2000)
    folder = tmp_path_factory.mktemp("img")
    path = make_image(folder / f"i{ext}", w, h)
    assert read_image_size(path) == (w, h)


def test_unreadable_headers(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    (tmp_path / "trunc.jpg").write_bytes(b"\xff\xd8\xff")
    assert read_image_size(str(tmp_path / "empty.png")) is None
    assert read_image_size(str(tmp_path / "junk.png")) is None
    assert read_image_size(str(tmp_path / "trunc.jpg")) is None
    assert read_image_size(str(tmp_path / "missing.png")) is None


def test_listing_follows_glob_images(tmp_path):
    for name in ["b.png", "a.PNG", "c.Png", "d.jpg", "e.JPEG", "f.webp", "g.bmp", ".hidden.png", "h.gif", "i.txt",
                 "j.avif", "k.png.txt", "multiply.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.png").write_bytes(b"x")
    names = [os.path.basename(p) for p in list_image_files(str(tmp_path))]
    assert names == sorted(["b.png", "a.PNG", "d.jpg", "e.JPEG", "f.webp", "g.bmp"])
    recursive = [os.path.relpath(p, tmp_path) for p in list_image_files(str(tmp_path), recursive=True)]
    assert os.path.join("sub", "deep.png") in recursive and ".hidden.png" in recursive
    extra = [os.path.basename(p) for p in list_image_files(str(tmp_path), extra_extensions=(".avif",))]
    assert "j.avif" in extra


def test_listing_compares_extensions_as_glob_does_on_a_case_insensitive_system(tmp_path, monkeypatch):
    # glob matches "*.png" through fnmatch, which folds case where the system's paths do (Windows)
    from kohya_multiplier.dataset import images

    for name in ["b.png", "c.Png", "d.JpG", ".e.PNG", "f.gif"]:
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(images.os.path, "normcase", str.lower)
    assert sorted(images.image_names(str(tmp_path), images.IMAGE_EXTENSIONS)) == ["b.png", "c.Png", "d.JpG"]


def test_load_images_sorted_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_image("imgs/b.png", 10, 20)
    make_image("imgs/a.jpg", 30, 40)
    entries = load_images("imgs")
    assert entries == [
        ImageEntry(str(tmp_path / "imgs" / "a.jpg"), 30, 40),
        ImageEntry(str(tmp_path / "imgs" / "b.png"), 10, 20),
    ]


def test_skipped_files_one_warning(tmp_path, capsys):
    make_image(tmp_path / "ok.png", 64, 64)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"garbage")
    entries = load_images(str(tmp_path), where="datasets[0].subsets[0] (imgs)")
    assert [os.path.basename(e.path) for e in entries] == ["ok.png"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "kohya-multiplier: warning: datasets[0].subsets[0] (imgs): skipping 2 unreadable or empty image files: "
        f"{tmp_path / 'empty.png'} (empty file), {tmp_path / 'junk.jpg'} (size not readable from header)"
    ]


def test_skipped_list_is_shortened(tmp_path, capsys):
    make_image(tmp_path / "ok.png", 64, 64)
    for i in range(25):
        (tmp_path / f"e{i:02d}.png").write_bytes(b"")
    load_images(str(tmp_path), where="w")
    err = capsys.readouterr().err
    assert err.count("(empty file)") == 20 and "and 5 more" in err and "skipping 25 unreadable" in err


@pytest.mark.parametrize("case", ["missing", "file", "empty", "unreadable"])
def test_folder_errors(tmp_path, case, capsys):
    target = tmp_path / "alice"
    if case == "file":
        target.write_text("x")
    elif case == "empty":
        target.mkdir()
        (target / "notes.txt").write_text("x")
    elif case == "unreadable":
        target.mkdir()
        (target / "a.png").write_bytes(b"")
        (target / "b.png").write_bytes(b"junk")
    with pytest.raises(UserError) as info:
        load_images(str(target), file="dataset.toml", where="datasets[0].subsets[1] (alice)")
    prefix = "dataset.toml: datasets[0].subsets[1] (alice): image_dir: "
    expected = {
        "missing": f"directory not found: {target}",
        "file": f"not a directory: {target}",
        "empty": f"no images found in {target} (looked for .png, .jpg, .jpeg, .webp, .bmp)",
        "unreadable": f"none of the 2 image files in {target} could be read (see the warning above)",
    }[case]
    assert str(info.value) == prefix + expected


def test_thousands_of_images_are_fast(tmp_path):
    data = png_bytes(640, 480)
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3000):
        (folder / f"{i:05d}.png").write_bytes(data)
    start = time.perf_counter()
    entries = load_images(str(folder))
    elapsed = time.perf_counter() - start
    assert len(entries) == 3000 and entries[0].width == 640
    assert elapsed < 3.0, elapsed
