"""sd-scripts' step arithmetic (issue 9, point 3), against a step-by-step simulation of its loop."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from kohya_multiplier.run_arithmetic import SD_SCRIPTS_DEFAULT_MAX_TRAIN_STEPS, compute, format_run


def simulate(batches: int, processes: int, accumulation: int, max_epochs: int | None, max_steps: int | None):
    """sd-scripts' training loop on one process: (printed batches, steps, epochs, batches trained)."""
    per_process = math.ceil(batches / processes)  # accelerate's even batches
    if max_epochs is not None:
        max_steps = max_epochs * math.ceil(batches / processes / accumulation)
    elif max_steps is None:
        max_steps = SD_SCRIPTS_DEFAULT_MAX_TRAIN_STEPS
    epochs = math.ceil(max_steps / math.ceil(per_process / accumulation))
    step = trained = 0
    for _ in range(epochs):
        for b in range(per_process):
            trained += 1
            if (b + 1) % accumulation == 0 or b + 1 == per_process:  # sync: G batches or the epoch's end
                step += 1
            if step >= max_steps:
                break
        if step >= max_steps:
            break
    return per_process, max_steps, epochs, trained


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 500), st.integers(1, 8), st.integers(1, 8),
    st.one_of(st.none(), st.integers(1, 30)), st.one_of(st.none(), st.integers(1, 400)),
)
def test_matches_the_loop(batches, processes, accumulation, max_epochs, max_steps):
    run = compute(batches, processes=processes, gradient_accumulation_steps=accumulation,
                  max_train_epochs=max_epochs, max_train_steps=max_steps)
    per_process, steps, epochs, trained = simulate(batches, processes, accumulation, max_epochs, max_steps)
    assert (run.batches_per_process, run.max_train_steps, run.num_epochs, run.batches_trained) == (per_process, steps, epochs, trained)
    assert len(run.epoch_fractions()) == epochs and abs(sum(run.epoch_fractions()) * per_process - trained) < 1e-6


def test_worked_example_two_processes_accumulation_two():
    run = compute(13, processes=2, gradient_accumulation_steps=2, max_train_epochs=3)
    assert (run.batches_per_process, run.steps_per_epoch, run.num_epochs, run.max_train_steps) == (7, 4, 3, 12)
    text = "\n".join(format_run(run))
    assert "num batches per epoch: 7 per process (13 in all)" in text and "total optimization steps: 12" in text


def test_max_train_steps_cuts_the_last_epoch():
    run = compute(10, max_train_steps=25)
    assert run.num_epochs == 3 and run.batches_trained == 25 and run.epoch_fractions() == [1.0, 1.0, 0.5]
    assert any("stops after 5 of its 10 batches" in line for line in format_run(run))


# --- plan --config_file and the run options -------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from imagegen import make_folder  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def plan(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kohya_multiplier", "plan", *args], capture_output=True, text=True,
                          cwd=str(cwd), env={"PYTHONPATH": str(REPO_ROOT)}, timeout=120)


@pytest.fixture
def tree(tmp_path):
    make_folder(str(tmp_path / "a"), [(512, 512)] * 8)
    (tmp_path / "ds.toml").write_text('[general]\nresolution = 512\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "a"\n  multiplier = 0.5\n')
    return tmp_path


def figure(out: str, label: str) -> int:
    line = next(line for line in out.splitlines() if line.strip().startswith(label + ":"))
    return int(line.split(":")[1].split()[0])


def test_config_file_gives_the_dataset_config_and_options_and_the_command_line_wins(tree):
    (tree / "run.toml").write_text('[model]\nseed = 3\n[training]\ndataset_config = "ds.toml"\nmax_train_epochs = 4\n'
                                   'gradient_accumulation_steps = 2\n')
    from_file = plan(tree, "--config_file", "run")  # sd-scripts appends .toml
    assert from_file.returncode == 0, from_file.stderr
    assert "seed 3" in from_file.stdout and figure(from_file.stdout, "num epochs") == 4
    assert figure(from_file.stdout, "total optimization steps") == 4 * 2  # 4 batches per epoch / 2
    assert "images per epoch over epochs 1..4" in from_file.stdout  # plans the run's own epochs
    overridden = plan(tree, "--config_file", "run.toml", "--max_train_epochs", "2")
    assert figure(overridden.stdout, "num epochs") == 2


@pytest.mark.parametrize(
    "content, message",
    [('max_train_epochs = "4"\ndataset_config = "ds.toml"\n', "max_train_epochs: must be an integer"),
     ("[x\n", "is not valid TOML")],
)
def test_bad_config_file_is_a_one_line_error(tree, content, message):
    (tree / "bad.toml").write_text(content)
    result = plan(tree, "--config_file", "bad.toml")
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_run_options_must_be_positive(tree):
    result = plan(tree, "ds.toml", "--gradient_accumulation_steps", "0")
    assert result.returncode == 2 and "--gradient_accumulation_steps" in result.stderr


def test_without_run_options_no_run_block(tree):
    result = plan(tree, "ds.toml", "--epochs", "2")
    assert result.returncode == 0 and "the run, as sd-scripts will print it" not in result.stdout
