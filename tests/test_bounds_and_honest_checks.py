"""Rules of issue 11, points 2-4: schedule-diff never calls a failed run a success; every number is
bounded and checked before any work; no plan that cannot train, no silent distortion."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kohya_multiplier.dataset import limits
from kohya_multiplier.cli import main
from kohya_multiplier.example import write_png


def make_config(root: Path, subsets: list[tuple[str, int, str]], batch_size: int = 1) -> Path:
    """subsets: (folder, images, the subset's extra TOML line)."""
    text = f"[general]\nresolution = 512\n[[datasets]]\nbatch_size = {batch_size}\n"
    for folder, count, extra in subsets:
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write_png(str(d / f"{i:03d}.png"), 64, 64, (i % 256, 1, 2))
        text += f'[[datasets.subsets]]\nimage_dir = "{d.as_posix()}"\n{extra}\n'
    config = root / "ds.toml"
    config.write_text(text)
    return config


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("kohya-multiplier: error: ") and err.count("\n") == 1, err
    return err


# --- 2. schedule-diff ------------------------------------------------------------------------------


@pytest.fixture
def promised(tmp_path) -> Path:
    config = make_config(tmp_path / "d", [("a", 4, "multiplier = 0.5"), ("b", 2, "multiplier = 1")], batch_size=2)
    out = tmp_path / "promised.jsonl"
    assert main(["plan", str(config), "--epochs", "3", "--schedule", str(out)]) == 0
    return out


@pytest.mark.parametrize("flags", [[], ["--common-epochs"]])
def test_an_empty_side_is_a_difference(tmp_path, promised, capsys, flags):
    empty = tmp_path / "trained.jsonl"
    empty.write_text("")
    capsys.readouterr()
    assert main(["schedule-diff", str(promised), str(empty), *flags]) == 1
    out = capsys.readouterr().out
    assert "schedules differ: B holds no batch at all" in out and "identical" not in out.splitlines()[-1]
    assert main(["schedule-diff", str(empty), str(empty), *flags]) == 1
    assert "A and B hold no batch at all" in capsys.readouterr().out


def test_no_epoch_in_common_is_a_difference(tmp_path, promised, capsys):
    lines = promised.read_text().splitlines()
    later = tmp_path / "later.jsonl"
    later.write_text("".join(json.dumps({**json.loads(l), "epoch": json.loads(l)["epoch"] + 10}) + "\n" for l in lines))
    capsys.readouterr()
    assert main(["schedule-diff", str(promised), str(later), "--common-epochs"]) == 1
    assert "schedules differ: no epoch in common (A holds epochs 1-3, B holds 11-13)" in capsys.readouterr().out


def test_identical_names_the_epochs_compared(tmp_path, promised, capsys):
    first = tmp_path / "first.jsonl"
    first.write_text("".join(l + "\n" for l in promised.read_text().splitlines() if json.loads(l)["epoch"] == 1))
    capsys.readouterr()
    assert main(["schedule-diff", str(promised), str(first), "--common-epochs"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "schedules are identical in epochs 1 (not compared: epochs only in A: 2-3)"


@pytest.mark.parametrize("content", ['[general]\nresolution = 512\n', '{"epoch": 1}\n', "not json\n"])
def test_a_file_that_is_not_a_schedule_is_bad_input(tmp_path, promised, capsys, content):
    other = tmp_path / "other.jsonl"
    other.write_text(content)
    capsys.readouterr()
    assert main(["schedule-diff", str(promised), str(other)]) == 2
    assert "other.jsonl" in one_line_error(capsys)


# --- 3. bounds ---------------------------------------------------------------------------------------


def _fast_and_small(argv, capsys) -> str:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: no big allocation
    return one_line_error(capsys)


@pytest.mark.parametrize("argv,message", [
    (["--epochs", "1000000000"], "--epochs: at most 10,000 epochs are planned at once, got 1,000,000,000"),
    (["--from-epoch", "1000000"], "--from-epoch: at most 10,000 (no training run reaches a later epoch), got 1,000,000"),
    (["--from-epoch", "9000", "--epochs", "2000"], "--epochs: plans up to epoch 10,999 with --from-epoch 9,000"),
])
def test_epochs_beyond_a_real_run_are_refused_at_once(tmp_path, capsys, argv, message):
    config = make_config(tmp_path, [("a", 4, "multiplier = 0.5")])
    assert message in _fast_and_small(["plan", str(config), *argv], capsys)


@pytest.mark.parametrize("extra,message", [
    ("multiplier = 1e12", "multiplier: 1000000000000 is more than 10000 repeats of every image per epoch"),
    ("multiplier = 1e6", "multiplier: 1000000 is more than 10000 repeats"),
    ("num_repeats = 100000", "num_repeats: 100000 is more than 10000 repeats"),
    ("multiplier = 1e300", "is more than 10000 repeats"),
])
def test_multipliers_beyond_a_real_run_are_refused_at_once(tmp_path, capsys, extra, message):
    config = make_config(tmp_path, [("a", 4, extra)])
    err = _fast_and_small(["plan", str(config)], capsys)
    assert "ds.toml: datasets[0].subsets[0]" in err and message in err


def test_an_epoch_longer_than_a_gpu_could_train_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(limits, "MAX_IMAGES_PER_EPOCH", 1000)
    config = make_config(tmp_path, [("a", 4, "multiplier = 200"), ("b", 3, "multiplier = 100.5")])
    err = _fast_and_small(["plan", str(config)], capsys)
    assert "ds.toml: datasets[0]: an epoch would train 1,102 images; at most 1,000 per epoch are planned" in err


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0, max_value=1e308, allow_nan=False), st.integers(1, 10**7))
def test_every_accepted_dataset_is_within_the_limits(m, n):
    """Property: whatever multiplier and size, check_dataset refuses or the epoch is bounded."""
    from kohya_multiplier.dataset.types import DatasetSpec, SubsetSpec
    from kohya_multiplier.errors import UserError

    images = [None] * min(n, 50)
    subset = SubsetSpec("/x", "x", "datasets[0].subsets[0] (x)", False, images, m, "subset", 0, m, "multiplier (subset)")
    dataset = DatasetSpec(0, 1, (512, 512), False, 256, 1024, 64, False, [subset], True, table="datasets[0]")
    try:
        limits.check_dataset(dataset, file="ds.toml")
    except UserError as error:
        assert str(error).startswith("ds.toml: datasets[0]")
        return
    assert m == 0 or (m <= limits.MAX_MULTIPLIER and m * len(images) <= limits.MAX_IMAGES_PER_EPOCH)
    fraction = m - int(m)
    near_whole = round(m) >= 1 and abs(m - round(m)) <= 1e-9 * m  # counts as that whole number
    assert fraction == 0 or near_whole or fraction * len(images) >= limits.MIN_FRACTIONAL_IMAGES


# --- 4. plans that cannot train, distortion -----------------------------------------------------------


@pytest.mark.parametrize("m,n", [(1e-6, 4), (1e-4, 9), (2.0 ** -12, 3), (3 + 1e-5, 2), (1e-9, 5)])
def test_a_multiplier_below_the_resolution_is_refused(tmp_path, capsys, m, n):
    config = make_config(tmp_path, [("a", n, f"multiplier = {m!r}")])
    err = one_line_error(capsys) if main(["plan", str(config)]) == 2 else pytest.fail("accepted")
    assert "ds.toml: datasets[0].subsets[0]" in err and "less than one image in 1024 epochs" in err


def test_a_zero_batch_epoch_is_an_error(tmp_path, capsys):
    # A stock dataset of regularization images only: sd-scripts registers none of them (T = 0).
    config = make_config(tmp_path, [("reg", 3, "is_reg = true")])
    assert main(["plan", str(config)]) == 2
    assert "ds.toml: datasets[0]: an epoch would have 0 batches" in one_line_error(capsys)


def test_rounding_that_distorts_a_share_is_warned_once_before_the_table(tmp_path, capsys):
    config = make_config(tmp_path, [("tiny", 4, "multiplier = 0.001"), ("big", 2, "multiplier = 1")], batch_size=2)
    assert main(["plan", str(config), "--epochs", "4"]) == 0
    captured = capsys.readouterr()
    warnings = [l for l in captured.err.splitlines() if "warning" in l]
    assert len(warnings) == 1
    assert ("subset tiny asks for 0.004 images per epoch but gets 1 (250x) over epochs 1..4, because an epoch holds "
            "whole batches") in warnings[0]
    assert "big" not in warnings[0]


def test_no_distortion_warning_for_a_fair_plan(tmp_path, capsys):
    config = make_config(tmp_path, [("a", 10, "multiplier = 0.3"), ("b", 4, "multiplier = 0.5")], batch_size=2)
    assert main(["plan", str(config), "--epochs", "10"]) == 0
    assert "warning" not in capsys.readouterr().err


# --- balance -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["0", "-5", "1e12"])
def test_balance_targets_must_be_positive_and_bounded(tmp_path, capsys, target):
    config = make_config(tmp_path, [("a", 4, "multiplier = 0.5")])
    assert main(["balance", str(config), f"--per-epoch={target}"]) == 2
    err = one_line_error(capsys)
    assert "--per-epoch: must be" in err


@pytest.mark.parametrize("edit,argv,message", [
    (("batch_size = 1\n", ""), ["--train_batch_size", "100000"],
     "ds.toml: --train_batch_size: must be at most 4,096 images per batch, not 100000"),
    (("batch_size = 1\n", "batch_size = 5000\n"), [], "ds.toml: datasets[0]: batch_size: must be at most 4,096 images per batch, not 5000"),
    (("resolution = 512\n", "resolution = [512, 100000]\n"), [],
     "ds.toml: general: resolution: must be at most 16,384 pixels, not [512, 100000]"),
    (("resolution = 512\n", "resolution = 512\nenable_bucket = true\nmax_bucket_reso = 1000000000000\n"), [],
     "ds.toml: general: max_bucket_reso: must be at most 16,384 pixels, not 1000000000000"),
    (("", ""), ["--enable_bucket", "--max_bucket_reso", "99999"], "ds.toml: --max_bucket_reso: must be at most 16,384 pixels"),
])
def test_batch_and_bucket_sizes_beyond_a_gpu_are_refused_at_once(tmp_path, capsys, edit, argv, message):
    config = make_config(tmp_path, [("a", 4, "multiplier = 0.5")])
    config.write_text(config.read_text().replace(*edit, 1) if edit[0] else config.read_text())
    assert message in _fast_and_small(["plan", str(config), *argv], capsys)


def test_a_long_jump_shows_progress(monkeypatch, capsys):
    from kohya_multiplier.planner.jump import jump_to

    class SlowPlanner:
        planned = []

        def plan_epoch(self, epoch):
            time.sleep(0.9)
            self.planned.append(epoch)

    monkeypatch.setenv("KOHYA_MULTIPLIER_PROGRESS", "1")
    planner = SlowPlanner()
    jump_to(planner, 5000, "dataset 0: replaying epochs 1-4999")
    assert planner.planned == [5000]
    assert "dataset 0: replaying epochs 1-4999" in capsys.readouterr().err
    jump_to(planner, 1, "nothing to replay")
    assert planner.planned == [5000]
