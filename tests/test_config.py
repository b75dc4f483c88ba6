"""Reading dataset configs and DreamBooth folders: precedence, multiply.txt, regularization,
sd-scripts' schema, and the exact text of every user error."""

from __future__ import annotations

import argparse
import json
import os
import random
import textwrap

import pytest

from imagegen import make_folder, make_image
from kohya_multiplier import errors
from kohya_multiplier.commands.dataset_options import add_dataset_arguments, options_from_args
from kohya_multiplier.dataset.types import CommandLineOptions
from kohya_multiplier.dataset.config import config_from_dict, load_training_config
from kohya_multiplier.errors import UserError


pytestmark = pytest.mark.usefixtures("workdir")  # tests/conftest.py: each test in its own empty folder


def folders(**counts):
    """make_folder for each name=count (names use / via __)."""
    for name, count in counts.items():
        make_folder(name.replace("__", "/"), [(512, 512)] * count)


def write_toml(text: str, name: str = "dataset.toml") -> str:
    with open(name, "w") as handle:
        handle.write(textwrap.dedent(text))
    return name


def load(text: str, options: CommandLineOptions | None = None):
    return load_training_config(write_toml(text), options or CommandLineOptions())


def error_of(text: str, options: CommandLineOptions | None = None) -> str:
    with pytest.raises(UserError) as info:
        load(text, options)
    message = str(info.value)
    assert "\n" not in message
    return message


HEAD = """\
[general]
resolution = 512
"""


# ---------------------------------------------------------------------------------------------
# precedence


def test_multiplier_precedence_three_levels():
    folders(train__a=4, train__b=4, train__c=4, train__d=4)
    config = load(
        HEAD
        + """
        multiplier = 3
        [[datasets]]
        multiplier = 2
          [[datasets.subsets]]
          image_dir = "train/a"
          multiplier = 0.5
          [[datasets.subsets]]
          image_dir = "train/b"
        [[datasets]]
          [[datasets.subsets]]
          image_dir = "train/c"
          [[datasets.subsets]]
          image_dir = "train/d"
          num_repeats = 4
        """
    )
    got = [(s.name, s.multiplier, s.multiplier_origin, s.effective_multiplier, s.effective_origin) for d in config.datasets for s in d.subsets]
    assert got == [
        ("a", 0.5, "subset", 0.5, "multiplier (subset)"),
        ("b", 2.0, "dataset", 2.0, "multiplier (dataset)"),
        ("c", 3.0, "general", 3.0, "multiplier (general)"),
        ("d", None, "", 4.0, "num_repeats"),  # the more specific num_repeats wins over [general] multiplier
    ]
    assert [d.uses_multiplier for d in config.datasets] == [True, True]


def test_num_repeats_only_is_stock():
    folders(train__a=3, reg__r=10)
    config = load(
        HEAD
        + """
        num_repeats = 2
        [[datasets]]
          [[datasets.subsets]]
          image_dir = "train/a"
          [[datasets.subsets]]
          image_dir = "reg/r"
          is_reg = true
        """
    )
    (d,) = config.datasets
    assert config.notes == [
        "dataset.toml: datasets[0]: no multiplier in this dataset, so sd-scripts trains it as usual: it repeats "
        "regularization images one by one to match the 6 training images per epoch, and 7 of the 10 regularization "
        "images are never used; a multiplier on any subset of the dataset makes all of them rotate through training"
    ]
    assert not d.uses_multiplier
    assert [(s.num_repeats, s.effective_multiplier, s.effective_origin, s.is_reg) for s in d.subsets] == [
        (2, 2.0, "num_repeats", False),
        (2, 2.0, "num_repeats", True),
    ]


def test_dataset_options_file_wins_over_command_line_then_defaults():
    folders(a=2)
    options = CommandLineOptions(train_batch_size=8, resolution="640,448", enable_bucket=True, min_bucket_reso=128,
                                 max_bucket_reso=2048, bucket_reso_steps=32, bucket_no_upscale=True)
    config = load(
        """
        [general]
        batch_size = 2
        [[datasets]]
        min_bucket_reso = 320
          [[datasets.subsets]]
          image_dir = "a"
        """,
        options,
    )
    d = config.datasets[0]
    assert (d.batch_size, d.resolution, d.enable_bucket, d.min_bucket_reso, d.max_bucket_reso, d.bucket_reso_steps, d.bucket_no_upscale) == (
        2, (640, 448), True, 320, 2048, 32, True)
    plain = load(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n').datasets[0]
    assert (plain.batch_size, plain.enable_bucket, plain.min_bucket_reso, plain.max_bucket_reso, plain.bucket_reso_steps,
            plain.bucket_no_upscale) == (1, False, 256, 1024, 64, False)


def test_false_in_file_wins_over_true_on_command_line():
    folders(a=1)
    config = load(HEAD + 'enable_bucket = false\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n',
                  CommandLineOptions(enable_bucket=True))
    assert config.datasets[0].enable_bucket is False


@pytest.mark.parametrize(
    "toml_value, cli, expected",
    [("512", None, (512, 512)), ("[768, 512]", None, (768, 512)), (None, "640", (640, 640)), (None, "640,384", (640, 384)),
     ("1024", "640", (1024, 1024))],
)
def test_resolution(toml_value, cli, expected):
    folders(a=1)
    head = f"[general]\nresolution = {toml_value}\n" if toml_value else ""
    config = load(head + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n', CommandLineOptions(resolution=cli))
    assert config.datasets[0].resolution == expected


def test_dataset_repeats_is_the_num_repeats_fallback():
    folders(a=1)
    config = load(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n', CommandLineOptions(dataset_repeats=3))
    assert config.datasets[0].subsets[0].num_repeats == 3


def test_relative_image_dir_is_relative_to_the_working_directory(workdir):
    folders(data__a=2)
    os.makedirs("configs")
    path = write_toml(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "data/a"\n', "configs/d.toml")
    config = load_training_config(path, CommandLineOptions())
    s = config.datasets[0].subsets[0]
    assert s.image_dir == str(workdir / "data" / "a")
    assert s.table == "datasets[0].subsets[0] (data/a)"
    assert [os.path.basename(i.path) for i in s.images] == ["img0000.png", "img0001.png"]
    assert all(os.path.isabs(i.path) for i in s.images)


def test_json_config():
    folders(a=2)
    with open("d.json", "w") as handle:
        json.dump({"general": {"resolution": [512, 512]}, "datasets": [{"subsets": [{"image_dir": "a", "multiplier": 0.5}]}]}, handle)
    config = load_training_config("d.json", CommandLineOptions())
    assert config.datasets[0].subsets[0].multiplier == 0.5


# ---------------------------------------------------------------------------------------------
# multiply.txt


def test_multiply_txt_precedence():
    folders(a=2, b=2, c=2, d=2)
    for name in "abcd":
        with open(f"{name}/multiply.txt", "w") as handle:
            handle.write("0.3\n")
    config = load(
        HEAD
        + """
        num_repeats = 5
        [[datasets]]
          [[datasets.subsets]]
          image_dir = "a"
          [[datasets.subsets]]
          image_dir = "b"
          num_repeats = 2
          [[datasets.subsets]]
          image_dir = "c"
          multiplier = 0.7
        [[datasets]]
        multiplier = 1.5
          [[datasets.subsets]]
          image_dir = "d"
        """
    )
    got = [(s.name, s.effective_multiplier, s.effective_origin) for d in config.datasets for s in d.subsets]
    assert got == [
        ("a", 0.3, "multiplier (multiply.txt)"),  # overrides an inherited num_repeats
        ("b", 2.0, "num_repeats"),  # the subset's own num_repeats wins
        ("c", 0.7, "multiplier (subset)"),
        ("d", 1.5, "multiplier (dataset)"),  # an inherited multiplier wins
    ]


# ---------------------------------------------------------------------------------------------
# regularization


def test_auto_regularization_multiplier():
    folders(train__a=10, train__b=7, reg__p=30, reg__q=10)
    config = load(
        HEAD
        + """
        [[datasets]]
          [[datasets.subsets]]
          image_dir = "train/a"
          multiplier = 0.5
          [[datasets.subsets]]
          image_dir = "train/b"
          num_repeats = 2
          [[datasets.subsets]]
          image_dir = "reg/p"
          is_reg = true
          [[datasets.subsets]]
          image_dir = "reg/q"
          is_reg = true
          multiplier = 0.4
        """
    )
    subsets = config.datasets[0].subsets
    # T = 0.5*10 + 2*7 = 19; R_explicit = 0.4*10 = 4; auto = 15 / 30
    assert subsets[2].effective_multiplier == pytest.approx(0.5)
    assert subsets[2].effective_origin == "auto (regularization)"
    assert subsets[2].multiplier is None
    assert subsets[3].effective_multiplier == 0.4
    assert config.notes == [
        "dataset.toml: datasets[0]: regularization subsets without a multiplier get 0.5 so that regularization "
        "images per epoch match training images per epoch"
    ]


# ---------------------------------------------------------------------------------------------
# DreamBooth folders


def test_folder_mode(capsys):
    make_folder("db/10_alice", [(512, 512)] * 3)
    make_folder("db/0.25_bob", [(512, 512)] * 8)
    make_folder("db/1_carol", [(512, 512)] * 5)
    make_folder("db/0.5_dave", [(512, 512)] * 4)
    make_folder("db/nope", [(512, 512)] * 2)
    make_folder("db/0_zero", [(512, 512)] * 2)
    make_folder("dbreg/1_person", [(512, 512)] * 20)
    with open("db/1_carol/multiply.txt", "w") as handle:
        handle.write("0.2")
    with open("db/0.5_dave/multiply.txt", "w") as handle:
        handle.write("3")
    open("db/1_notadir.png", "w").close()
    options = CommandLineOptions(train_data_dir="db", reg_data_dir="dbreg", resolution="512")
    config = load_training_config(None, options)
    assert config.source == "--train_data_dir db --reg_data_dir dbreg"
    got = [(s.table, s.name, len(s.images), s.effective_multiplier, s.effective_origin, s.is_reg) for s in config.datasets[0].subsets]
    assert got == [
        ("db/0.25_bob", "0.25_bob", 8, 0.25, "multiplier (folder name)", False),
        ("db/0.5_dave", "0.5_dave", 4, 0.5, "multiplier (folder name)", False),  # the fraction in the name wins
        ("db/10_alice", "10_alice", 3, 10.0, "num_repeats", False),
        ("db/1_carol", "1_carol", 5, 0.2, "multiplier (multiply.txt)", False),  # overrides the integer prefix
        # T = 0.25*8 + 0.5*4 + 10*3 + 0.2*5 = 35 training images per epoch over 20 regularization images
        ("dbreg/1_person", "1_person", 20, pytest.approx(35 / 20), "auto (regularization)", True),
    ]
    # "0_zero" (repeats < 1) and "nope" are dropped, as sd-scripts drops them, and both are listed in the notes;
    # multiply.txt of 0.5_dave loses to the fraction in its name, and says so
    assert [n for n in config.notes if "ignored" in n] == [
        "db/0_zero: ignored: its repeat prefix 0 is below 1 (sd-scripts ignores it too)",
        "db/nope: ignored: the folder name has no repeat prefix sd-scripts accepts, such as 10_name or 0.25_name "
        "(sd-scripts ignores it too)",
        "db/0.5_dave: multiply.txt ignored: multiplier 0.5 from its folder name wins",
    ]
    assert capsys.readouterr().err == ""


def test_folder_mode_values():
    make_folder("db/10_alice", [(512, 512)] * 3)
    make_folder("db/0.25_bob", [(512, 512)] * 8)
    make_folder("reg/1_person", [(512, 512)] * 20)
    config = load_training_config(None, CommandLineOptions(train_data_dir="db", reg_data_dir="reg", resolution="512"))
    subsets = config.datasets[0].subsets
    assert [(s.name, s.effective_multiplier) for s in subsets] == [
        ("0.25_bob", 0.25),
        ("10_alice", 10.0),
        ("1_person", pytest.approx((0.25 * 8 + 10 * 3) / 20)),
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        (CommandLineOptions(resolution="512"), "no dataset: give a dataset config file, --train_data_dir or --in_json"),
        (CommandLineOptions(train_data_dir="nothere", resolution="512"), "train_data_dir: directory not found: {cwd}/nothere"),
        (CommandLineOptions(train_data_dir="flat", resolution="512"),
         "train_data_dir: no subset folders named <repeats>_<name> (such as 10_alice or 0.25_alice) in {cwd}/flat"),
        (CommandLineOptions(train_data_dir="db", reg_data_dir="r.png", resolution="512"), "reg_data_dir: not a directory: {cwd}/r.png"),
        (CommandLineOptions(in_json="meta.json", train_data_dir="db"), "in_json: metadata file not found: {cwd}/meta.json"),
    ],
)
def test_folder_mode_errors(workdir, options, message):
    make_folder("db/1_a", [(512, 512)])
    make_folder("flat", [(512, 512)])
    open("r.png", "w").close()
    with pytest.raises(UserError) as info:
        load_training_config(None, options)
    assert str(info.value) == message.format(cwd=workdir)


# ---------------------------------------------------------------------------------------------
# exclusion, duplicates


def test_excluded_subsets_are_noted_and_may_be_missing():
    folders(a=3)
    config = load(
        HEAD
        + """
        [[datasets]]
          [[datasets.subsets]]
          image_dir = "a"
          [[datasets.subsets]]
          image_dir = "gone"
          multiplier = 0
          [[datasets.subsets]]
          image_dir = "a2"
          num_repeats = 0
          [[datasets.subsets]]
          image_dir = "a"
          multiplier = -1
        """
    )
    subsets = config.datasets[0].subsets
    assert [(s.table, s.excluded, len(s.images)) for s in subsets] == [
        ("datasets[0].subsets[0] (a)", False, 3),
        ("datasets[0].subsets[1] (gone)", True, 0),
        ("datasets[0].subsets[2] (a2)", True, 0),
        ("datasets[0].subsets[3] (a)", True, 3),
    ]
    assert config.notes == [
        "dataset.toml: datasets[0].subsets[1] (gone): excluded (multiplier 0 from subset)",
        "dataset.toml: datasets[0].subsets[2] (a2): excluded (num_repeats 0)",
        "dataset.toml: datasets[0].subsets[3] (a): excluded (multiplier -1 from subset)",
    ]


def test_duplicate_image_dir_is_ignored_like_sd_scripts():
    folders(a=3)
    config = load(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n[[datasets.subsets]]\nimage_dir = "a"\nmultiplier = 2\n')
    assert len(config.datasets[0].subsets) == 1
    assert config.notes == [
        "dataset.toml: datasets[0].subsets[1] (a): ignored: the same image_dir as an earlier subset of this dataset (as sd-scripts does)"
    ]


# ---------------------------------------------------------------------------------------------
# sd-scripts' schema


def test_every_key_sd_scripts_accepts_is_accepted():
    folders(a=2)
    common = textwrap.dedent(
        """\
        color_aug = false
        face_crop_aug_range = [2.0, 4.0]
        flip_aug = true
        random_crop = false
        shuffle_caption = true
        keep_tokens = 1
        keep_tokens_separator = "|||"
        secondary_separator = ";;;"
        caption_separator = ","
        enable_wildcard = false
        token_warmup_min = 1
        token_warmup_step = 0
        caption_prefix = "a photo of"
        caption_suffix = "."
        resize_interpolation = "lanczos"
        caption_extension = ".txt"
        class_tokens = "sks"
        cache_info = false
        caption_dropout_every_n_epochs = 0
        caption_dropout_rate = 0.05
        caption_tag_dropout_rate = 0
        """
    )
    dataset_only = textwrap.dedent(
        """\
        batch_size = 2
        bucket_no_upscale = false
        bucket_reso_steps = 64
        enable_bucket = true
        max_bucket_reso = 1024
        min_bucket_reso = 256
        validation_seed = 1
        validation_split = 0.0
        resolution = [512, 512]
        network_multiplier = 1.0
        """
    )
    text = (
        "[general]\n" + common + dataset_only + "\n[[datasets]]\n" + common + dataset_only
        + '\n[[datasets.subsets]]\nimage_dir = "a"\nis_reg = false\nalpha_mask = false\nnum_repeats = 1\n' + common
        + "[datasets.subsets.custom_attributes]\nstyle = 1\n"
    )
    config = load(text)
    assert config.datasets[0].batch_size == 2


@pytest.mark.parametrize(
    "body, message",
    [
        ('multipler = 0.5', "datasets[0].subsets[0] (a): multipler: unknown key (sd-scripts rejects it); did you mean multiplier?"),
        ('batch_size = 2', "datasets[0].subsets[0] (a): batch_size: not allowed in [[datasets.subsets]]; sd-scripts accepts it only in [[datasets]] and [general]"),
        ('recursive = true', "datasets[0].subsets[0] (a): recursive: unknown key (sd-scripts rejects it)"),
        ('is_reg = true\n[[datasets.subsets]]\nmetadata_file = "m.json"', "datasets[0]: subsets: DreamBooth subsets (image_dir only) and fine-tuning subsets (metadata_file) cannot be mixed in one dataset (sd-scripts refuses it); split them into two [[datasets]]"),
        ('[[datasets.subsets]]\nimage_dir = "a"\nconditioning_data_dir = "c"', "datasets[0].subsets[1] (a): conditioning_data_dir: allowed only when every subset of the dataset has one (a dataset of conditioning subsets, as sd-scripts requires)"),
        ('flip_aug = "yes"', 'datasets[0].subsets[0] (a): flip_aug: must be true or false, not a string ("yes")'),
        ('num_repeats = 2.5', "datasets[0].subsets[0] (a): num_repeats: must be an integer, not a float (2.5); use multiplier for fractional repeats"),
        ('face_crop_aug_range = [2, 4]', "datasets[0].subsets[0] (a): face_crop_aug_range: must be an array of two floats, not an array"),
    ],
)
def test_subset_key_errors(body, message):
    folders(a=1)
    assert error_of(HEAD + f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n{body}\n') == "dataset.toml: " + message


@pytest.mark.parametrize(
    "general, dataset, message",
    [
        ('image_dir = "a"', "", "general: image_dir: not allowed in [general]; sd-scripts accepts it only in [[datasets.subsets]]"),
        ('', 'is_reg = true', "datasets[0]: is_reg: not allowed in [[datasets]]; sd-scripts accepts it only in [[datasets.subsets]]"),
        ('', 'batch_size = "4"', 'datasets[0]: batch_size: must be an integer, not a string ("4")'),
        ('', 'batch_size = 0', "datasets[0]: batch_size: must be at least 1, not 0"),
        ('validation_split = 0', '', "general: validation_split: must be a float (write 1.0, not 1), not an integer (0)"),
        ('resolution = "512,512"', '', 'general: resolution: must be an integer or an array [width, height] of integers, not a string ("512,512")'),
        ('network_multiplier = 1', '', "general: network_multiplier: must be a float (write 1.0, not 1), not an integer (1)"),
    ],
)
def test_dataset_and_general_key_errors(general, dataset, message):
    folders(a=1)
    text = f"[general]\nresolution = 512\n{general}\n[[datasets]]\n{dataset}\n[[datasets.subsets]]\nimage_dir = \"a\"\n"
    if general.startswith("resolution"):
        text = f"[general]\n{general}\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = \"a\"\n"
    assert error_of(text) == "dataset.toml: " + message


@pytest.mark.parametrize(
    "text, message",
    [
        ('[other]\nx = 1\n', "dataset.toml: other: unknown key (sd-scripts rejects it)"),
        ('[general]\nresolution = 512\n', "dataset.toml: datasets: no datasets: add at least one [[datasets]] with [[datasets.subsets]]"),
        ('[[datasets]]\nbatch_size = 1\n', "dataset.toml: datasets[0]: subsets: no subsets: add at least one [[datasets.subsets]] with an image_dir"),
        ('[[datasets]]\n[[datasets.subsets]]\nis_reg = true\n', "dataset.toml: datasets[0].subsets[0]: image_dir: missing: every subset needs the folder of its images"),
        ('[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n', "dataset.toml: datasets[0]: resolution: required: set it in [general] or [[datasets]], or pass --resolution"),
        ('datasets = 3\n', "dataset.toml: datasets: must be an array of tables ([[datasets]]), not an integer (3)"),
    ],
)
def test_structure_errors(text, message):
    folders(a=1)
    assert error_of(text) == message


# ---------------------------------------------------------------------------------------------
# golden messages of issue 2 item 7


SUBSET = 'datasets[0].subsets[0] (train/alice)'


@pytest.mark.parametrize(
    "value, message",
    [
        ('"0.5"', f'dataset.toml: {SUBSET}: multiplier: must be a number, not a string ("0.5")'),
        ("nan", f"dataset.toml: {SUBSET}: multiplier: must be a finite number, not nan"),
        ("inf", f"dataset.toml: {SUBSET}: multiplier: must be a finite number, not inf"),
        ("-inf", f"dataset.toml: {SUBSET}: multiplier: must be a finite number, not -inf"),
        ("true", f"dataset.toml: {SUBSET}: multiplier: must be a number, not a boolean (true)"),
        ("[0.5]", f"dataset.toml: {SUBSET}: multiplier: a schedule is a table of epoch = value points, e.g. "
                  "{ 1 = 0.5, 20 = 0.1 } (sd-scripts' TOML reader refuses lists that mix integers and floats); not an array"),
        ('{ 1 = 0.5, x = 2 }', f"dataset.toml: {SUBSET}: multiplier: a schedule's keys are epochs from 1 to 10,000 "
                               "(and step = true); not 'x'"),
    ],
)
def test_golden_bad_multiplier(value, message):
    folders(train__alice=2)
    assert error_of(HEAD + f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\nmultiplier = {value}\n') == message


def test_golden_bad_multiplier_in_general_and_dataset():
    folders(train__alice=2)
    assert error_of(HEAD + 'multiplier = "x"\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\n') == \
        'dataset.toml: general: multiplier: must be a number, not a string ("x")'
    assert error_of(HEAD + '[[datasets]]\nmultiplier = nan\n[[datasets.subsets]]\nimage_dir = "train/alice"\n') == \
        "dataset.toml: datasets[0]: multiplier: must be a finite number, not nan"


def test_golden_both_keys_in_one_table():
    folders(train__alice=2)
    assert error_of(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\nmultiplier = 0.5\nnum_repeats = 2\n') == (
        f"dataset.toml: {SUBSET}: multiplier: cannot be combined with num_repeats in the same table; use one of them"
    )
    assert error_of('[general]\nresolution = 512\nmultiplier = 0.5\nnum_repeats = 2\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\n') == (
        "dataset.toml: general: multiplier: cannot be combined with num_repeats in the same table; use one of them"
    )


def test_golden_missing_and_empty_image_dir(workdir):
    os.makedirs("train/empty")
    open("train/empty/readme.txt", "w").close()
    assert error_of(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\n') == (
        f"dataset.toml: {SUBSET}: image_dir: directory not found: {workdir}/train/alice"
    )
    assert error_of(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/empty"\n') == (
        f"dataset.toml: datasets[0].subsets[0] (train/empty): image_dir: no images found in {workdir}/train/empty "
        "(looked for .png, .jpg, .jpeg, .webp, .bmp)"
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ("abc", 'train/alice/multiply.txt: must hold one number, not "abc"'),
        ("", "train/alice/multiply.txt: must hold one number, but is empty"),
        ("1 2", 'train/alice/multiply.txt: must hold one number, not "1 2"'),
        ("nan", 'train/alice/multiply.txt: must hold a finite number, not "nan"'),
    ],
)
def test_golden_bad_multiply_txt(content, message):
    folders(train__alice=2)
    with open("train/alice/multiply.txt", "w") as handle:
        handle.write(content)
    assert error_of(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\n') == message


@pytest.mark.parametrize(
    "text, message",
    [
        ("[general]\nresolution = 512\n[[datasets]\n", "dataset.toml: line 3, column 11: TOML syntax error: Expected ']]' at the end of an array declaration"),
        ("[general]\nresolution = \n", "dataset.toml: line 2, column 14: TOML syntax error: Invalid value"),
        ("[general]\nresolution = 512\nresolution = 768\n", "dataset.toml: line 3, column 17: TOML syntax error: Cannot overwrite a value"),
        ('[general]\nx = "unterminated\n', "dataset.toml: line 2, column 18: TOML syntax error: Illegal character '\\n'"),
    ],
)
def test_golden_toml_syntax_error(text, message):
    assert error_of(text) == message


def test_golden_every_subset_excluded():
    folders(train__alice=2, train__bob=2)
    assert error_of(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\nmultiplier = 0\n'
                           '[[datasets.subsets]]\nimage_dir = "train/bob"\nnum_repeats = 0\n') == (
        "dataset.toml: datasets[0]: every subset is excluded (multiplier or num_repeats <= 0); nothing to train"
    )
    assert error_of(HEAD + 'multiplier = -1\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\n') == (
        "dataset.toml: datasets[0]: every subset is excluded (multiplier or num_repeats <= 0); nothing to train"
    )


def test_golden_unreadable_images(workdir, capsys):
    make_image("train/alice/ok.png", 512, 512)
    open("train/alice/zero.png", "w").close()
    with open("train/alice/bad.jpg", "wb") as handle:
        handle.write(b"not a jpeg")
    config = load(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\n')
    assert [os.path.basename(i.path) for i in config.datasets[0].subsets[0].images] == ["ok.png"]
    assert capsys.readouterr().err.splitlines() == [
        f"kohya-multiplier: warning: {SUBSET}: skipping 2 unreadable or empty image files: "
        f"{workdir}/train/alice/bad.jpg (size not readable from header), {workdir}/train/alice/zero.png (empty file)"
    ]
    os.remove("train/alice/ok.png")
    errors._warned.clear()
    assert error_of(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/alice"\n') == (
        f"dataset.toml: {SUBSET}: image_dir: none of the 2 image files in {workdir}/train/alice could be read (see the warning above)"
    )


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.toml", None, "missing.toml: file not found"),
        ("d.yaml", "a: 1", "d.yaml: unsupported config file format: sd-scripts reads .toml or .json dataset configs"),
        ("d.json", "{bad", "d.json: line 1, column 2: JSON syntax error: Expecting property name enclosed in double quotes"),
        ("d.json", "[1]", "d.json: must hold an object with general and datasets, not an array"),
    ],
)
def test_golden_config_file_errors(name, content, message):
    if content is not None:
        with open(name, "w") as handle:
            handle.write(content)
    with pytest.raises(UserError) as info:
        load_training_config(name, CommandLineOptions())
    assert str(info.value) == message


# ---------------------------------------------------------------------------------------------
# validation split, cache_info


def test_validation_split_reproduces_sd_scripts(workdir):
    make_folder("train/a", [(512, 512)] * 10)
    make_folder("reg/r", [(512, 512)] * 4)
    config = load(HEAD + 'validation_split = 0.25\nvalidation_seed = 7\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "train/a"\n'
                         '[[datasets.subsets]]\nimage_dir = "reg/r"\nis_reg = true\n')
    paths = sorted(os.path.join(str(workdir), "train", "a", f"img{i:04d}.png") for i in range(10))
    pairs = list(paths)
    random.Random(7).shuffle(pairs)  # what sd-scripts' split_train_val does with validation_seed
    expected = sorted(pairs[:8])  # ceil(10 * 0.75)
    assert [i.path for i in config.datasets[0].subsets[0].images] == expected
    assert len(config.datasets[0].subsets[1].images) == 4  # regularization images are never split


def test_validation_split_without_seed_is_noted():
    folders(a=4)
    config = load(HEAD + 'validation_split = 0.5\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n')
    assert len(config.datasets[0].subsets[0].images) == 4
    assert config.notes == [
        "dataset.toml: datasets[0].subsets[0] (a): validation_split without validation_seed: sd-scripts splits at random, "
        "so this plan uses all images of the subset"
    ]


def test_cache_info_reads_sizes_from_sd_scripts_cache(workdir):
    make_folder("a", [(512, 512)] * 2)
    with open("a/metadata_cache.json", "w") as handle:
        json.dump({"a/img0000.png": {"caption": "x", "resolution": [640, 480]},
                   "a/img0001.png": {"caption": "y", "resolution": [300, 900]}}, handle)
    config = load(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\ncache_info = true\n')
    assert [(i.width, i.height) for i in config.datasets[0].subsets[0].images] == [(640, 480), (300, 900)]
    plain = load(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n')
    assert [(i.width, i.height) for i in plain.datasets[0].subsets[0].images] == [(512, 512), (512, 512)]


# ---------------------------------------------------------------------------------------------
# command-line options


def test_dataset_arguments_use_sd_scripts_names():
    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser, dataset_config=True)
    args = parser.parse_args(
        ["--train_batch_size", "4", "--resolution", "768,512", "--enable_bucket", "--min_bucket_reso", "320",
         "--max_bucket_reso", "1536", "--bucket_reso_steps", "32", "--bucket_no_upscale", "--train_data_dir", "t",
         "--reg_data_dir", "r", "--seed", "42", "--dataset_config", "d.toml", "--dataset_repeats", "3"]
    )
    options = options_from_args(args)
    assert options == CommandLineOptions(
        dataset_config="d.toml", train_data_dir="t", reg_data_dir="r", train_batch_size=4, resolution="768,512",
        enable_bucket=True, min_bucket_reso=320, max_bucket_reso=1536, bucket_reso_steps=32, bucket_no_upscale=True,
        dataset_repeats=3, seed=42, sd_scripts_layout=options.sd_scripts_layout,  # the configured checkout's, if any
    )
    assert options_from_args(parser.parse_args(["--batch-size", "2"])).train_batch_size == 2
    empty = options_from_args(parser.parse_args([]))
    assert empty == CommandLineOptions(sd_scripts_layout=empty.sd_scripts_layout)


def test_bad_resolution_option():
    folders(a=1)
    with pytest.raises(UserError) as info:
        load('[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n', CommandLineOptions(resolution="512x512"))
    assert str(info.value) == "resolution: must be 'size' or 'width,height', not '512x512'"


def test_config_from_dict():
    folders(a=2)
    config = config_from_dict({"general": {"resolution": 512}, "datasets": [{"subsets": [{"image_dir": "a", "multiplier": 1.5}]}]},
                              file="mem.toml")
    assert config.source == "mem.toml" and config.datasets[0].subsets[0].effective_multiplier == 1.5
    with pytest.raises(UserError) as info:
        config_from_dict({"datasets": [{"subsets": [{"image_dir": "a", "multiplier": "x"}]}]}, file="mem.toml")
    assert str(info.value) == 'mem.toml: datasets[0].subsets[0] (a): multiplier: must be a number, not a string ("x")'


# ---------------------------------------------------------------------------------------------
# conditioning subsets (ControlNet, LLLite)


def _conditioning_folders(images=3, conditions=None, extension=".png"):
    make_folder("img", [(512, 768)] * images)
    os.makedirs("cond", exist_ok=True)
    for name in sorted(os.listdir("img")) if conditions is None else conditions:
        stem = os.path.splitext(name)[0]
        make_image(os.path.join("cond", stem + extension), 512, 768)


CONDITIONING = HEAD + '[[datasets]]\nbatch_size = 2\n[[datasets.subsets]]\nimage_dir = "img"\nconditioning_data_dir = "cond"\n'


def test_conditioning_subset_plans_its_images_like_dreambooth():
    _conditioning_folders(extension=".jpg")  # any image extension pairs by the stem
    config = load(CONDITIONING + "multiplier = 0.5\ncaption_extension = \".txt\"\n")
    dataset = config.datasets[0]
    subset = dataset.subsets[0]
    assert dataset.conditioning and not dataset.fine_tuning and dataset.uses_multiplier
    assert not subset.is_reg and subset.multiplier == 0.5 and len(subset.images) == 3
    assert subset.conditioning_dir == os.path.abspath("cond")
    assert subset.image_folders == (os.path.abspath("img"), os.path.abspath("cond"))
    plain = load(HEAD + '[[datasets]]\nbatch_size = 2\n[[datasets.subsets]]\nimage_dir = "img"\nmultiplier = 0.5\n')
    assert [e.path for e in plain.datasets[0].subsets[0].images] == [e.path for e in subset.images]


def test_conditioning_subset_reads_multiply_txt_and_notes_unpaired_conditioning_images():
    _conditioning_folders()
    make_image(os.path.join("cond", "zzz.png"), 512, 768)
    with open("img/multiply.txt", "w") as handle:
        handle.write("0.25\n")
    config = load(CONDITIONING)
    assert config.datasets[0].subsets[0].multiplier == 0.25
    assert any("1 of the conditioning images in 'cond' pair with no trained image" in n for n in config.notes)


def test_missing_conditioning_image_is_an_error():
    _conditioning_folders(images=3)
    os.remove(os.path.join("cond", sorted(os.listdir("cond"))[1]))
    message = error_of(CONDITIONING)
    assert message.startswith("dataset.toml: datasets[0].subsets[0] (img): conditioning_data_dir: 1 of 3 images have no "
                              "conditioning image of the same name in 'cond' (sd-scripts stops on it): ")


def test_missing_conditioning_folder_is_an_error_unless_the_subset_is_excluded():
    make_folder("img", [(512, 512)] * 2)
    message = error_of(CONDITIONING.replace('"cond"', '"nowhere"'))
    assert message.startswith("dataset.toml: datasets[0].subsets[0] (img): conditioning_data_dir: ") and "nowhere" in message
    make_folder("img2", [(512, 512)] * 2)
    os.makedirs("cond2")
    make_image(os.path.join("cond2", sorted(os.listdir("img2"))[0]), 512, 512)
    text = CONDITIONING.replace('"cond"', '"nowhere"') + "multiplier = 0\n" + \
        '[[datasets.subsets]]\nimage_dir = "img2"\nconditioning_data_dir = "cond2"\nmultiplier = 2\n'
    os.remove(os.path.join("img2", sorted(os.listdir("img2"))[1]))
    config = load(text)
    assert config.datasets[0].subsets[0].excluded and len(config.datasets[0].subsets[1].images) == 1


@pytest.mark.parametrize(
    "subset, message",
    [
        ("is_reg = true", "datasets[0].subsets[0] (img): is_reg: not allowed in a conditioning subset (one with conditioning_data_dir); "
                          "sd-scripts accepts it only in other kinds of subset"),
        ("class_tokens = \"x\"", "datasets[0].subsets[0] (img): class_tokens: not allowed in a conditioning subset"),
    ],
)
def test_conditioning_subset_key_errors(subset, message):
    _conditioning_folders()
    assert error_of(CONDITIONING + subset + "\n").startswith("dataset.toml: " + message)
