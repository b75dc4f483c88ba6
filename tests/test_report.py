"""The plan report: its data model (what the picture and the page show), the picture's formats,
`plan --plot/--html` and `report SCHEDULE.jsonl` as a user runs them."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from kohya_multiplier.report import page as html_report

from kohya_multiplier.report import svg_chart
from kohya_multiplier.cli import main
from kohya_multiplier.report.data import (
    FAR_OVER, FAR_UNDER, OK, OVER, UNDER, EpochAccumulator, Report, balance_status, dataset_report, epoch_bins,
    rotation_bound,
)
from tests.imagegen import make_folder


# ------------------------------------------------------------------ the data model


@pytest.mark.parametrize("count, target, status", [
    (0, 0.3, OK), (1, 0.3, OK), (2, 0.3, UNDER.replace("under", "over")), (3, 0.3, FAR_OVER),  # rounding of a small target
    (1, 1.6, OK), (2, 1.6, OK), (20, 25, OK), (30, 25, OK), (31, 25, OVER), (19, 25, UNDER),
    (12, 25, FAR_UNDER), (38, 25, FAR_OVER), (25, None, "unknown"),
])
def test_rounding_within_the_contract_is_not_an_alarm(count, target, status):
    assert balance_status(count, target) == status


def test_rotation_bound_of_the_contract():
    assert rotation_bound(0.1) == 22 and rotation_bound(0.3) == 2 * 4 + 2
    assert rotation_bound(1.0) == 1 and rotation_bound(2.5) == 1 and rotation_bound(0) is None


@pytest.mark.parametrize("epochs, columns, first_label, last_label", [
    (1, 1, "1", "1"), (8, 8, "1", "8"), (20, 20, "1", "20"), (21, 11, "1-2", "21"), (120, 20, "1-6", "115-120"),
    (1000, 20, "1-50", "951-1000"),
])
def test_many_epochs_are_grouped_into_at_most_twenty_ranges(epochs, columns, first_label, last_label):
    bins = epoch_bins(list(range(1, epochs + 1)))
    assert len(bins) == columns and bins[0].label == first_label and bins[-1].label == last_label
    covered = [e for b in bins for e in range(b.first, b.last + 1)]
    assert covered == list(range(1, epochs + 1))


def _report(epoch_images, subset_of_image, first=1, names=None, multipliers=None, targets=None):
    n_subsets = max(subset_of_image) + 1
    acc = EpochAccumulator(np.array(subset_of_image), n_subsets, first)
    for offset, images in enumerate(epoch_images):
        acc.add(first + offset, images)
    names = names or [f"s{i}" for i in range(n_subsets)]
    return dataset_report(0, acc, names=names, multipliers=multipliers or [0.5] * n_subsets,
                          multiplier_texts=["0.5 (subset)"] * n_subsets, targets=targets or [1.0] * n_subsets,
                          batches_per_epoch=[1] * len(epoch_images))


def test_counts_coverage_and_longest_gap_of_each_image():
    # subset 0: images 0-3 at 0.5; subset 1: image 4 every epoch
    d = _report([[0, 1, 4], [2, 3, 4], [0, 1, 4], [4], [2, 3, 4]], [0, 0, 0, 0, 1])
    a, b = d.subsets
    assert a.counts.tolist() == [2, 2, 2, 0, 2] and b.counts.tolist() == [1] * 5
    assert a.seen == 4 and a.all_seen_epoch == 2 and a.seen_text == "4 of 4"
    assert a.longest_gap == 3 and not a.gap_open  # images 2, 3: epochs 2 and 5
    assert b.longest_gap == 1 and b.gap_text == "1"
    # images 0 and 1 untrained since epoch 3: a wait of 3 so far, not longer than a closed one
    d = _report([[0, 1], [2, 3], [0, 1], [], [], []], [0, 0, 0, 0])
    assert d.subsets[0].longest_gap == 5 and d.subsets[0].gap_open and d.subsets[0].gap_text == "≥ 5"


def test_coverage_is_a_count_that_never_rounds_up():
    d = _report([list(range(399))], [0] * 400, multipliers=[0.9975], targets=[399.0])
    s = d.subsets[0]
    assert s.seen_text == "399 of 400" and s.all_seen_epoch is None
    assert s.all_seen_text == "not yet (399 of 400)"
    page = html_report.render_page(Report(title="t", datasets=[d]))
    shown = page.split("</style>", 1)[1]
    assert "399 of 400" in shown and not re.search(r"100\s?%", shown)


def test_a_resumed_range_has_open_leading_waits():
    d = _report([[0], [1]], [0, 0], first=11)
    s = d.subsets[0]
    assert s.longest_gap == 2 and s.gap_open  # image 1 waited at least 2 epochs (11, 12) before epoch 12


def test_epochs_must_increase():
    acc = EpochAccumulator(np.array([0]), 1, 1)
    acc.add(2, [0])
    with pytest.raises(ValueError, match="increase"):
        acc.add(2, [0])


# ------------------------------------------------------------------ the plan and its report


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The bundled example, planned with --plot, --html and --schedule in one run."""
    from kohya_multiplier.example import generate

    root = tmp_path_factory.mktemp("report")
    config = Path(generate(str(root / "data")))
    out = root / "out"
    out.mkdir()
    code = main(["plan", str(config), "--epochs", "8", "--seed", "3", "--schedule", str(out / "s.jsonl"),
                 "--html", str(out / "plan.html"), "--plot", str(out / "plan.svg")])
    assert code == 0
    return config, out


def _planned_report(config, epochs=8, seed=3, from_epoch=1):
    """The Report that `plan` draws, built as plan builds it (through the command's own code path)."""
    from kohya_multiplier.commands import plan as plan_command
    captured = {}
    original = plan_command.write_report
    plan_command.write_report = lambda report, files, plot, html: captured.setdefault("report", report)
    try:
        assert main(["plan", str(config), "--epochs", str(epochs), "--seed", str(seed), "--from-epoch", str(from_epoch),
                     "--html", "unused.html"]) == 0
    finally:
        plan_command.write_report = original
    return captured["report"]


def test_the_report_shows_what_the_text_table_shows(example, capsys):
    config, _ = example
    report = _planned_report(config)
    text = capsys.readouterr().out
    (d,) = report.datasets
    names = [s.name for s in d.subsets]
    assert names == ["alice", "bob", "carol", "watercolor_style", "reg_person (reg)"]
    for s in d.subsets:  # min / mean / max columns of the text table
        row = next(line for line in text.splitlines() if line.startswith(s.name + " "))
        assert f" {int(s.counts.min())} " in row and f"{s.counts.mean():.2f}" in row and f" {int(s.counts.max())} " in row
        assert f"{s.target:.2f}" in row and str(s.images) in row
    assert [s.target for s in d.subsets] == [30.0, 30.0, 30.0, 30.0, 120.0]
    assert d.epochs == list(range(1, 9)) and d.epoch_length is not None
    assert f"{d.epoch_length} batches per epoch" in text
    assert report.batches_per_epoch == d.epoch_length and report.total_batches == 8 * d.epoch_length
    assert d.shape_line in text and all(note in text for note in report.notes) and report.notes
    alice = d.subsets[0]
    assert alice.all_seen_epoch is None and alice.seen < 300 and alice.bound == 22  # 0.1: 10 epochs per turn
    assert all(s.overall_status == OK for s in d.subsets), [s.overall_status for s in d.subsets]
    assert not d.has_loss_weight


def test_plan_writes_the_page_and_the_picture_in_the_named_format(example):
    config, out = example
    page = (out / "plan.html").read_text(encoding="utf-8")
    svg = (out / "plan.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert page.count("<svg") == 3 and "<script" not in page and "<img" not in page
    assert not re.search(r'(src|href)="', page)  # nothing fetched: no CDN, no network
    for name in ["alice", "bob", "carol", "watercolor_style", "reg_person"]:
        assert f"<td class=name>{name}" in page
    assert "batches per epoch" in page and "batches over these epochs" in page
    assert "loss weight" not in page


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".SVG", b"<?xml")])
def test_plot_writes_the_format_its_extension_names(example, tmp_path, suffix, magic):
    config, _ = example
    path = tmp_path / f"picture{suffix}"
    assert main(["plan", str(config), "--epochs", "2", "--plot", str(path)]) == 0
    assert path.read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["out.jpg", "out.webp", "out", "out.png.txt"])
def test_plot_refuses_other_extensions_before_any_work(example, tmp_path, capsys, name):
    config, _ = example
    schedule = tmp_path / "s.jsonl"
    code = main(["plan", str(config), "--epochs", "2", "--plot", str(tmp_path / name), "--schedule", str(schedule)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / name}: --plot: cannot write" in err and ".png, .svg or .pdf" in err
    assert not (tmp_path / name).exists() and not schedule.exists()


def test_loss_weight_column_only_where_a_loss_weight_exists(tmp_path):
    d = _report([[0]], [0])
    assert "loss weight" not in html_report.render_page(Report(title="t", datasets=[d]))
    d.subsets[0].loss_weight = "2 (subset)"
    page = html_report.render_page(Report(title="t", datasets=[d]))
    assert "<th>loss weight</th>" in page and "2 (subset)" in page


def _tree(root: Path, folders: dict[str, int]) -> Path:
    lines = ["[general]\nresolution = 512\n\n[[datasets]]\nbatch_size = 2\n"]
    for folder, (count, multiplier) in folders.items():
        make_folder(root / folder, [(512, 512)] * count)
        lines.append(f'[[datasets.subsets]]\nimage_dir = "{(root / folder).as_posix()}"\nmultiplier = {multiplier}\n')
    config = root / "dataset.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


def test_report_from_a_schedule_equals_the_plans_report(tmp_path, capsys):
    config = _tree(tmp_path, {"猫_café": (10, 0.3), "bob": (4, 1.0)})
    schedule = tmp_path / "s.jsonl"
    assert main(["plan", str(config), "--epochs", "12", "--schedule", str(schedule)]) == 0
    planned = _planned_report(config, epochs=12, seed=0)
    page = tmp_path / "r.html"
    assert main(["report", str(schedule), "--config", str(config), "--html", str(page)]) == 0
    assert "report of 12 epochs" in capsys.readouterr().out
    from kohya_multiplier.report.sources import schedule_reports
    from kohya_multiplier.report.schedule import ScheduleFile
    from kohya_multiplier.dataset.config import load_training_config

    (read,) = schedule_reports(ScheduleFile(str(schedule)), load_training_config(str(config)))
    (plan_d,) = planned.datasets
    for a, b in zip(read.subsets, plan_d.subsets):
        assert (a.name, a.target, a.counts.tolist(), a.seen, a.all_seen_epoch, a.longest_gap) == \
               (b.name, b.target, b.counts.tolist(), b.seen, b.all_seen_epoch, b.longest_gap)
    assert read.batches_per_epoch == plan_d.batches_per_epoch
    text = page.read_text(encoding="utf-8")
    assert "猫_café" in text and "planner version" in text


def test_report_without_config_makes_each_folder_a_subset(tmp_path):
    config = _tree(tmp_path, {"alice": (6, 0.5), "bob": (2, 1.0)})
    schedule = tmp_path / "s.jsonl"
    assert main(["plan", str(config), "--epochs", "4", "--schedule", str(schedule)]) == 0
    from kohya_multiplier.report.sources import schedule_reports
    from kohya_multiplier.report.schedule import ScheduleFile

    (d,) = schedule_reports(ScheduleFile(str(schedule)), None)
    assert [s.name for s in d.subsets] == ["alice", "bob"] and not d.has_targets
    assert [s.counts.tolist() for s in d.subsets] == [[3] * 4, [2] * 4]
    assert d.subsets[1].seen_text == "2 of 2"
    page = html_report.render_page(Report(title="t", datasets=[d]))
    assert "give --config" in page


def test_report_errors_are_one_line(tmp_path, capsys):
    config = _tree(tmp_path, {"alice": (2, 0.5)})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"epoch": 1, "dataset": 0, "batch": 0, "resolution": [64, 64], "images": ["/elsewhere/x.png"]}) + "\n")
    cases = [
        (["report", str(empty), "--html", str(tmp_path / "r.html")], "holds no batches"),
        (["report", str(bad), "--config", str(config), "--html", str(tmp_path / "r.html")], "is in no subset"),
        (["report", str(bad)], "--html FILE and/or --plot FILE"),
        (["report", str(bad), "--plot", str(tmp_path / "r.gif")], "cannot write .gif"),
        (["report", str(bad), "--html", str(bad)], "is an input"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------ rendering at scale, names


def _synthetic(subsets=200, epochs=1000, seed=0) -> Report:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 400, size=subsets)
    subset_of_image = np.repeat(np.arange(subsets), sizes)
    acc = EpochAccumulator(subset_of_image, subsets, 1)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    local = np.arange(len(subset_of_image)) - offsets[subset_of_image]
    size, take = sizes[subset_of_image], np.maximum(1, sizes // 10)[subset_of_image]
    for e in range(1, epochs + 1):  # a rotation: the next tenth of each subset every epoch
        acc.add(e, np.flatnonzero((local - e * take) % size < take))
    names = [f"subject_{i:03d}_" + "long_name_" * (i % 4) + ("名前" if i % 7 == 0 else "") for i in range(subsets)]
    d = dataset_report(0, acc, names=names, multipliers=[0.1] * subsets, multiplier_texts=["0.1 (subset)"] * subsets,
                       targets=[float(max(1, s // 10)) for s in sizes], batches_per_epoch=[500] * epochs)
    return Report(title="synthetic", datasets=[d], notes=["a note"], warnings=["a warning"])


def test_charts_keep_their_size_for_1000_epochs_and_200_subsets():
    report = _synthetic()
    d = report.datasets[0]
    svg = svg_chart.epochs_svg(d)
    width = int(re.search(r'width="(\d+)"', svg).group(1))
    assert width <= 1100 and svg.count("<rect") == 200 * 20  # 20 ranges of 50 epochs, one cell each
    assert "951-1000" in svg
    for chart in (svg_chart.balance_svg(d), svg_chart.rotation_svg(d), svg):
        assert f'font: {svg_chart.FONT}px' in chart and svg_chart.FONT >= 12
    assert "subject_199" in svg


def test_picture_of_unicode_names_without_matplotlib_warnings():
    pytest.importorskip("matplotlib")
    from kohya_multiplier.report import picture as plot
    d = _report([[0, 1]], [0, 1], names=["猫_café", "Ωmega_α"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = plot.draw_report(Report(title="名前", datasets=[d]), fmt="png")
    assert data.startswith(b"\x89PNG")
    families, missing = plot.font_plan(["猫_café", "Ωmega_α"])
    labels = [t.get_text() for ax in plot.build_figure(Report(title="t", datasets=[d])).axes for t in ax.get_yticklabels()]
    assert "Ωmega_α" in labels  # DejaVu has Greek
    assert not any("last resort" in f.lower() for f in families)  # a font of boxes is no fallback
    if ord("猫") in missing:  # no installed font has it: drawn as "?", never a box and a warning
        assert "?_café" in labels
    else:
        assert "猫_café" in labels


def test_picture_grows_with_subsets_not_with_epochs():
    pytest.importorskip("matplotlib")
    from kohya_multiplier.report import picture as plot
    small = plot.build_figure(_synthetic(subsets=5, epochs=1000)).get_size_inches()
    tall = plot.build_figure(_synthetic(subsets=200, epochs=10)).get_size_inches()
    assert small[0] < 20 and tall[0] < 20  # width bounded: epochs are grouped into ranges
    assert tall[1] >= 200 * plot.ROW_INCHES


def test_verdicts_say_at_a_glance_what_is_off():
    d = _report([[0, 1], [2, 3]], [0, 0, 0, 0], targets=[2.0])
    assert d.balance_verdict().startswith("balanced") and "every image trained by epoch 2" in d.rotation_verdict()
    d = _report([[0, 1, 2, 3], [0]], [0, 0, 0, 0], targets=[2.0])
    assert "1 of 1 subsets off target" in d.balance_verdict() and "s0 (" in d.balance_verdict()
    d = _report([[0], [0], [0], [0], [0], [0], [0]], [0, 0], multipliers=[0.5], targets=[1.0])
    verdict = d.rotation_verdict()
    assert "not fully trained yet (s0: 1 of 2)" in verdict and "beyond the rotation bound: s0" in verdict


def test_report_draws_the_picture_from_a_schedule_alone(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    config = _tree(tmp_path, {"alice": (6, 0.5)})
    schedule = tmp_path / "s.jsonl"
    assert main(["plan", str(config), "--epochs", "3", "--schedule", str(schedule)]) == 0
    picture = tmp_path / "trained.pdf"
    assert main(["report", str(schedule), "--config", str(config), "--plot", str(picture)]) == 0
    assert picture.read_bytes().startswith(b"%PDF") and "report of 3 epochs (6 batches)" in capsys.readouterr().out


def test_stock_regularization_shows_its_unused_images_and_no_rotation_bound(tmp_path):
    make_folder(tmp_path / "img" / "2_alice", [(512, 512)] * 5)
    make_folder(tmp_path / "reg" / "1_person", [(512, 512)] * 30)
    page = tmp_path / "p.html"
    assert main(["plan", "--train_data_dir", str(tmp_path / "img"), "--reg_data_dir", str(tmp_path / "reg"),
                 "--epochs", "4", "--resolution", "512", "--html", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "10 of 30" in text and "never (20 unused)" in text
    assert "beyond the rotation bound" not in text and " (1)</td>" not in text  # no contract bound on stock repeats


def test_a_run_cut_short_names_its_short_epoch(tmp_path):
    config = _tree(tmp_path, {"alice": (8, 0.5)})
    schedule = tmp_path / "s.jsonl"
    assert main(["plan", str(config), "--epochs", "3", "--schedule", str(schedule)]) == 0
    lines = schedule.read_text().splitlines()
    schedule.write_text("\n".join(lines[:-1]) + "\n")  # the last batch of epoch 3 never trained
    page = tmp_path / "r.html"
    assert main(["report", str(schedule), "--config", str(config), "--html", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "1 epoch with fewer batches than the others (cut short, or recorded in part): epoch 3 (1 of 2)" in text
    assert "varies: dataset 0: 1-2" in text


def test_the_pictures_panel_titles_carry_the_verdicts():
    pytest.importorskip("matplotlib")
    from kohya_multiplier.report import picture as plot
    d = _report([[0, 1, 2, 3], [0]], [0, 0, 0, 0], targets=[2.0])
    titles = [ax.get_title(loc="left") for ax in plot.build_figure(Report(title="t", datasets=[d])).axes]
    assert "Dataset 0: balance (1 subset off target)" in titles
    assert "rotation (every image trained)" in titles


def test_the_page_repeats_every_warning_and_note_of_the_text_output(tmp_path, capsys):
    config = _tree(tmp_path, {"alice": (4, 0.5), "gone": (3, 0)})
    (tmp_path / "alice" / "broken.png").write_bytes(b"")  # skipped with a warning
    page = tmp_path / "p.html"
    assert main(["plan", str(config), "--epochs", "2", "--html", str(page)]) == 0
    captured = capsys.readouterr()
    warning_lines = [line.split("warning: ", 1)[1] for line in captured.err.splitlines() if "warning: " in line]
    note_lines = [line for line in captured.out.splitlines() if "excluded" in line]
    assert warning_lines and note_lines
    text = html_report.html.unescape(page.read_text(encoding="utf-8"))
    for line in warning_lines + note_lines:
        assert line in text, line
    assert "<td class=name>gone</td>" in page.read_text(encoding="utf-8") and "excluded" in text


def test_the_page_shows_the_runs_step_arithmetic_when_plan_computes_it(example, tmp_path, capsys):
    config, _ = example
    page = tmp_path / "p.html"
    assert main(["plan", str(config), "--max_train_epochs", "3", "--gradient_accumulation_steps", "2",
                 "--html", str(page)]) == 0
    out = capsys.readouterr().out
    text = html_report.html.unescape(page.read_text(encoding="utf-8"))
    for label in ("num batches per epoch", "optimizer steps per epoch", "num epochs", "total optimization steps"):
        line = next(line for line in out.splitlines() if line.strip().startswith(label + ":"))
        assert f"<dt>{label}</dt><dd>{line.split(': ', 1)[1]}</dd>" in text
