"""`kohya-multiplier balance`: the arithmetic (pure) and the command (config in, table out, --write)."""

from __future__ import annotations

import difflib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from kohya_multiplier.balance import solve as bal
from kohya_multiplier.cli import main
from kohya_multiplier.errors import UserError
from kohya_multiplier.planner import DatasetPlanner


def subset(i, images, *, m=1.0, reg=False, explicit=True, group="", target=None, dataset=0, name=None, repeats=1):
    return bal.BalanceSubset(dataset=dataset, index=i, name=name or f"s{i}", images=images, multiplier=m,
                             is_reg=reg, explicit=explicit, num_repeats=repeats, group=group, images_per_epoch=target)


# ---------------------------------------------------------------------------------------------
# The three situations of the issue


def test_25_subjects_of_50_to_300_images_get_25_each():
    sizes = [50 + (i * 53) % 251 for i in range(25)]
    assert min(sizes) >= 50 and max(sizes) <= 300
    subsets = [subset(i, n) for i, n in enumerate(sizes)]
    result = bal.solve(subsets, per_epoch=25)
    for s, a in zip(subsets, result):
        assert a.changed and a.rule == "per-epoch 25"
        assert abs(a.multiplier * s.images - 25) <= 1e-9
        assert len(repr(a.multiplier)) <= 15  # a short decimal, not 17 digits
    assert bal.epoch_images(result) == pytest.approx(25 * 25)


def test_25_subjects_planner_trains_exactly_25_each_epoch():
    """The written multipliers make the real planner train 25 images per subject (no float floor)."""
    sizes = [50 + (i * 53) % 251 for i in range(25)]
    result = bal.solve([subset(i, n) for i, n in enumerate(sizes)], per_epoch=25)
    subset_of_image = np.repeat(np.arange(len(sizes)), sizes)
    bucket_of_image = np.zeros(subset_of_image.size, dtype=np.int64)
    planner = DatasetPlanner(subset_of_image, bucket_of_image, [a.multiplier for a in result], 1, 7)
    for epoch in (1, 2, 3):
        images = np.concatenate([batch for _, batch in planner.plan_epoch(epoch).batches])
        counts = np.bincount(subset_of_image[images], minlength=len(sizes))
        assert (counts == 25).all(), counts


def test_50_subjects_of_50_to_800_images_grouped_by_parent():
    """50 subjects, each a parent folder with 1-3 subsets: 30 images per subject, one multiplier
    for all images of a subject."""
    subsets = []
    for subject in range(50):
        parts = 1 + subject % 3
        total = 50 + (subject * 97) % 751
        for part in range(parts):
            n = total // parts + (1 if part < total % parts else 0)
            subsets.append(subset(len(subsets), n, group=f"subject{subject}"))
    result = bal.solve(subsets, per_epoch=30, group_by="parent")
    per_subject: dict[str, float] = {}
    multipliers: dict[str, set[float]] = {}
    for s, a in zip(subsets, result):
        per_subject[s.group] = per_subject.get(s.group, 0.0) + a.images_per_epoch
        multipliers.setdefault(s.group, set()).add(a.multiplier)
    assert len(per_subject) == 50
    assert all(abs(v - 30) <= 1e-6 for v in per_subject.values())
    assert all(len(v) == 1 for v in multipliers.values())
    # without grouping every subset gets 30 on its own
    ungrouped = bal.solve(subsets, per_epoch=30)
    assert all(abs(a.images_per_epoch - 30) <= 1e-9 for a in ungrouped)


@pytest.mark.parametrize("share", [0.05, 0.10])
def test_200_subject_images_with_1000_preservation_images_at_a_share(share):
    subsets = [subset(0, 200, explicit=False), subset(1, 1000, reg=True, explicit=False, name="preservation")]
    result = bal.solve(subsets, ratios=[bal.parse_ratio(f"reg={share * 100:g}%")])
    assert result[0].rule == "unchanged" and result[0].multiplier == 1.0
    total = bal.epoch_images(result)
    assert result[1].images_per_epoch / total == pytest.approx(share, rel=1e-3)
    assert result[1].multiplier == pytest.approx(200 * share / (1 - share) / 1000, rel=1e-3)
    # with the subject balanced too, the share is of the new epoch
    result = bal.solve(subsets, per_epoch=100, ratios=[bal.parse_ratio(f"preservation={share}")])
    assert result[0].images_per_epoch == pytest.approx(100)
    assert result[1].images_per_epoch / bal.epoch_images(result) == pytest.approx(share, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# More rules


def test_images_per_epoch_in_the_toml_wins_over_per_epoch():
    result = bal.solve([subset(0, 100), subset(1, 200, target=40)], per_epoch=25)
    assert result[0].images_per_epoch == pytest.approx(25)
    assert result[1].images_per_epoch == pytest.approx(40) and result[1].rule == "images_per_epoch 40"
    assert result[1].target == 40


def test_automatic_regularization_follows_the_training_images():
    subsets = [subset(0, 100, explicit=False), subset(1, 300, explicit=False),
               subset(2, 1000, reg=True, explicit=False)]
    result = bal.solve(subsets, per_epoch=25)
    assert result[2].rule.startswith("auto") and not result[2].changed
    assert result[2].images_per_epoch == pytest.approx(50)  # = training images per epoch
    # the same rule as the config reader's (multipliers.auto_regularization_multipliers)
    from kohya_multiplier.dataset.multipliers import RegularizationInput, auto_regularization_multipliers

    expected = auto_regularization_multipliers([
        RegularizationInput(False, 100, result[0].multiplier, 1),
        RegularizationInput(False, 300, result[1].multiplier, 1),
        RegularizationInput(True, 1000, None, 1),
    ])
    assert result[2].multiplier == pytest.approx(expected[2])


def test_ratio_set_of_training_subsets_with_auto_regularization():
    """A ratio set whose members feed the automatic regularization multiplier: still exact."""
    subsets = [subset(0, 100, name="me"), subset(1, 400, name="style_a"), subset(2, 400, name="style_b"),
               subset(3, 1000, reg=True, explicit=False)]
    result = bal.solve(subsets, per_epoch=50, ratios=[bal.parse_ratio("style_*=20%")])
    total = bal.epoch_images(result)
    styles = result[1].images_per_epoch + result[2].images_per_epoch
    assert styles / total == pytest.approx(0.2, rel=1e-3)
    assert result[1].multiplier == result[2].multiplier  # one rate for the whole set
    training = result[0].images_per_epoch + styles
    assert result[3].images_per_epoch == pytest.approx(training, rel=1e-9)


def test_excluded_subsets_stay_excluded():
    result = bal.solve([subset(0, 100), subset(1, 100, m=0.0)], per_epoch=25)
    assert result[1].multiplier == 0.0 and not result[1].changed


def test_unchanged_when_already_balanced():
    result = bal.solve([subset(0, 100, m=0.25), subset(1, 200, m=0.125)], per_epoch=25)
    assert not any(a.changed for a in result)


@pytest.mark.parametrize("target,images,expected", [(25, 200, 0.125), (29, 100, 0.29), (25, 1000, 0.025),
                                                   (1, 3, None), (25, 300, None)])
def test_tidy_multiplier(target, images, expected):
    m = bal.tidy_multiplier(target, images)
    assert abs(m * images - target) <= 1e-9
    if expected is not None:
        assert m == expected


@pytest.mark.parametrize("text,selectors,fraction", [
    ("reg=10%", ("reg",), 0.1), ("a,b = 0.25", ("a", "b"), 0.25), ("style_*=5 %", ("style_*",), 0.05)])
def test_parse_ratio(text, selectors, fraction):
    ratio = bal.parse_ratio(text)
    assert ratio.selectors == selectors and ratio.fraction == pytest.approx(fraction)


@pytest.mark.parametrize("text", ["reg", "=10%", "reg=x", "reg=0", "reg=100%", "reg=1.5", "reg=nan"])
def test_parse_ratio_errors(text):
    with pytest.raises(UserError) as error:
        bal.parse_ratio(text)
    assert "--ratio" in str(error.value) and "\n" not in str(error.value)


def test_solve_errors():
    subsets = [subset(0, 100), subset(1, 100, reg=True, name="r")]
    with pytest.raises(UserError, match="matches no subset"):
        bal.solve(subsets, ratios=[bal.parse_ratio("nothing=10%")])
    with pytest.raises(UserError, match="two ratio sets"):
        bal.solve(subsets, ratios=[bal.parse_ratio("reg=10%"), bal.parse_ratio("r=10%")])
    with pytest.raises(UserError, match="below 100"):
        bal.solve(subsets, ratios=[bal.parse_ratio("reg=60%"), bal.parse_ratio("s0=50%")])
    with pytest.raises(UserError, match="take a share of"):
        bal.solve([subset(0, 100, reg=True)], ratios=[bal.parse_ratio("reg=10%")])
    with pytest.raises(UserError, match="one target"):
        bal.solve([subset(0, 100, target=5), subset(1, 10)], ratios=[bal.parse_ratio("s0=10%")])
    with pytest.raises(UserError, match="--per-epoch"):
        bal.solve(subsets, per_epoch=-1)
    with pytest.raises(UserError, match="--group-by"):
        bal.solve(subsets, per_epoch=1, group_by="folder")


def test_marker_comment_round_trip():
    text = bal.marker_comment(25, "my note")
    assert bal.target_from_comment(text) == 25
    assert bal.marker_comment(40, text) == "images_per_epoch = 40 (kohya-multiplier balance); my note"
    assert bal.target_from_comment("just a note") is None


# ---------------------------------------------------------------------------------------------
# The command


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress((b"\x00" + b"\x00" * ((width + 7) // 8)) * height)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def make_images(folder: Path, count: int, sizes=((64, 64), (96, 64), (64, 96))) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{i:04d}.png").write_bytes(_png(*sizes[i % len(sizes)]))


CONFIG = """\
# Balance me.
[general]
enable_bucket = true      # aspect-ratio buckets
resolution = 64
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 16

[[datasets]]
batch_size = 4   # four per step

  # the big subject
  [[datasets.subsets]]
  image_dir = "subjects/alice"   # 300 images
  num_repeats = 2  # old way

  [[datasets.subsets]]
  image_dir = 'subjects/bob'
  images_per_epoch = 40 # bob gets 40
  keep_tokens = 1

  [[datasets.subsets]]
  image_dir = "subjects/carol"

  [[datasets.subsets]]
  image_dir = "reg/person"
  is_reg = true
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    make_images(tmp_path / "subjects" / "alice", 300)
    make_images(tmp_path / "subjects" / "bob", 120)
    make_images(tmp_path / "subjects" / "carol", 50)
    make_images(tmp_path / "reg" / "person", 500)
    (tmp_path / "cfg.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KOHYA_MULTIPLIER_PROGRESS", "0")
    return tmp_path


def _rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in ("alice", "bob", "carol", "person"):
            rows[parts[0]] = parts
    return rows


def test_balance_prints_table_and_changes_nothing_without_write(project, capsys):
    before = (project / "cfg.toml").read_bytes()
    assert main(["balance", "cfg.toml", "--per-epoch", "25", "--epochs", "5"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows["alice"][1] == "300" and rows["alice"][4] == "0.08333333333"
    assert rows["bob"][-2:] == ["images_per_epoch", "40"]
    assert rows["carol"][4] == "0.5"
    assert "batches per epoch:" in out and "total steps for 5 epochs:" in out
    assert "not written" in out
    assert (project / "cfg.toml").read_bytes() == before
    assert not list(project.glob("cfg.toml.bak*"))


def test_balance_batches_per_epoch_equal_the_planner(project, capsys):
    """The after-batches are the planner's L on the sd-scripts bucket assignment."""
    assert main(["balance", "cfg.toml", "--per-epoch", "25", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("batches per epoch:"))
    before, after = (int(x) for x in line.split(":")[1].split("->"))
    from kohya_multiplier.commands.balance import load
    from kohya_multiplier.dataset.types import CommandLineOptions
    from kohya_multiplier.dataset.buckets import assign_buckets

    config = load("cfg.toml", CommandLineOptions()).config
    dataset = config.datasets[0]
    images = [(i, e) for i, s in enumerate(dataset.subsets) for e in s.images]
    buckets = assign_buckets([e.width for _, e in images], [e.height for _, e in images], resolution=(64, 64),
                             enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=16)
    keys = sorted(set(buckets))
    subset_of_image = np.array([i for i, _ in images])
    bucket_of_image = np.array([keys.index(b) for b in buckets])
    assert len(keys) == 3
    # before: the config has no multiplier, so it is stock sd-scripts: its 500 regularization images
    # are repeated until they match the 770 training images per epoch, not once each
    from kohya_multiplier.planner.plan_input import planner_for_dataset

    assert planner_for_dataset(dataset, 0)[0].epoch_length == before
    old = [s.effective_multiplier for s in dataset.subsets]
    assert DatasetPlanner(subset_of_image, bucket_of_image, old, 4, 0).epoch_length < before
    assert _rows(out)["person"][7] == "770"  # person [reg] 500 1 (repeats) 0.18 (auto) 770
    new = [25 / 300, 40 / 120, 0.5, 90 / 500]
    planner = DatasetPlanner(subset_of_image, bucket_of_image, new, 4, 0)
    assert planner.epoch_length == after
    total = next(l for l in out.splitlines() if l.startswith("total steps"))
    assert f": {before * 3} -> {after * 3}" in total
    # and `plan` on the written file shows the same number
    assert main(["balance", "cfg.toml", "--per-epoch", "25", "--write"]) == 0
    capsys.readouterr()
    import re

    assert main(["plan", "cfg.toml", "--epochs", "2"]) == 0
    shown = re.findall(r"(\d+) batches per epoch", capsys.readouterr().out)
    assert shown == [str(after)]


def test_balance_write_round_trips_the_toml(project, capsys):
    original = (project / "cfg.toml").read_text()
    assert main(["balance", "cfg.toml", "--per-epoch", "25", "--ratio", "reg=10%", "--write"]) == 0
    out = capsys.readouterr().out
    assert "wrote cfg.toml" in out and "cfg.toml.bak" in out
    assert (project / "cfg.toml.bak").read_text() == original
    new = (project / "cfg.toml").read_text()
    old_lines, new_lines = original.splitlines(keepends=True), new.splitlines(keepends=True)
    replaced, inserted = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        assert op in ("replace", "insert"), (op, old_lines[i1:i2], new_lines[j1:j2])
        if op == "replace":
            assert i2 - i1 == j2 - j1
            replaced += list(zip(old_lines[i1:i2], new_lines[j1:j2]))
        else:
            inserted += new_lines[j1:j2]
    # num_repeats and images_per_epoch become multiplier on the same line, comments kept
    assert replaced == [
        ("  num_repeats = 2  # old way\n", "  multiplier = 0.083333333333  # old way\n"),
        ("  images_per_epoch = 40 # bob gets 40\n",
         "  multiplier = 0.33333333333 # images_per_epoch = 40 (kohya-multiplier balance); bob gets 40\n"),
    ]
    # subsets without either key get a multiplier line at the end of their table
    assert inserted == ["  multiplier = 0.5\n", "  multiplier = 0.02\n"]
    # the file is a valid config for plan/training now, and a second run has nothing to do
    from kohya_multiplier.dataset.config import load_training_config

    config = load_training_config("cfg.toml")
    assert [round(s.effective_multiplier, 6) for s in config.datasets[0].subsets] == [0.083333, 0.333333, 0.5, 0.02]
    assert main(["balance", "cfg.toml", "--per-epoch", "25", "--ratio", "reg=10%", "--write"]) == 0
    assert "nothing to change" in capsys.readouterr().out
    assert not (project / "cfg.toml.bak.1").exists()
    # the target kept in the comment is read back: changing it there changes the multiplier
    (project / "cfg.toml").write_text(new.replace("images_per_epoch = 40", "images_per_epoch = 60"))
    assert main(["balance", "cfg.toml", "--per-epoch", "25", "--ratio", "reg=10%", "--write"]) == 0
    capsys.readouterr()
    assert "  multiplier = 0.5 # images_per_epoch = 60 (kohya-multiplier balance); bob gets 40\n" in \
        (project / "cfg.toml").read_text()
    assert (project / "cfg.toml.bak.1").exists()


def test_balance_group_by_parent(project, capsys):
    assert main(["balance", "cfg.toml", "--per-epoch", "35", "--group-by", "parent"]) == 0
    rows = _rows(capsys.readouterr().out)
    # alice and carol share "subjects" (bob has its own target): 35 / 350 images each
    assert rows["alice"][4] == rows["carol"][4] == "0.1"


@pytest.mark.parametrize("argv,message", [
    (["balance", "missing.toml", "--per-epoch", "5"], "missing.toml: file not found"),
    (["balance", "cfg.toml", "--per-epoch", "-3"], "--per-epoch"),
    (["balance", "cfg.toml", "--ratio", "reg"], "--ratio"),
    (["balance", "cfg.toml", "--ratio", "nobody=10%"], "matches no subset"),
    (["balance", "cfg.toml", "--per-epoch", "5", "--epochs", "0"], "--epochs"),
    (["balance", "--per-epoch", "5", "--write"], "--write"),
])
def test_balance_errors_are_one_line(project, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kohya-multiplier: error:") and message in err and "\n" not in err


@pytest.mark.parametrize("edit,message", [
    (("images_per_epoch = 40", 'images_per_epoch = "many"'), "cfg.toml: datasets[0].subsets[1] (subjects/bob): "
                                                             "images_per_epoch: must be a number"),
    (("images_per_epoch = 40", "images_per_epoch = true"), "images_per_epoch: must be a number"),
    (("images_per_epoch = 40", "images_per_epoch = -1"), "images_per_epoch: must be a finite number of images above 0, got -1"),
    (("batch_size = 4", "batch_size = 4\nimages_per_epoch = 3"), "datasets[0]: images_per_epoch: "),
    (("num_repeats = 2", "num_repeats = 2\n  multiplier = 0.5"), "cfg.toml: datasets[0].subsets[0]"),
    (("[[datasets]]", "[[datasets]\n"), "TOML syntax error"),
])
def test_balance_config_errors_are_one_line(project, capsys, edit, message):
    path = project / "cfg.toml"
    path.write_text(CONFIG.replace(*edit))
    before = path.read_bytes()
    assert main(["balance", "cfg.toml", "--per-epoch", "25", "--write"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert path.read_bytes() == before and not list(project.glob("cfg.toml.bak*"))


def test_balance_without_targets_is_an_error(project, capsys):
    (project / "cfg.toml").write_text(CONFIG.replace("images_per_epoch = 40", "color_aug = true"))
    assert main(["balance", "cfg.toml"]) == 2
    assert "nothing to balance" in capsys.readouterr().err


def test_balance_write_refuses_json(project, capsys):
    (project / "cfg.json").write_text('{"datasets": []}')
    assert main(["balance", "cfg.json", "--per-epoch", "5", "--write"]) == 2
    assert "TOML" in capsys.readouterr().err


def test_balance_folder_mode_suggests_renames(tmp_path, monkeypatch, capsys):
    make_images(tmp_path / "train" / "10_alice", 200)
    make_images(tmp_path / "train" / "2_bob", 20)
    monkeypatch.chdir(tmp_path)
    assert main(["balance", "--train_data_dir", "train", "--resolution", "64", "--per-epoch", "20"]) == 0
    out = capsys.readouterr().out
    assert "train/10_alice -> train/0.1_alice" in out and "train/2_bob -> train/1_bob" in out
    assert (tmp_path / "train" / "10_alice").is_dir()
