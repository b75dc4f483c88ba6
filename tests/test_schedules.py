"""Schedules as a user writes them: the TOML spellings, their one-line errors, what `plan` prints,
and what a scheduled dataset trains (its rates scaled to a constant total, windows, images_per_epoch
made a rate from the images really there, loss weights that follow the epoch)."""

from __future__ import annotations

import numpy as np
import pytest

from test_config import HEAD, error_of, folders, load
from kohya_multiplier.cli import main
from kohya_multiplier.dataset.schedules import Schedule
from kohya_multiplier.planner.dataset_plan import DatasetPlan

pytestmark = pytest.mark.usefixtures("workdir")

TWO = HEAD + """
[[datasets]]
[[datasets.subsets]]
image_dir = "a"
{a}
[[datasets.subsets]]
image_dir = "b"
{b}
"""


def two(a: str = "multiplier = 1", b: str = "multiplier = 1") -> str:
    return TWO.format(a=a, b=b)


def trained(config, epochs: int) -> np.ndarray:
    """(E, S) images each subset trains in epochs 1..E."""
    plan = DatasetPlan(config.datasets[0], 7)
    _, counts, _ = plan.counts(range(1, epochs + 1))
    return counts.T


def test_a_schedule_is_linear_between_points_and_constant_outside():
    schedule = Schedule((3, 7), (1.0, 0.2))
    assert [round(schedule.at(e), 6) for e in (1, 3, 4, 5, 7, 9)] == [1.0, 1.0, 0.8, 0.6, 0.2, 0.2]
    step = Schedule((3, 7), (1.0, 0.2), step=True)
    assert [step.at(e) for e in (1, 6, 7, 50)] == [1.0, 1.0, 0.2, 0.2]


@pytest.mark.parametrize(
    "value, message",
    [
        ("{}", "multiplier: a schedule needs at least one epoch = value point, e.g. { 1 = 0.5, 20 = 0.1 }"),
        ("{ 0 = 1 }", "multiplier: a schedule's keys are epochs from 1 to 10,000 (and step = true); not '0'"),
        ("{ 10001 = 1 }", "multiplier: a schedule's keys are epochs from 1 to 10,000 (and step = true); not '10001'"),
        ("{ 1 = 1, 5 = nan }", "multiplier epoch 5: must be a finite number, not nan"),
        ('{ 1 = "x" }', 'multiplier epoch 1: must be a number, not a string ("x")'),
        ("{ 1 = 1, 01 = 2 }", "multiplier: epoch 1 is given twice"),
        ('{ 1 = 1, step = "yes" }', 'multiplier step: must be true or false, not a string ("yes")'),
        ("[[1, 1], [4, 0.5]]", "multiplier: a schedule is a table of epoch = value points, e.g. { 1 = 0.5, 20 = 0.1 } "
                               "(sd-scripts' TOML reader refuses lists that mix integers and floats); not an array"),
    ],
)
def test_a_bad_schedule_is_one_line_naming_the_point(value, message):
    folders(a=2, b=2)
    assert error_of(two(a=f"multiplier = {value}")) == f"dataset.toml: datasets[0].subsets[0] (a): {message}"


def test_bad_windows_and_totals_are_one_line():
    folders(a=2, b=2)
    assert error_of(two(b="start_epoch = 6\nend_epoch = 3")) == (
        "dataset.toml: datasets[0].subsets[1] (b): end_epoch: 3 is before start_epoch 6: the subset would never train")
    assert error_of(two(b="start_epoch = true")).endswith("start_epoch: must be a whole epoch from 1 to 10,000, not a boolean (true)")
    assert error_of(HEAD + "total_images_per_epoch = 0\n" + two()[len(HEAD):]).startswith("dataset.toml: general: total_images_per_epoch: must be")
    assert error_of(two(a="loss_weight = { 1 = -1 }")).endswith("loss_weight epoch 1: must be a finite number >= 0, not -1")
    assert error_of(two(a="images_per_epoch = 3\nmultiplier = 1")).endswith(
        "datasets[0].subsets[0] (a): multiplier: cannot be combined with images_per_epoch in the same table; use one of them")


def test_an_epoch_in_which_nothing_trains_is_refused_naming_it():
    folders(a=2, b=2)
    message = error_of(two(a="end_epoch = 3", b="start_epoch = 6"))
    assert message.startswith("dataset.toml: datasets[0]: start_epoch: in epoch 4 no subset trains")


def test_a_fade_between_datasets_is_refused_with_what_to_do_instead():
    folders(low=4, full=4)
    text = HEAD + """
[[datasets]]
[[datasets.subsets]]
image_dir = "low"
multiplier = { 1 = 1, 10 = 0 }
[[datasets]]
resolution = 768
[[datasets.subsets]]
image_dir = "full"
multiplier = { 1 = 0, 10 = 1 }
"""
    message = error_of(text)
    assert message.startswith("dataset.toml: datasets[0]: multiplier: its schedules change every subset alike")
    assert "bucket_no_upscale = true" in message and "two runs" in message


def test_rates_are_scaled_to_the_first_epoch_total_and_windows_hold():
    folders(a=10, b=5)
    config = load(two(a="multiplier = 1", b="multiplier = 2\nstart_epoch = 3\nend_epoch = 5"))
    counts = trained(config, 7)
    assert counts[:2, 1].tolist() == [0, 0] and counts[5:, 1].tolist() == [0, 0]
    assert counts[:2, 0].tolist() == [10, 10] and counts[5:, 0].tolist() == [10, 10]
    assert (np.abs(counts[2:5] - [5, 5]) <= 1).all()  # epochs 3-5: 10 + 10 asked, scaled to 10
    assert counts.sum(axis=1).tolist() == [10] * 7


def test_images_per_epoch_is_a_count_that_stays_right_when_the_folder_grows():
    folders(a=10, b=20)
    text = two(a="images_per_epoch = 6", b="multiplier = 1")
    before = trained(load(text), 4)
    folders(b__more=0)  # (a subfolder is not read: the count alone changes below)
    from imagegen import make_image

    for i in range(10, 30):
        make_image(f"a/extra{i}.png", 512, 512)
    after = trained(load(text), 4)
    assert before[:, 0].sum() == after[:, 0].sum() == 24  # 6 per epoch, of 10 images, then of 30


def test_plan_prints_targets_beside_actuals_at_the_turning_epochs(capsys):
    folders(a=20, b=20)
    path = "dataset.toml"
    with open(path, "w") as handle:
        handle.write(two(a="multiplier = 1", b="multiplier = { 1 = 0.5, 4 = 0.1, step = true }\nloss_weight = { 1 = 1, 4 = 0.5 }"))
    assert main(["plan", path, "--epochs", "6", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "batches per epoch (scheduled: 30 images every epoch" in out
    assert "scheduled (subset)" in out and "1 (epoch 1) → 0.5 (epoch 4)" in out  # the loss weight's schedule
    table = out[out.index("schedule: target images"):].splitlines()
    assert table[1].split() == ["epoch", "1", "4", "6"]
    b_row = next(line for line in table if line.startswith("b "))
    assert b_row.split()[1:4] == ["10.0", "/", "10"] and "2.7 /" in b_row  # 20 x 0.1 of 22, scaled to 30


def test_a_scheduled_dataset_records_its_schedules_in_the_metadata():
    folders(a=4, b=4)
    config = load(two(b="multiplier = { 1 = 0.5, 3 = 1 }\nstart_epoch = 2"))
    metadata = DatasetPlan(config.datasets[0], 3).metadata()
    assert metadata["schedules"] == {"b": {"multiplier": {"1": 0.5, "3": 1}, "start_epoch": 2}}
    assert metadata["images_per_epoch"] == 4 and metadata["planner_version"] == 2


def test_a_loss_weight_schedule_follows_the_epoch():
    folders(a=2, b=2)
    weight = load(two(a="loss_weight = { 1 = 2, 3 = 0.5, step = true }")).datasets[0].subsets[0].loss_weight
    assert [weight.at(e) for e in (1, 2, 3, 9)] == [2, 2, 0.5, 0.5] and not weight.is_default


def test_balance_refuses_a_scheduled_config_and_leaves_it_as_it_was(capsys):
    folders(a=4, b=4)
    text = two(b="multiplier = { 1 = 0.5, 4 = 0.1 }")
    with open("dataset.toml", "w") as handle:
        handle.write(text)
    assert main(["balance", "dataset.toml", "--per-epoch", "3", "--write"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(
        "kohya-multiplier: error: dataset.toml: datasets[0].subsets[1]: multiplier: balance solves constant rates")
    assert open("dataset.toml").read() == text


def test_the_scheduled_rotation_bound_is_the_static_one_for_a_constant_fraction():
    from kohya_multiplier.report.data import rotation_bound, scheduled_rotation_bound

    for fraction in (0.05, 0.1, 0.29, 1 / 3, 0.5, 0.6, 0.99):
        assert scheduled_rotation_bound(lambda e: fraction, 7) == rotation_bound(fraction)
    assert scheduled_rotation_bound(lambda e: 1.5, 3) == 4  # a whole rate trains every image (2 periods of 1 epoch, + 2)
    assert scheduled_rotation_bound(lambda e: 0.5 if e < 10 else 0.0, 6) is None  # the subset stops first


def test_the_page_and_picture_draw_each_subsets_share_against_its_target(tmp_path):
    folders(a=20, b=20)
    with open("dataset.toml", "w") as handle:
        handle.write(two(a="multiplier = 1", b="multiplier = { 1 = 0, 8 = 1 }"))
    page, picture = tmp_path / "p.html", tmp_path / "p.svg"
    assert main(["plan", "dataset.toml", "--epochs", "8", "--html", str(page)]) == 0
    html = page.read_text()
    assert "Schedule: each subset&#x27;s share of every epoch" in html or "Schedule: each subset's share of every epoch" in html
    assert html.count("<polyline") == 4  # two subsets, trained and target
    assert "balanced: every subset within the contract in every epoch" in html  # judged against each epoch's target
    pytest.importorskip("matplotlib")
    assert main(["plan", "dataset.toml", "--epochs", "8", "--plot", str(picture)]) == 0
    assert "share of each epoch (solid: trained, dashed: target)" in picture.read_text()


def test_balance_writes_a_share_that_changes_over_training(capsys):
    """--ratio reg=1:10%,20:2%: the regularization share falls from 10 % to 2 % by epoch 20 at the
    first epoch's total; written as a multiplier schedule the plan then keeps."""
    folders(train__subject=40, reg__person=200)
    text = HEAD + """
[[datasets]]
batch_size = 2
  [[datasets.subsets]]
  image_dir = "train/subject"  # mine
  multiplier = 1
  [[datasets.subsets]]
  image_dir = "reg/person"
  is_reg = true
  num_repeats = 1
"""
    with open("dataset.toml", "w") as handle:
        handle.write(text)
    assert main(["balance", "dataset.toml", "--ratio", "reg=1:10%,20:2%", "--write"]) == 0
    out = capsys.readouterr().out
    assert "person: multiplier = { 1 = " in out
    written = open("dataset.toml").read()
    assert "# mine" in written and "num_repeats" not in written and "multiplier = {1 = " in written
    config = load(written)
    counts = trained(config, 24)
    totals = counts.sum(axis=1)
    assert (np.abs(totals - totals[0]) <= 2).all()  # the first epoch's total, every epoch
    share = counts[:, 1] / totals
    assert abs(share[0] - 0.10) <= 0.03 and abs(share[19] - 0.02) <= 0.03 and share[5] > share[15]


@pytest.mark.parametrize("ratio, message", [
    ("reg=1:10%,1:2%", "epochs must increase in 'reg=1:10%,1:2%'"),
    ("reg=0:10%", "expected EPOCH:FRACTION points (e.g. reg=1:10%,20:2%), got '0:10%' in 'reg=0:10%'"),
    ("reg=1:10%,5:120%", "fraction in 'reg=1:10%,5:120%' must be above 0 and below 1 (0 %-100 %)"),
])
def test_a_bad_ratio_schedule_is_one_line(ratio, message):
    from kohya_multiplier.balance.solve import parse_ratio
    from kohya_multiplier.errors import UserError

    with pytest.raises(UserError) as info:
        parse_ratio(ratio)
    assert str(info.value) == f"--ratio: {message}"


def test_report_of_a_scheduled_runs_schedule_judges_each_epoch_against_its_target(tmp_path):
    folders(a=20, b=20)
    with open("dataset.toml", "w") as handle:
        handle.write(two(a="multiplier = 1", b="multiplier = { 1 = 0, 8 = 1 }\nstart_epoch = 2"))
    schedule, page = tmp_path / "s.jsonl", tmp_path / "r.html"
    assert main(["plan", "dataset.toml", "--epochs", "8", "--schedule", str(schedule)]) == 0
    assert main(["report", str(schedule), "--config", "dataset.toml", "--html", str(page)]) == 0
    html = page.read_text()
    assert "balanced: every subset within the contract in every epoch" in html and html.count("<polyline") == 4


def test_a_scheduled_loss_weight_is_recorded_per_image_in_the_dry_runs_schedule(tmp_path):
    """Also in a dataset without multipliers (sd-scripts trains it itself): the schedule file
    carries each image's weight of that epoch, as training records the weight it applied."""
    import json

    folders(a=4)
    with open("dataset.toml", "w") as handle:
        handle.write(HEAD + '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\nloss_weight = { 1 = 1, 3 = 0.5 }\n')
    schedule = tmp_path / "s.jsonl"
    assert main(["plan", "dataset.toml", "--epochs", "4", "--schedule", str(schedule)]) == 0
    weights = {}
    for line in schedule.read_text().splitlines():
        record = json.loads(line)
        weights.setdefault(record["epoch"], set()).update(record["loss_weights"])
    assert weights == {1: {1.0}, 2: {0.75}, 3: {0.5}, 4: {0.5}}
