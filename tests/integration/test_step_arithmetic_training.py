"""Issue 9, point 3: the dry run prints the run's step arithmetic exactly as sd-scripts does.

Two ranks (torchrun, gloo on CPU) with gradient accumulation 2: the numbers sd-scripts prints at
the start of training (batches per epoch per process, epochs, total optimization steps) must be the
ones `plan` printed for the same options; and a single process cut by --max_train_steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT, printed_int, train, write_config, write_images_tree

pytestmark = pytest.mark.integration


def _plan_figures(config: Path, *options: str) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, "-m", "kohya_multiplier", "plan", str(config), *options],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return {
        label: printed_int(result.stdout, label)
        for label in ("num batches per epoch", "optimizer steps per epoch", "num epochs", "total optimization steps", "batches trained")
    }


def test_two_processes_with_gradient_accumulation(sd, tmp_path_factory):
    torchrun = Path(sd.python).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"no torchrun beside {sd.python}")
    out = tmp_path_factory.mktemp(f"arithmetic-ranks-{sd.label}")
    write_images_tree(out / "data")
    config = write_config(out / "data", batch_size=1)
    port = str(29900 + (os.getpid() % 80))
    launcher = [str(torchrun), "--nproc_per_node", "2", "--master_port", port]
    args = ["--dataset_config", str(config), "--cache_latents", "--max_train_epochs", "2", "--gradient_accumulation_steps", "2",
            "--seed", "4"]
    run = train(sd, "train_db", args, out, launcher=launcher, schedule=False).check()
    planned = _plan_figures(config, "--seed", "4", "--max_train_epochs", "2", "--gradient_accumulation_steps", "2", "--num_processes", "2")
    assert printed_int(run.output, "num batches per epoch") == planned["num batches per epoch"]
    assert printed_int(run.output, "num epochs") == planned["num epochs"] == 2
    assert printed_int(run.output, "total optimization steps") == planned["total optimization steps"]


def test_max_train_steps_in_one_process(sd, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"arithmetic-steps-{sd.label}")
    write_images_tree(out / "data")
    config = write_config(out / "data", batch_size=2)
    args = ["--dataset_config", str(config), "--cache_latents", "--max_train_steps", "9", "--gradient_accumulation_steps", "3"]
    run = train(sd, "train_db", args, out).check()
    planned = _plan_figures(config, "--max_train_steps", "9", "--gradient_accumulation_steps", "3")
    for label in ("num batches per epoch", "num epochs", "total optimization steps"):
        assert printed_int(run.output, label) == planned[label], label
    # 9 optimizer steps of up to 3 batches (each epoch ends with a step): the schedule has exactly those
    assert len(run.records) == planned["batches trained"] < 9 * 3 + 1
