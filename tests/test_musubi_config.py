"""musubi-tuner dataset configs in the core: the reader, musubi's bucket rule, the dry run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from kohya_multiplier.cli import main
from kohya_multiplier.checkouts import musubi as installs
from kohya_multiplier.dataset.musubi_buckets import MusubiBuckets, clips_of, parse_cache_name, rounded_target_frames
from kohya_multiplier.dataset.musubi_config import is_musubi_config, load_musubi_config
from kohya_multiplier.errors import UserError
from kohya_multiplier.musubi.launch import epoch_offset, split_own_options
from kohya_multiplier.planner.dataset_plan import DatasetPlan


def write_image_caches(folder: Path, names_sizes, arch="wan", text_encoder=True):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in names_sizes:
        (folder / f"{name}_{w:04d}x{h:04d}_{arch}.safetensors").write_bytes(b"")
        if text_encoder:
            (folder / f"{name}_{arch}_te.safetensors").write_bytes(b"")


def write_clip_caches(folder: Path, videos, clips, size=(40, 32), arch="wan"):
    folder.mkdir(parents=True, exist_ok=True)
    for video in videos:
        for pos, frames in clips:
            (folder / f"{video}_{pos:05d}-{frames:03d}_{size[0]:04d}x{size[1]:04d}_{arch}.safetensors").write_bytes(b"")
        (folder / f"{video}_{arch}_te.safetensors").write_bytes(b"")


def write_config(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def mixed(tmp_path):
    """20 clips of 10 videos against 200 images: the balance the issue asks about."""
    write_image_caches(tmp_path / "icache", [(f"img_{i:03d}", (48, 32) if i % 3 else (32, 48)) for i in range(200)])
    write_clip_caches(tmp_path / "vcache", [f"clip_v{i}" for i in range(10)], [(0, 1), (0, 5)])
    config = write_config(tmp_path / "cfg.toml", f"""
[general]
resolution = [32, 32]
enable_bucket = true
[[datasets]]
image_directory = "{tmp_path / 'images'}"
cache_directory = "{tmp_path / 'icache'}"
multiplier = 0.1
[[datasets]]
video_directory = "{tmp_path / 'videos'}"
cache_directory = "{tmp_path / 'vcache'}"
target_frames = [1, 5]
multiplier = 1.5
""")
    return tmp_path, config


# -- musubi's bucket rule ---------------------------------------------------------------------


def test_bucket_candidates_follow_musubis_rule():
    buckets = MusubiBuckets.create((32, 32), True, False, "wan")
    assert buckets.candidates() == [(16, 64), (32, 32), (64, 16)]
    # 960x544 (musubi's default): widths 352..720 in 16s, each with its transpose
    default = MusubiBuckets.create((960, 544), True, False, "wan").candidates()
    assert (720, 720) in default and (368, 1408) in default and (1408, 368) in default


def test_bucket_of_nearest_aspect_first_on_a_tie():
    buckets = MusubiBuckets.create((32, 32), True, False, "wan")
    assert buckets.bucket_of(64, 48) == (32, 32)
    assert buckets.bucket_of(300, 40) == (64, 16)
    # 2.5 lies as far from 1 (32x32) as from 4 (64x16): numpy's argmin takes the first in sorted order
    assert buckets.bucket_of(100, 40) == (32, 32)


def test_bucketing_off_and_no_upscale():
    assert MusubiBuckets.create((32, 48), False, True, "wan").assign([(500, 20), (7, 7)]) == [(32, 48), (32, 48)]
    no_upscale = MusubiBuckets.create((64, 64), True, True, "ho1")  # HiDream-O1 steps of 32
    assert no_upscale.bucket_of(50, 70) == (32, 64)  # not larger than the area: its size cut to the steps
    assert no_upscale.bucket_of(200, 100) in no_upscale.candidates()


def test_cache_names_as_musubi_splits_them():
    image = parse_cache_name("my_cat_photo_0640x0480_wan.safetensors", video=False)
    assert (image.key, image.size, image.architecture, image.item) == ("my_cat_photo", (640, 480), "wan", "my_cat_photo")
    clip = parse_cache_name("walk_00008-017_0320x0240_hv.safetensors", video=True)
    assert (clip.key, clip.clip, clip.item) == ("walk", (8, 17), "walk_00008-017")
    assert parse_cache_name("walk_hv_te.safetensors", video=True) is None
    assert parse_cache_name("notes.txt", video=False) is None


def test_clips_of_every_frame_extraction():
    assert clips_of(20, (1, 5), "head", 1, 1, 129) == [(0, 1), (0, 5)]
    assert clips_of(11, (5,), "chunk", 1, 1, 129) == [(0, 5), (5, 5)]
    assert clips_of(8, (5,), "slide", 2, 1, 129) == [(0, 5), (2, 5)]
    assert clips_of(13, (5,), "uniform", 1, 3, 129) == [(0, 5), (4, 5), (8, 5)]
    assert clips_of(30, (5,), "full", 1, 1, 20) == [(0, 17)]
    assert rounded_target_frames([8, 5, 1, 6]) == (1, 5)


# -- the reader -------------------------------------------------------------------------------


def test_items_come_from_the_caches_with_clip_buckets(mixed):
    tmp_path, config = mixed
    read = load_musubi_config(config)
    images, videos = read.datasets
    assert (images.trainer, images.video, videos.video) == ("musubi-tuner", False, True)
    assert len(images.subsets[0].images) == 200 and len(videos.subsets[0].images) == 20
    keys = sorted(os.path.basename(e.path) for e in videos.subsets[0].images)
    assert keys[:2] == ["clip_v0_00000-001", "clip_v0_00000-005"]
    assert sorted(set(videos.subsets[0].image_buckets)) == [(32, 32, 1), (32, 32, 5)]
    assert images.subsets[0].effective_multiplier == 0.1 and videos.subsets[0].effective_multiplier == 1.5


def test_a_multiplier_counts_items_per_epoch_and_rotates_through_every_clip(mixed):
    tmp_path, config = mixed
    images, videos = load_musubi_config(config).datasets
    image_plan, video_plan = DatasetPlan(images, 7), DatasetPlan(videos, 7)
    assert image_plan.epoch_length == 20  # 0.1 x 200 images, batch size 1
    assert video_plan.epoch_length == 30  # 1.5 x 20 clips
    seen = set()
    for epoch in range(1, 3):
        plan = video_plan.batches(epoch)
        seen.update(video_plan.plan_input.image_keys[j] for j in plan.image_indices)
    assert len(seen) == 20  # every clip, so every source video, within two epochs
    seen_images = set()
    for epoch in range(1, 11):
        plan = image_plan.batches(epoch)
        seen_images.update(plan.image_indices.tolist())
    assert len(seen_images) == 200  # 0.1: every image once in ten epochs


def test_precedence_and_images_per_epoch(tmp_path):
    write_image_caches(tmp_path / "a", [(f"a{i}", (32, 32)) for i in range(8)])
    write_image_caches(tmp_path / "b", [(f"b{i}", (32, 32)) for i in range(4)])
    config = write_config(tmp_path / "c.toml", f"""
[general]
resolution = 32
multiplier = 0.5
[[datasets]]
image_directory = "{tmp_path / 'a'}"
num_repeats = 3
[[datasets]]
image_directory = "{tmp_path / 'b'}"
images_per_epoch = 6
""")
    a, b = load_musubi_config(config).datasets
    assert (a.subsets[0].multiplier, a.subsets[0].num_repeats, a.subsets[0].effective_multiplier) == (None, 3, 3.0)
    assert b.subsets[0].effective_multiplier == 1.5 and b.subsets[0].effective_origin == "images_per_epoch (dataset)"
    assert not a.uses_multiplier and b.uses_multiplier


def test_images_without_caches_are_planned_from_their_files(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    for i, size in enumerate([(64, 32), (32, 64), (40, 40)]):
        Image.new("RGB", size).save(folder / f"p{i}.png")
    config = write_config(tmp_path / "c.toml", f'[general]\nresolution = 32\nenable_bucket = true\n'
                                               f'[[datasets]]\nimage_directory = "{folder}"\nmultiplier = 2\n')
    read = load_musubi_config(config)
    subset = read.datasets[0].subsets[0]
    assert [os.path.basename(e.path) for e in subset.images] == ["p0", "p1", "p2"]
    assert subset.image_buckets == [(32, 32), (16, 64), (32, 32)]  # 2:1 is nearer 1:1 than 4:1
    assert any("no latent caches yet" in note for note in read.notes)


@pytest.mark.parametrize("table, key, words", [
    ('multiplier = { 1 = 0.5, 5 = 1 }', "multiplier", "trains alone in its batches"),
    ('frame_extraction = "head"', "frame_extraction", "a video dataset's key"),
    ('control_directory = "ctl"', "control_directory", "not supported by kohya-multiplier yet"),
    ('num_repeat = 2', "num_repeat", "did you mean num_repeats?"),
    ('multiplier = "2"', "multiplier", "must be a number"),
    ('multiplier = 1\nnum_repeats = 2', "multiplier", "cannot be combined with num_repeats"),
])
def test_one_line_errors_name_the_file_table_and_key(tmp_path, table, key, words):
    write_image_caches(tmp_path / "a", [("a0", (32, 32))])
    config = write_config(tmp_path / "c.toml", f'[[datasets]]\nimage_directory = "{tmp_path / "a"}"\n{table}\n')
    with pytest.raises(UserError) as error:
        load_musubi_config(config)
    text = str(error.value)
    assert text.startswith(f"{config}: datasets[0]: {key}: ") and words in text and "\n" not in text


def test_caches_of_several_architectures_need_a_choice(tmp_path):
    write_image_caches(tmp_path / "a", [("a0", (32, 32))], arch="wan")
    write_image_caches(tmp_path / "a", [("a0", (32, 32))], arch="qi")
    config = write_config(tmp_path / "c.toml", f'[[datasets]]\nimage_directory = "{tmp_path / "a"}"\nmultiplier = 2\n')
    with pytest.raises(UserError, match="several architectures .qi, wan.; say which one trains with --architecture"):
        load_musubi_config(config)
    assert len(load_musubi_config(config, architecture="qi").datasets[0].subsets[0].images) == 1


def test_items_without_a_text_encoder_cache_are_skipped_as_musubi_does(tmp_path):
    write_image_caches(tmp_path / "a", [("a0", (32, 32)), ("a1", (32, 32))])
    write_image_caches(tmp_path / "a", [("a2", (32, 32))], text_encoder=False)
    config = write_config(tmp_path / "c.toml", f'[[datasets]]\nimage_directory = "{tmp_path / "a"}"\nmultiplier = 2\n')
    read = load_musubi_config(config)
    assert len(read.datasets[0].subsets[0].images) == 2
    assert any("a2_0032x0032_wan.safetensors has no text encoder cache" in note for note in read.notes)


def test_a_video_dataset_without_caches_says_to_cache_first(tmp_path):
    (tmp_path / "v").mkdir()
    config = write_config(tmp_path / "c.toml", f'[[datasets]]\nvideo_directory = "{tmp_path / "v"}"\nmultiplier = 2\n')
    with pytest.raises(UserError, match="run musubi-tuner's caching scripts first"):
        load_musubi_config(config, architecture="wan")


def test_two_datasets_cannot_share_a_cache_directory(tmp_path):
    write_image_caches(tmp_path / "a", [("a0", (32, 32))])
    config = write_config(tmp_path / "c.toml", f'[[datasets]]\nimage_directory = "{tmp_path / "a"}"\n'
                                               f'[[datasets]]\nimage_directory = "{tmp_path / "b"}"\ncache_directory = "{tmp_path / "a"}"\n')
    with pytest.raises(UserError, match=r"datasets\[1\]: cache_directory: has the cache directory of datasets\[0\]"):
        load_musubi_config(config)


def test_configs_are_told_apart_by_their_keys():
    assert is_musubi_config({"datasets": [{"video_directory": "v"}]})
    assert not is_musubi_config({"datasets": [{"subsets": [{"image_dir": "x"}]}]})


# -- the dry run ------------------------------------------------------------------------------


def test_plan_reads_a_musubi_config_and_writes_clip_buckets(mixed, capsys):
    tmp_path, config = mixed
    schedule = tmp_path / "s.jsonl"
    assert main(["plan", config, "--epochs", "2", "--seed", "3", "--schedule", str(schedule), "--max_train_epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "dataset 0: batch size 1" in out and "20 batches per epoch" in out and "30 batches per epoch" in out
    assert "the run, as musubi-tuner will print it" in out and "num batches per epoch: 50" in out
    records = [json.loads(line) for line in schedule.read_text().splitlines()]
    assert len(records) == 100
    clip = next(r for r in records if r["dataset"] == 1)
    assert len(clip["resolution"]) == 3 and clip["images"][0].startswith(str(tmp_path / "vcache"))


def test_plan_refuses_architecture_for_an_sd_scripts_config(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "img" / "a.png")
    config = write_config(tmp_path / "sd.toml", f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{tmp_path / "img"}"\n')
    assert main(["plan", config, "--architecture", "wan"]) == 2
    assert "--architecture: is for musubi-tuner dataset configs" in capsys.readouterr().err


# -- the wrapper's own options and the install's revision --------------------------------------


def test_wrapper_options_are_taken_out_of_the_scripts_arguments():
    own, rest = split_own_options(["--dit", "x", "--multiplier_schedule=s.jsonl", "--multiplier_epoch_offset", "3", "--seed", "1"])
    assert own == {"schedule": "s.jsonl", "offset": "3"} and rest == ["--dit", "x", "--seed", "1"]
    with pytest.raises(UserError, match="needs a value"):
        split_own_options(["--multiplier_schedule", "--seed"])
    assert epoch_offset("4") == 4
    with pytest.raises(UserError, match="--multiplier_epoch_offset: must be a whole number"):
        epoch_offset("-1")


def test_script_names_and_refusals():
    assert installs.script_module("wan_train_network.py") == "musubi_tuner.wan_train_network"
    assert installs.script_module("musubi_tuner.zimage_train_network") == "musubi_tuner.zimage_train_network"
    with pytest.raises(UserError, match="not a musubi-tuner script kohya-multiplier runs"):
        installs.script_module("hv_train")


def test_a_changed_hooked_function_makes_an_install_untested(tmp_path):
    root = tmp_path / "musubi_tuner"
    (root / "dataset").mkdir(parents=True)
    (root / "dataset" / "bucket.py").write_text("class BucketBatchManager:\n    def shuffle(self):\n        pass\n")
    install = installs.MusubiInstall(root, "9.9")
    hashes = install.hashes()
    assert hashes["BaseDataset.__getitem__"] == "missing" and hashes["BucketBatchManager.shuffle"] != "missing"
    release, differs = install.revision()
    assert release is None and differs == "BaseDataset.__getitem__"


def test_configure_remembers_a_musubi_python_and_refuses_one_without_musubi(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["configure", "--musubi", str(tmp_path / "nowhere" / "python")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a Python that sees only PYTHONPATH (no site-packages, where a real musubi-tuner may be installed)
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    site = tmp_path / "site"
    (site / "musubi_tuner").mkdir(parents=True)
    (site / "musubi_tuner" / "__init__.py").write_text("")
    (site / "musubi_tuner-0.3.4.dist-info").mkdir()
    (site / "musubi_tuner-0.3.4.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: musubi-tuner\nVersion: 0.3.4\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    assert main(["configure", "--musubi", str(python)]) == 0
    assert "musubi-tuner 0.3.4" in capsys.readouterr().out
    assert installs.configured_python() == python
    assert main(["configure"]) == 0
    assert f"musubi-tuner: python {python} (musubi-tuner 0.3.4)" in capsys.readouterr().out
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "empty"))  # that Python without musubi-tuner
    assert main(["configure", "--musubi", str(python)]) == 2
    assert "cannot import musubi_tuner" in capsys.readouterr().err
    assert main(["configure", "--musubi", str(python), "--sd-scripts", str(tmp_path)]) == 2
    assert "configure one at a time" in capsys.readouterr().err


def test_scripts_for_musubi_takes_no_directory(tmp_path, capsys):
    assert main(["scripts", "--trainer", "musubi", str(tmp_path)]) == 2
    assert "takes no DIR" in capsys.readouterr().err
