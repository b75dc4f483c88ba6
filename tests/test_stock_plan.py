"""`plan` for configs without multipliers, as sd-scripts trains them, and `skip_image_resolution`.

A golden-style CLI test of a stock config with regularization images (table, notes, schedule),
a mixed config (one dataset with multipliers, one without), and the image filter of sd-scripts
v0.11.1 (``skip_image_resolution`` at dataset or general level, or on the command line), which
applies before the validation split and to datasets with multipliers too.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from imagegen import make_folder
from kohya_multiplier.dataset.types import CommandLineOptions
from kohya_multiplier.dataset.config import load_training_config
from kohya_multiplier.errors import UserError

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("workdir")  # tests/conftest.py: each test in its own empty folder


def write_toml(text: str, name: str = "dataset.toml") -> str:
    Path(name).write_text(textwrap.dedent(text))
    return name


def run_plan(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "kohya_multiplier", "plan", *args], capture_output=True, text=True, env=env, timeout=120)


STOCK = """\
[general]
resolution = 512
enable_bucket = true
batch_size = 2

[[datasets]]
  [[datasets.subsets]]
  image_dir = "train/alice"
  num_repeats = 3
  [[datasets.subsets]]
  image_dir = "train/bob"
  num_repeats = 2
  [[datasets.subsets]]
  image_dir = "reg/person"
  is_reg = true
  num_repeats = 2
  [[datasets.subsets]]
  image_dir = "reg/crowd"
  is_reg = true
"""


def stock_folders():
    make_folder("train/alice", [(512, 512)] * 5)
    make_folder("train/bob", [(512, 768)] * 3)
    make_folder("reg/person", [(512, 512)] * 4 + [(768, 512)] * 3)
    make_folder("reg/crowd", [(512, 512)] * 10)


def records_of(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_stock_config_plans_what_sd_scripts_trains(workdir):
    stock_folders()
    write_toml(STOCK)
    result = run_plan("dataset.toml", "--epochs", "3", "--seed", "4", "--schedule", "plan.jsonl")
    assert result.returncode == 0, result.stderr
    text = result.stdout.replace(str(workdir), "<dir>")
    golden = GOLDEN / "plan_stock.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()

    # Training images 5 x 3 + 3 x 2 = 21. Regularization: person 7 x 2 = 14, then crowd 7 of 10.
    records = records_of("plan.jsonl")
    per_bucket = {(512, 512): 15 + 8 + 7, (640, 384): 6, (384, 640): 6}
    batches = sum(math.ceil(n / 2) for n in per_bucket.values())
    for epoch in (1, 2, 3):
        mine = [r for r in records if r["epoch"] == epoch]
        assert len(mine) == batches
        count = Counter((tuple(r["resolution"]), image) for r in mine for image in r["images"])
        assert {res: sum(n for (r, _), n in count.items() if r == res) for res in per_bucket} == per_bucket
        folder = Counter(Path(image).parent.name for (_, image), n in count.items() for _ in range(n))
        assert folder == {"alice": 15, "bob": 6, "person": 14, "crowd": 7}
        crowd = sorted(Path(image).name for (_, image) in count if "/crowd/" in image)
        assert crowd == [f"img{k:04d}.png" for k in range(7)]  # the first 7 in sd-scripts' order, every epoch
        assert all(n == 2 for (_, image), n in count.items() if "/person/" in image)


def test_mixed_config_plans_each_dataset_by_its_rule(workdir):
    stock_folders()
    write_toml(STOCK + """
[[datasets]]
  [[datasets.subsets]]
  image_dir = "train/alice"
  multiplier = 0.4
  [[datasets.subsets]]
  image_dir = "reg/crowd"
  is_reg = true
""")
    result = run_plan("dataset.toml", "--epochs", "2", "--schedule", "plan.jsonl")
    assert result.returncode == 0, result.stderr
    assert "no multiplier anywhere" not in result.stdout
    assert "dataset 0 has no multiplier: sd-scripts trains it itself (the others follow the plan batch for batch)" in result.stdout
    assert "0-1 (stock regularization)" in result.stdout and "never (3 unused)" in result.stdout
    assert "0.2 (auto (regularization))" in result.stdout  # 0.4 x 5 = 2 training images against 10
    records = records_of("plan.jsonl")
    for epoch in (1, 2):
        stock = Counter(Path(i).parent.name for r in records if r["epoch"] == epoch and r["dataset"] == 0 for i in r["images"])
        planned = Counter(Path(i).parent.name for r in records if r["epoch"] == epoch and r["dataset"] == 1 for i in r["images"])
        assert stock == {"alice": 15, "bob": 6, "person": 14, "crowd": 7}
        assert planned == {"alice": 2, "crowd": 2}


# ---------------------------------------------------------------------------------------------
# skip_image_resolution (sd-scripts v0.11.1)


def sizes_folder():
    make_folder("train/a", [(256, 256), (512, 512), (400, 400), (640, 384), (300, 300)])
    make_folder("reg/r", [(200, 200), (512, 512)])


def names(subset) -> list[str]:
    return [Path(e.path).name for e in subset.images]


@pytest.mark.parametrize(
    "level, value, options",
    [
        ("dataset", "400", CommandLineOptions()),
        ("general", "[400, 400]", CommandLineOptions()),
        ("general", "[160000, 1]", CommandLineOptions()),
        (None, None, CommandLineOptions(skip_image_resolution="400")),
        (None, None, CommandLineOptions(skip_image_resolution=(400, 400))),  # sd-scripts' args after parsing
        ("dataset", "400", CommandLineOptions(skip_image_resolution="10")),  # the config wins
    ],
)
def test_skip_image_resolution_drops_images_of_at_most_that_area(level, value, options):
    sizes_folder()
    general = f"skip_image_resolution = {value}\n" if level == "general" else ""
    dataset = f"skip_image_resolution = {value}\n" if level == "dataset" else ""
    write_toml(f"""\
[general]
resolution = 512
{general}
[[datasets]]
{dataset}
  [[datasets.subsets]]
  image_dir = "train/a"
  multiplier = 0.5
  [[datasets.subsets]]
  image_dir = "reg/r"
  is_reg = true
""")
    config = load_training_config("dataset.toml", options)
    train, reg = config.datasets[0].subsets
    assert names(train) == ["img0001.png", "img0003.png"]  # 512x512 and 640x384; 400x400 is not larger
    assert names(reg) == ["img0001.png"]
    assert any("skip_image_resolution 400x400: 3 of 5 images" in note for note in config.notes) or value == "[160000, 1]"


def test_skip_image_resolution_applies_before_the_validation_split():
    make_folder("train/a", [(256, 256)] * 4 + [(512, 512)] * 6)
    write_toml("""\
[general]
resolution = 512
skip_image_resolution = 300
validation_split = 0.5
validation_seed = 7
[[datasets]]
  [[datasets.subsets]]
  image_dir = "train/a"
""")
    (subset,) = load_training_config("dataset.toml").datasets[0].subsets
    kept = [os.path.abspath(f"train/a/img{k:04d}.png") for k in range(4, 10)]
    random.Random(7).shuffle(kept)  # sd-scripts: random.seed(validation_seed); random.shuffle(list of (path, size))
    assert sorted(e.path for e in subset.images) == sorted(kept[:3])


def test_a_subset_filtered_to_nothing_is_skipped_and_counts_nothing():
    make_folder("train/a", [(512, 512)] * 2)
    make_folder("train/small", [(64, 64)] * 3)
    make_folder("reg/r", [(512, 512)] * 5)
    write_toml("""\
[general]
resolution = 512
skip_image_resolution = 256
[[datasets]]
  [[datasets.subsets]]
  image_dir = "train/a"
  [[datasets.subsets]]
  image_dir = "train/small"
  num_repeats = 10
  [[datasets.subsets]]
  image_dir = "reg/r"
  is_reg = true
""")
    from kohya_multiplier.dataset.regularization import stock_image_repeats

    (dataset,) = load_training_config("dataset.toml").datasets
    assert [len(s.images) for s in dataset.subsets] == [2, 0, 5]
    assert [r.tolist() for r in stock_image_repeats(dataset)] == [[1, 1], [], [1, 1, 0, 0, 0]]


@pytest.mark.parametrize(
    "value, message",
    [
        ('"512"', 'dataset.toml: datasets[0]: skip_image_resolution: must be an integer or an array [width, height] of integers, not a string ("512")'),
        ("[1, 2, 3]", "dataset.toml: datasets[0]: skip_image_resolution: must be an integer or an array [width, height] of integers, not an array"),
    ],
)
def test_bad_skip_image_resolution_is_one_line(value, message):
    sizes_folder()
    write_toml(f'[general]\nresolution = 512\n[[datasets]]\nskip_image_resolution = {value}\n[[datasets.subsets]]\nimage_dir = "train/a"\n')
    with pytest.raises(UserError) as info:
        load_training_config("dataset.toml")
    assert str(info.value) == message


def test_skip_image_resolution_on_the_command_line(workdir):
    sizes_folder()
    write_toml('[general]\nresolution = 512\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/a"\n')
    result = run_plan("dataset.toml", "--epochs", "1", "--skip_image_resolution", "400,400")
    assert result.returncode == 0, result.stderr
    assert "3 of 5 images are not larger than 160000 pixels" in result.stdout
    bad = run_plan("dataset.toml", "--skip_image_resolution", "big")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "kohya-multiplier: error: --skip_image_resolution: must be 'size' or 'width,height', not 'big'"


def test_stock_counts_follow_the_validation_split_and_skip_duplicates():
    make_folder("train/a", [(512, 512)] * 10)
    make_folder("reg/r", [(512, 512)] * 8)
    write_toml("""\
[general]
resolution = 512
validation_split = 0.5
validation_seed = 3
[[datasets]]
  [[datasets.subsets]]
  image_dir = "train/a"
  [[datasets.subsets]]
  image_dir = "reg/r"
  is_reg = true
  [[datasets.subsets]]
  image_dir = "reg/r"
  is_reg = true
  num_repeats = 4
""")
    from kohya_multiplier.planner.plan_input import planner_for_dataset

    config = load_training_config("dataset.toml")
    (dataset,) = config.datasets
    assert [len(s.images) for s in dataset.subsets] == [5, 8]  # training part of the split; reg kept whole; duplicate ignored
    planner, plan_input = planner_for_dataset(dataset, 0)
    assert len(plan_input) == 5 + 5 and plan_input.image_repeats.tolist() == [1] * 10
    assert planner.epoch_length == 10
    assert any("3 of the 8 regularization images are never used" in note for note in config.notes)


def test_dreambooth_regularization_folders_queue_in_sd_scripts_listing_order(monkeypatch):
    """sd-scripts lists --reg_data_dir folders with Path.iterdir() (file-system order); the first
    listed are registered first, so they decide which regularization images are used."""
    from kohya_multiplier.dataset.regularization import stock_image_repeats

    make_folder("train/2_alice", [(512, 512)] * 2)  # 4 training images per epoch
    make_folder("reg/1_a", [(512, 512)] * 3)
    make_folder("reg/1_b", [(512, 512)] * 3)
    listdir = os.listdir

    def file_system_order(path="."):  # what iterdir would give on a file system listing b before a
        names = listdir(path)
        return sorted(names, reverse=True) if os.path.basename(os.path.normpath(path)) == "reg" else names

    monkeypatch.setattr(os, "listdir", file_system_order)
    config = load_training_config(None, CommandLineOptions(train_data_dir="train", reg_data_dir="reg", resolution="512"))
    (dataset,) = config.datasets
    assert [s.name for s in dataset.subsets] == ["2_alice", "1_a", "1_b"]  # shown by name
    assert [r.tolist() for r in stock_image_repeats(dataset)] == [[2, 2], [1, 0, 0], [1, 1, 1]]
