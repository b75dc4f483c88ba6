"""`kohya-multiplier plan` and `example` as a user runs them: output, schedule file, resume, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kohya_multiplier.cli import main
from kohya_multiplier.example import generate, write_png
from kohya_multiplier.planner import PLANNER_VERSION

GOLDEN = Path(__file__).parent / "golden"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kohya_multiplier", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture(scope="module")
def example_config(tmp_path_factory) -> Path:
    return Path(generate(str(tmp_path_factory.mktemp("example") / "data")))


def test_plan_of_the_example_matches_the_golden_table(example_config):
    result = run_cli("plan", str(example_config), "--epochs", "8", "--seed", "1")
    assert result.returncode == 0, result.stderr
    text = result.stdout.replace(str(example_config), "<config>")
    golden = GOLDEN / "plan_example.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_example_subsets_are_balanced_within_tolerance(example_config, capsys):
    assert main(["plan", str(example_config), "--epochs", "20"]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.split()[:1] and line.split()[0] in
            {"alice", "bob", "carol", "watercolor_style"}}
    for name, row in rows.items():
        low, mean, high = int(row[-4]), float(row[-3]), int(row[-2])
        assert 25 <= low and high <= 35 and abs(mean - 30) <= 1, (name, row)


def test_schedule_file_lists_every_batch_with_absolute_paths(example_config, tmp_path):
    schedule = tmp_path / "schedule.jsonl"
    assert main(["plan", str(example_config), "--epochs", "3", "--schedule", str(schedule)]) == 0
    records = [json.loads(line) for line in schedule.read_text().splitlines()]
    per_epoch = {}
    for record in records:
        assert set(record) == {"epoch", "dataset", "batch", "resolution", "images", "planner_version"}
        assert record["planner_version"] == PLANNER_VERSION
        assert 1 <= len(record["images"]) <= 4
        assert all(os.path.isabs(p) and os.path.exists(p) for p in record["images"])
        per_epoch.setdefault(record["epoch"], []).append(record["batch"])
    assert sorted(per_epoch) == [1, 2, 3]
    lengths = {len(batches) for batches in per_epoch.values()}
    assert len(lengths) == 1  # constant epoch length
    assert all(batches == list(range(len(batches))) for batches in per_epoch.values())


def test_from_epoch_plans_what_an_uninterrupted_run_plans(example_config, tmp_path):
    full, resumed = tmp_path / "full.jsonl", tmp_path / "resumed.jsonl"
    assert main(["plan", str(example_config), "--epochs", "6", "--seed", "5", "--schedule", str(full)]) == 0
    assert main(["plan", str(example_config), "--epochs", "2", "--from-epoch", "5", "--seed", "5", "--schedule", str(resumed)]) == 0
    tail = [line for line in full.read_text().splitlines() if json.loads(line)["epoch"] >= 5]
    assert resumed.read_text().splitlines() == tail


def test_seed_changes_the_selection_but_not_the_counts(example_config, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    main(["plan", str(example_config), "--epochs", "1", "--seed", "1", "--schedule", str(a)])
    main(["plan", str(example_config), "--epochs", "1", "--seed", "2", "--schedule", str(b)])
    assert a.read_text() != b.read_text()
    assert len(a.read_text().splitlines()) == len(b.read_text().splitlines())


def test_dreambooth_folders_with_fractional_prefixes(tmp_path):
    train = tmp_path / "train"
    for folder, count in [("0.25_alice", 40), ("2_bob", 3)]:
        (train / folder).mkdir(parents=True)
        for i in range(count):
            write_png(str(train / folder / f"{i:03d}.png"), 64, 64, (i, 0, 0))
    result = run_cli("plan", "--train_data_dir", str(train), "--resolution", "512", "--epochs", "4")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert lines["0.25_alice"][1:3] == ["40", "0.25"]
    assert lines["0.25_alice"][-4:-1] == ["10", "10.00", "10"]
    assert lines["2_bob"][-4:-1] == ["6", "6.00", "6"]


def test_batch_size_option_is_used_when_the_config_does_not_set_it(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(10):
        write_png(str(tmp_path / "imgs" / f"{i}.png"), 64, 64, (0, i, 0))
    config = tmp_path / "c.toml"
    config.write_text(f'[[datasets]]\nresolution = 512\n[[datasets.subsets]]\nimage_dir = "{tmp_path / "imgs"}"\nmultiplier = 1\n')
    result = run_cli("plan", str(config), "--train_batch_size", "3", "--epochs", "1")
    assert "batch size 3" in result.stdout and "4 batches per epoch" in result.stdout
    config.write_text(config.read_text().replace("resolution = 512", "resolution = 512\nbatch_size = 5"))
    result = run_cli("plan", str(config), "--train_batch_size", "3", "--epochs", "1")
    assert "batch size 5" in result.stdout and "2 batches per epoch" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["plan"], "kohya-multiplier: error: config: give a dataset config file, --train_data_dir or --in_json\n"),
        (["plan", "missing.toml", "--epochs", "0"], "kohya-multiplier: error: --epochs: must be at least 1, got 0\n"),
        (["plan", "missing.toml", "--from-epoch", "0"], "kohya-multiplier: error: --from-epoch: epochs count from 1, got 0\n"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(args, message, tmp_path):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == message
    assert "Traceback" not in result.stderr


def test_example_command_writes_and_plans(tmp_path):
    result = run_cli("example", str(tmp_path / "ex"), "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ex" / "dataset.toml").exists()
    assert "alice" in result.stdout and "batches per epoch" in result.stdout
