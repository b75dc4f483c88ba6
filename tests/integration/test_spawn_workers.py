"""Issue 12, point 5: DataLoader workers started by ``spawn`` (Windows, macOS).

A scheduled plan too (its rates change every epoch). Spawned workers re-import the training script as ``__mp_main__`` before any kohya-multiplier code
runs. The test-only start-up hook forces spawn and leaves out the tests' own torchvision
work-around (KOHYA_MULTIPLIER_TEST_NO_COMPAT), so with the torchvision wheel these venvs carry
(built for another torch: ``import torchvision`` fails without the work-around) a worker survives
only through the wrapper's own start-up of spawned workers. The schedule must still equal the plan,
with and without persistent workers; and a worker that fails must end the run with its error.
"""

from __future__ import annotations

import subprocess

import pytest

from harness import LORA_ARGS, canonical, dry_run, model_args, read_records, write_config, write_images_tree

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 5


@pytest.fixture(scope="module")
def config(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"spawn-data-{sd.label}")
    write_images_tree(root)
    return write_config(root, batch_size=2)


def _args(config, persistent: bool) -> list[str]:
    args = ["--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", str(EPOCHS),
            "--max_data_loader_n_workers", "2", *LORA_ARGS]
    return args + (["--persistent_data_loader_workers"] if persistent else [])


def _train(sd, args: list[str], out, env: dict, timeout: int = 600):
    """The wrapper, with the test-only spawn switches in its environment: (exit status, output, records)."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sd.python, "-m", "kohya_multiplier", "train_network", "--sd-scripts", str(sd.root),
               "--multiplier_schedule", str(out / "schedule.jsonl"), *model_args(sd), "--output_dir", str(out), *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=str(out), timeout=timeout, env=sd.env(**env))
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"the run hung for {timeout} s:\n{(expired.stderr or b'')[-3000:]!r}") from None
    output = result.stdout + "\n" + result.stderr
    (out / "train.log").write_text(" ".join(command) + "\n\n" + output)
    return result.returncode, output, read_records(out / "schedule.jsonl")


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "fresh-each-epoch"])
def test_spawned_workers_serve_the_plan(sd, config, tmp_path_factory, persistent):
    out = tmp_path_factory.mktemp(f"spawn-{persistent}-{sd.label}")
    env = {"KOHYA_MULTIPLIER_TEST_SPAWN": "1", "KOHYA_MULTIPLIER_TEST_NO_COMPAT": "1"}
    returncode, output, records = _train(sd, _args(config, persistent), out, env)
    assert returncode == 0, output[-6000:]
    planned, _ = dry_run([str(config), "--seed", str(SEED), "--epochs", str(EPOCHS)], out / "dry-run.jsonl")
    assert canonical(records) == canonical(planned)


def test_a_failing_spawned_worker_ends_the_run_with_its_error(sd, config, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"spawn-fail-{sd.label}")
    env = {"KOHYA_MULTIPLIER_TEST_SPAWN": "fail"}
    returncode, output, _ = _train(sd, _args(config, True), out, env, timeout=300)
    assert returncode != 0
    assert "test-only failure of a spawned DataLoader worker" in output


def test_spawned_workers_serve_a_scheduled_plan(sd, tmp_path_factory):
    """A schedule (alice's multiplier rising, bob entering at epoch 2, a loss weight falling) is
    served batch by batch by spawned persistent workers, loss weights included."""
    root = tmp_path_factory.mktemp(f"spawn-scheduled-data-{sd.label}")
    write_images_tree(root)
    scheduled = {"alice": {"multiplier": {"1": 0.5, "3": 1.5}, "loss_weight": {"1": 1, "3": 0.25}}, "bob": {"start_epoch": 2}}
    config = write_config(root, batch_size=2, subset_extra=scheduled, name="scheduled.toml")
    out = tmp_path_factory.mktemp(f"spawn-scheduled-{sd.label}")
    args = ["--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", "3",
            "--max_data_loader_n_workers", "2", "--persistent_data_loader_workers", *LORA_ARGS]
    returncode, output, records = _train(sd, args, out, {"KOHYA_MULTIPLIER_TEST_SPAWN": "1", "KOHYA_MULTIPLIER_TEST_NO_COMPAT": "1"})
    assert returncode == 0, output[-6000:]
    planned, _ = dry_run([str(config), "--seed", str(SEED), "--epochs", "3"], out / "dry-run.jsonl")
    assert canonical(records) == canonical(planned)
    assert {r["epoch"] for r in records} == {1, 2, 3} and all("loss_weights" in r for r in records)
