"""Rule: say what was ignored, once, before the table (issue 11, point 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kohya_multiplier.cli import main
from kohya_multiplier.example import write_png


def folder(path: Path, count: int = 3) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_png(str(path / f"{i}.png"), 64, 64, (i, 1, 2))
    return path


def plan_output(argv, capsys) -> tuple[list[str], str]:
    assert main(["plan", *argv, "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    table = lines.index(next(l for l in lines if l.startswith("dataset 0:")))
    return lines[:table], captured.err


@pytest.mark.parametrize("name,reason", [
    ("alice", "no repeat prefix sd-scripts accepts"),
    ("x_alice", "no repeat prefix sd-scripts accepts"),
    ("-0.5_alice", "no repeat prefix sd-scripts accepts"),
    ("-2_alice", "its repeat prefix -2 is below 1"),
    ("0_alice", "its repeat prefix 0 is below 1"),
])
def test_dropped_folders_are_listed_before_the_table(tmp_path, capsys, name, reason):
    folder(tmp_path / "db" / "2_bob")
    folder(tmp_path / "db" / name)
    before, err = plan_output(["--train_data_dir", str(tmp_path / "db"), "--resolution", "512"], capsys)
    notes = [l for l in before if f"{name}: ignored:" in l]
    assert len(notes) == 1 and reason in notes[0] and "(sd-scripts ignores it too)" in notes[0]
    assert name not in err  # once: not also as a warning


def write_config(root: Path, text: str) -> Path:
    config = root / "ds.toml"
    config.write_text(text)
    return config


def test_multiply_txt_losing_to_an_inherited_multiplier_says_so(tmp_path, capsys):
    a = folder(tmp_path / "a")
    (a / "multiply.txt").write_text("3\n")
    b = folder(tmp_path / "b")
    (b / "multiply.txt").write_text("2\n")
    config = write_config(tmp_path, f'[general]\nresolution = 512\nmultiplier = 0.5\n[[datasets]]\n'
                                    f'[[datasets.subsets]]\nimage_dir = "{a.as_posix()}"\n'
                                    f'[[datasets.subsets]]\nimage_dir = "{b.as_posix()}"\nnum_repeats = 1\n')
    before, _ = plan_output([str(config)], capsys)
    assert f"{config}: datasets[0].subsets[0] ({a.as_posix()}): multiply.txt ignored: multiplier 0.5 from [general] wins" in before
    assert f"{config}: datasets[0].subsets[1] ({b.as_posix()}): multiply.txt ignored: num_repeats 1 from its own table wins" in before


def test_a_regularization_subset_inheriting_a_multiplier_names_the_rule(tmp_path, capsys):
    train, reg = folder(tmp_path / "t"), folder(tmp_path / "r", 6)
    config = write_config(tmp_path, f'[general]\nresolution = 512\n[[datasets]]\nmultiplier = 0.5\n'
                                    f'[[datasets.subsets]]\nimage_dir = "{train.as_posix()}"\n'
                                    f'[[datasets.subsets]]\nimage_dir = "{reg.as_posix()}"\nis_reg = true\n')
    before, _ = plan_output([str(config)], capsys)
    notes = [l for l in before if "regularization subset takes multiplier 0.5 from its [[datasets]] table" in l]
    assert len(notes) == 1 and "not the automatic regularization rule" in notes[0]


def test_options_the_config_overrides_are_named_once(tmp_path, capsys):
    a = folder(tmp_path / "a")
    config = write_config(tmp_path, f'[general]\nresolution = 512\n[[datasets]]\nbatch_size = 2\nmultiplier = 0.5\n'
                                    f'[[datasets.subsets]]\nimage_dir = "{a.as_posix()}"\n')
    before, _ = plan_output([str(config), "--train_batch_size", "4", "--resolution", "768", "--min_bucket_reso", "128"], capsys)
    notes = [l for l in before if "the config overrides" in l]
    assert notes == [f"{config}: the config overrides --train_batch_size 4 (by batch_size in datasets[0]); "
                     "--resolution 768 (by resolution in [general]) (as in sd-scripts, a value in the config wins)"]


def test_no_override_note_when_the_config_is_silent(tmp_path, capsys):
    a = folder(tmp_path / "a")
    config = write_config(tmp_path, f'[general]\n[[datasets]]\nmultiplier = 0.5\n[[datasets.subsets]]\nimage_dir = "{a.as_posix()}"\n')
    before, _ = plan_output([str(config), "--train_batch_size", "4", "--resolution", "512"], capsys)
    assert not [l for l in before if "overrides" in l]


def test_warnings_come_before_the_table(tmp_path, capsys):
    """The distortion warning (stderr) is printed before any table line (stdout)."""
    import subprocess
    import sys

    a = folder(tmp_path / "a", 4)
    config = write_config(tmp_path, f'[general]\nresolution = 512\n[[datasets]]\n[[datasets.subsets]]\n'
                                    f'image_dir = "{a.as_posix()}"\nmultiplier = 0.001\n')
    run = subprocess.run([sys.executable, "-m", "kohya_multiplier", "plan", str(config), "--epochs", "3"],
                         capture_output=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    lines = run.stdout.splitlines()
    warning = next(i for i, l in enumerate(lines) if "warning:" in l)
    table = next(i for i, l in enumerate(lines) if l.startswith("dataset 0:"))
    assert warning < table


def test_sd_scripts_defaults_are_not_named_as_overridden():
    """Training hands the core sd-scripts' parsed args, defaults included: they were not given."""
    from kohya_multiplier.dataset.types import CommandLineOptions
    from kohya_multiplier.dataset.ignored import overridden_options

    raw = {"general": {"batch_size": 4, "enable_bucket": True, "min_bucket_reso": 128}, "datasets": [{"subsets": []}]}
    defaults = CommandLineOptions(train_batch_size=1, enable_bucket=False, min_bucket_reso=256, caption_extension=".caption")
    assert overridden_options(raw, defaults, "") == []
    given = CommandLineOptions(train_batch_size=2, enable_bucket=True)
    assert overridden_options(raw, given, "") == [
        "the config overrides --train_batch_size 2 (by batch_size in [general]); --enable_bucket on (by enable_bucket in "
        "[general]) (as in sd-scripts, a value in the config wins)"]
