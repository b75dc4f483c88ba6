"""`loss_weight` and `loss_scale.txt` (issue 9, point 1): reading, precedence, errors, the table.

Training with them is proven in tests/integration/test_loss_weight.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegen import make_folder
from kohya_multiplier import errors
from kohya_multiplier.dataset.types import CommandLineOptions
from kohya_multiplier.dataset.config import load_training_config
from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.loss_weights import MAX_LOSS_WEIGHT, check_loss_weight

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    errors._warned.clear()
    for name in ("a", "b", "c"):
        make_folder(name, [(512, 512)] * 3)
    yield tmp_path


def load(text: str):
    Path("ds.toml").write_text(textwrap.dedent(text))
    return load_training_config("ds.toml", CommandLineOptions())


def weights(config) -> list[tuple[float, str]]:
    return [(s.loss_weight.value, s.loss_weight.origin) for s in config.datasets[0].subsets]


def test_most_specific_level_wins_and_loss_scale_txt_only_when_no_level_sets_it():
    Path("b/loss_scale.txt").write_text("0.5\n")
    Path("c/loss_scale.txt").write_text("3")
    config = load(
        """
        [general]
        resolution = 512
        [[datasets]]
        loss_weight = 2
          [[datasets.subsets]]
          image_dir = "a"
          loss_weight = 0
          [[datasets.subsets]]
          image_dir = "b"
        [[datasets]]
          [[datasets.subsets]]
          image_dir = "c"
        """
    )
    assert weights(config) == [(0.0, "subset"), (2.0, "dataset")]  # the dataset level beats b's file
    assert [(s.loss_weight.value, s.loss_weight.origin) for s in config.datasets[1].subsets] == [(3.0, "loss_scale.txt")]
    assert config.datasets[0].uses_loss_weight and config.datasets[1].uses_loss_weight


def test_without_any_weight_nothing_changes():
    config = load('[general]\nresolution = 512\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "a"\n')
    assert weights(config) == [(1.0, "")] and not config.datasets[0].uses_loss_weight


@pytest.mark.parametrize(
    "value, message",
    [("-1", "must be a finite number >= 0, not -1"), ('"2"', 'must be a number, not a string ("2")'),
     ("true", "must be a number, not a boolean"), ("1e9", f"must be at most {MAX_LOSS_WEIGHT:g}"), ("nan", "finite")],
)
def test_bad_values_are_one_line_errors_naming_the_key(value, message):
    with pytest.raises(UserError) as info:
        load(f'[general]\nresolution = 512\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "a"\n  loss_weight = {value}\n')
    text = str(info.value)
    assert "\n" not in text and "loss_weight" in text and message in text and "ds.toml" in text


@pytest.mark.parametrize("content, message", [("", "is empty"), ("two 2", "must hold one number"), ("-0.5", ">= 0")])
def test_bad_loss_scale_txt_names_the_file(content, message):
    Path("a/loss_scale.txt").write_text(content)
    with pytest.raises(UserError) as info:
        load('[general]\nresolution = 512\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "a"\n')
    assert "loss_scale.txt" in str(info.value) and message in str(info.value)


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0, max_value=MAX_LOSS_WEIGHT, allow_nan=False) | st.integers(min_value=0, max_value=1000))
def test_every_finite_nonnegative_number_up_to_the_bound_is_accepted(value):
    assert check_loss_weight(value, file=None, where=None) == float(value)


def test_plan_table_shows_the_column_only_when_a_weight_is_not_one():
    Path("ds.toml").write_text('[general]\nresolution = 512\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "a"\n  multiplier = 0.5\n')
    plain = subprocess.run([sys.executable, "-m", "kohya_multiplier", "plan", "ds.toml", "--epochs", "2"],
                           capture_output=True, text=True, env={"PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert plain.returncode == 0 and "loss weight" not in plain.stdout
    Path("a/loss_scale.txt").write_text("0.25")
    weighted = subprocess.run([sys.executable, "-m", "kohya_multiplier", "plan", "ds.toml", "--epochs", "2"],
                              capture_output=True, text=True, env={"PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert weighted.returncode == 0, weighted.stderr
    header = next(line for line in weighted.stdout.splitlines() if line.startswith("subset"))
    row = next(line for line in weighted.stdout.splitlines() if line.startswith("a "))
    assert header.rstrip().endswith("loss weight") and row.rstrip().endswith("0.25 (loss_scale.txt)")
