"""Fine-tuning subsets (metadata_file): images, sizes and buckets as each sd-scripts revision finds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from imagegen import make_folder, make_image
from kohya_multiplier.dataset.types import CommandLineOptions
from kohya_multiplier.dataset.config import load_training_config
from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.finetune_metadata import CURRENT, LEGACY, SPLIT, image_path, read_metadata_images, rules_for_layout
from kohya_multiplier.planner.plan_input import plan_input_for_dataset, planner_for_dataset

ALL_RULES = (LEGACY, CURRENT, SPLIT)
LAYOUT_OF = {LEGACY: "v0.9", CURRENT: "strategies", SPLIT: "split"}


pytestmark = pytest.mark.usefixtures("workdir")  # tests/conftest.py: each test in its own empty folder


def write_json(name: str, data) -> str:
    with open(name, "w") as handle:
        json.dump(data, handle)
    return name


def load(text: str, rules: str = SPLIT, **options):
    with open("dataset.toml", "w") as handle:
        handle.write(textwrap.dedent(text))
    return load_training_config("dataset.toml", CommandLineOptions(sd_scripts_layout=LAYOUT_OF[rules], **options))


def error_of(text: str, rules: str = SPLIT) -> str:
    with pytest.raises(UserError) as info:
        load(text, rules)
    assert "\n" not in str(info.value)
    return str(info.value)


HEAD = "[general]\nresolution = 512\nenable_bucket = true\n"


def subset(metadata: str, image_dir: str | None = "img", **keys) -> str:
    lines = ["[[datasets.subsets]]", f"metadata_file = {json.dumps(metadata)}"]
    if image_dir is not None:
        lines.append(f"image_dir = {json.dumps(image_dir)}")
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


# --- which image a key means ------------------------------------------------------------------


def test_rules_follow_the_code_layout():
    assert [rules_for_layout(layout) for layout in ("v0.9", "strategies", "split", None)] == [LEGACY, CURRENT, SPLIT, SPLIT]


def test_key_resolution_per_revision(workdir):
    make_folder("img", [(64, 64)] * 2)  # img/img0000.png, img/img0001.png
    with_ext, stem = "img0000.png", "img0001"
    # v0.10-main joins the key to image_dir as written; v0.11 also finds a stem's image; v0.9 only finds stems
    assert image_path(with_ext, "img", CURRENT) == str(workdir / "img" / with_ext)
    assert image_path(stem, "img", CURRENT) == str(workdir / "img" / stem)  # no such file: sd-scripts fails on it
    assert image_path(stem, "img", SPLIT) == str(workdir / "img" / "img0001.png")
    assert image_path(stem, "img", LEGACY) == str(workdir / "img" / "img0001.png")
    assert image_path(with_ext, "img", LEGACY) is None  # v0.9 looks for img0000.png.png
    assert image_path(os.path.join("img", with_ext), None, LEGACY) == str(workdir / "img" / with_ext)  # a path as it stands
    absolute = str(workdir / "img" / with_ext)
    for rules in (CURRENT, SPLIT):
        assert image_path(absolute, None, rules) == absolute
        assert image_path(with_ext, None, rules) is None  # relative key without image_dir


def test_a_v09_key_with_only_a_latent_cache_is_an_image(workdir):
    os.makedirs("img")
    open("img/only_latents.npz", "wb").close()
    assert image_path("only_latents", "img", LEGACY) == str(workdir / "img" / "only_latents")


# --- sizes --------------------------------------------------------------------------------------


def test_sizes_per_revision(workdir):
    make_folder("img", [(640, 384), (512, 512)])
    keys = {LEGACY: ["img0000", "img0001"], CURRENT: ["img0000.png", "img0001.png"], SPLIT: ["img0000", "img0001.png"]}
    for rules in ALL_RULES:
        a, b = keys[rules]
        write_json("m.json", {a: {"image_size": [100, 200], "train_resolution": [448, 320]}, b: {}})
        found = read_metadata_images("m.json", "img", rules=rules, file=None, where="s")
        sizes = [(e.width, e.height) for e in found.images]
        expected = {LEGACY: (448, 320), CURRENT: (100, 200), SPLIT: (100, 200)}[rules]
        assert sizes == [expected, (512, 512)], rules  # the entry's own key, else the header
        assert found.from_train_resolution is False


def test_size_from_the_name_of_a_latent_cache(workdir):
    os.makedirs("img")
    open("img/gone_0768x0512_sd.npz", "wb").close()
    write_json("m.json", {"gone.png": {"caption": "x"}})
    found = read_metadata_images("m.json", "img", rules=CURRENT, file=None, where="s")
    assert [(e.width, e.height) for e in found.images] == [(768, 512)]


def test_json_lines_metadata(workdir):
    make_folder("img", [(64, 64)] * 3)
    lines = [{"image_path": "img0000.png", "caption": "a", "image_size": [640, 384]},
             {"image_path": "img0001.png", "width": 384, "height": 640}, {"image_path": "img0002.png"}]
    with open("m.jsonl", "w") as handle:
        handle.write("\n".join(json.dumps(line) for line in lines) + "\n")
    split = read_metadata_images("m.jsonl", "img", rules=SPLIT, file=None, where="s")
    assert [(e.width, e.height) for e in split.images] == [(640, 384), (384, 640), (64, 64)]
    current = read_metadata_images("m.jsonl", "img", rules=CURRENT, file=None, where="s")
    assert [(e.width, e.height) for e in current.images] == [(640, 384), (64, 64), (64, 64)]  # width/height: v0.11 only
    with pytest.raises(UserError, match="JSON syntax error"):  # v0.9 parses every metadata file as JSON
        read_metadata_images("m.jsonl", "img", rules=LEGACY, file=None, where="s")


# --- the dataset config ---------------------------------------------------------------------------


def test_multipliers_plan_a_fine_tuning_dataset(workdir):
    make_folder("img", [(640, 384)] * 4 + [(384, 640)] * 2)
    write_json("a.json", {f"img{i:04d}.png": {"caption": "a"} for i in range(4)})
    write_json("b.json", {f"img{i:04d}.png": {"caption": "b"} for i in (4, 5)})
    config = load(HEAD + "[[datasets]]\nbatch_size = 2\n" + subset("a.json", multiplier=0.5) + subset("b.json", multiplier=2.0))
    dataset = config.datasets[0]
    assert dataset.fine_tuning and dataset.uses_multiplier
    assert [(s.name, len(s.images), s.effective_multiplier) for s in dataset.subsets] == [("a.json", 4, 0.5), ("b.json", 2, 2.0)]
    planner, plan_input = planner_for_dataset(dataset, seed=3)
    assert plan_input.bucket_resolutions == [(384, 640), (640, 384)]
    for epoch in (1, 2, 7):
        images = [plan_input.image_keys[i] for i in planner.plan_epoch(epoch).image_indices]
        assert sum("img000" in p and int(p[-5]) < 4 for p in images) == 2  # 0.5 x 4
        assert sum(p.endswith(("img0004.png", "img0005.png")) for p in images) == 4  # 2 x 2


def test_v09_train_resolution_everywhere_makes_the_buckets(workdir):
    make_folder("img", [(1000, 600)] * 3)
    write_json("m.json", {"img0000": {"train_resolution": [640, 384]}, "img0001": {"train_resolution": [640, 384]},
                          "img0002": {"train_resolution": [600, 360]}})  # 600x360 is in no bucket list of steps 64
    dataset = load(HEAD + "[[datasets]]\n" + subset("m.json", multiplier=1.5), rules=LEGACY).datasets[0]
    assert dataset.predefined_buckets
    plan_input = plan_input_for_dataset(dataset)
    assert plan_input.bucket_resolutions == [(600, 360), (640, 384)]
    # not every image has one: sd-scripts buckets by size, taking train_resolution as the size where given
    write_json("m.json", {"img0000": {"train_resolution": [640, 384]}, "img0001": {}, "img0002": {}})
    mixed = load(HEAD + "[[datasets]]\n" + subset("m.json", multiplier=1.5), rules=LEGACY).datasets[0]
    assert not mixed.predefined_buckets
    assert [(e.width, e.height) for e in mixed.subsets[0].images] == [(640, 384), (1000, 600), (1000, 600)]
    # at v0.10 and later train_resolution is not read: all sizes come from the headers
    write_json("m.json", {f"img000{i}.png": {"train_resolution": [640, 384]} for i in range(3)})
    later = load(HEAD + "[[datasets]]\n" + subset("m.json", multiplier=1.5), rules=CURRENT).datasets[0]
    assert not later.predefined_buckets and {(e.width, e.height) for e in later.subsets[0].images} == {(1000, 600)}


def test_v09_train_resolution_refuses_bucket_no_upscale(workdir):
    make_folder("img", [(64, 64)])
    write_json("m.json", {"img0000": {"train_resolution": [64, 64]}})
    message = error_of(HEAD + "bucket_no_upscale = true\n[[datasets]]\n" + subset("m.json", multiplier=1.0), rules=LEGACY)
    assert message.startswith("dataset.toml: general: bucket_no_upscale: cannot be used when every image of the metadata has train_resolution")


@pytest.mark.parametrize(
    "body, message",
    [
        (subset("m.json") + '[[datasets.subsets]]\nimage_dir = "img"\n',
         "datasets[0]: subsets: DreamBooth subsets (image_dir only) and fine-tuning subsets (metadata_file) cannot be mixed in one dataset"),
        (subset("m.json", is_reg=True), "datasets[0].subsets[0] (m.json): is_reg: not allowed in a fine-tuning subset (one with metadata_file)"),
        ('caption_extension = ".txt"\n' + subset("m.json"),
         "datasets[0]: caption_extension: not allowed in a dataset of fine-tuning subsets (metadata_file)"),
        (subset("missing.json"), "datasets[0].subsets[0] (missing.json): metadata_file: metadata file not found: {cwd}/missing.json"),
        (subset("abs.json", image_dir=None), "datasets[0].subsets[0] (abs.json): image_dir: abs.json: image key 'img0000.png' is not a file"),
        (subset("broken.json"), "datasets[0].subsets[0] (broken.json): metadata_file: broken.json: JSON syntax error"),
        (subset("badsize.json"), "datasets[0].subsets[0] (badsize.json): metadata_file: badsize.json: 'img0000.png': image_size must be [width, height]"),
        (subset("noimage.json"), "datasets[0].subsets[0] (noimage.json): metadata_file: noimage.json: no image for 'nothere.png'"),
    ],
)
def test_fine_tuning_errors_are_one_line(workdir, body, message):
    make_folder("img", [(64, 64)])
    write_json("m.json", {"img0000.png": {}})
    write_json("abs.json", {"img0000.png": {}})
    write_json("badsize.json", {"img0000.png": {"image_size": "64x64"}})
    write_json("noimage.json", {"nothere.png": {"caption": "x"}})
    with open("broken.json", "w") as handle:
        handle.write("{")
    shown = error_of(HEAD + "[[datasets]]\n" + body)
    assert shown.startswith("dataset.toml: " + message.format(cwd=workdir)), shown


def test_duplicate_metadata_file_and_ignored_options(workdir):
    make_folder("img", [(64, 64)] * 4)
    write_json("m.json", {f"img000{i}.png": {} for i in range(4)})
    with open("img/multiply.txt", "w") as handle:
        handle.write("3")  # an image folder's multiply.txt is not a metadata dataset's
    with open("img/loss_scale.txt", "w") as handle:
        handle.write("0.5")
    config = load(HEAD + "[[datasets]]\nvalidation_split = 0.5\nvalidation_seed = 1\n" + subset("m.json") + subset("m.json", multiplier=2.0))
    (only,) = config.datasets[0].subsets
    assert len(only.images) == 4  # sd-scripts' fine-tuning dataset ignores validation_split
    assert only.effective_multiplier == 1.0 and only.loss_weight.value == 0.5
    assert any("the same metadata_file as an earlier subset" in note for note in config.notes)


def test_skip_image_resolution_filters_by_metadata_size(workdir):
    make_folder("img", [(64, 64)] * 3)
    write_json("m.json", {"img0000.png": {"image_size": [1024, 1024]}, "img0001.png": {}, "img0002.png": {"image_size": [512, 256]}})
    config = load(HEAD + "skip_image_resolution = 300\n[[datasets]]\n" + subset("m.json", multiplier=1.0))
    assert [os.path.basename(e.path) for e in config.datasets[0].subsets[0].images] == ["img0000.png", "img0002.png"]
    assert any("skip_image_resolution 300x300: 1 of 3 images" in note for note in config.notes)


def test_in_json_on_the_command_line_is_sd_scripts_own_config(workdir):
    make_folder("img", [(512, 512)] * 3)
    write_json("m.json", {f"img000{i}.png": {"caption": "c"} for i in range(3)})
    config = load_training_config(None, CommandLineOptions(in_json="m.json", train_data_dir="img", resolution="512", dataset_repeats=2))
    (dataset,) = config.datasets
    assert dataset.fine_tuning and not dataset.uses_multiplier
    assert [(s.name, len(s.images), s.effective_multiplier) for s in dataset.subsets] == [("m.json", 3, 2.0)]


def test_plan_reads_fine_tuning_configs(workdir):
    make_folder("img", [(512, 512)] * 4)
    write_json("m.json", {f"img000{i}.png": {"caption": "c"} for i in range(4)})
    with open("dataset.toml", "w") as handle:
        handle.write(HEAD + "[[datasets]]\n" + subset("m.json", multiplier=0.75))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-m", "kohya_multiplier", "plan", "dataset.toml", "--epochs", "4"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "m.json" in result.stdout and "0.75 (subset)" in result.stdout
    with open("dataset.toml", "a") as handle:
        handle.write('[[datasets.subsets]]\nimage_dir = "img"\n')
    failed = subprocess.run([sys.executable, "-m", "kohya_multiplier", "plan", "dataset.toml"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1 and "cannot be mixed" in failed.stderr


def test_outputs_never_touch_metadata_files_or_the_images_they_name(workdir):
    make_folder("far/away", [(512, 512)] * 2)
    write_json("m.json", {str(workdir / "far" / "away" / f"img000{i}.png"): {} for i in range(2)})
    with open("dataset.toml", "w") as handle:
        handle.write(HEAD + "[[datasets]]\n" + subset("m.json", image_dir=None, multiplier=0.5))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def plan(*args):
        return subprocess.run([sys.executable, "-m", "kohya_multiplier", "plan", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    onto_metadata = plan("dataset.toml", "--schedule", "m.json")
    assert onto_metadata.returncode == 2 and "is a fine-tuning metadata file of the dataset" in onto_metadata.stderr
    into_images = plan("dataset.toml", "--schedule", "far/away/plan.jsonl")
    assert into_images.returncode == 2 and "is inside the image folder" in into_images.stderr
    beside = plan("dataset.toml", "--schedule", "plan.jsonl")  # the metadata file's folder is not an image folder
    assert beside.returncode == 0, beside.stderr
    in_json = plan("--in_json", "m.json", "--resolution", "512", "--schedule", "m.json")
    assert in_json.returncode == 2 and "is a fine-tuning metadata file" in in_json.stderr
