"""LoRA training (train_network.py) through `kohya-multiplier train_network`, for real, on CPU.

Issue points covered: 1 (multiplier in subsets, multiply.txt, zero, regularization; no multiplier
= stock), 2 (schedule equals the dry run), 3 (constant epochs; steps for --max_train_epochs and
--max_train_steps), 4 (workers 0/1/4, persistent or not), 5 (resume), 6 (validation split, latent
cache on disk), 7 (metadata), 8 (schedule file, balance table), 9 (bad config fails early).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness import (
    LORA_ARGS,
    REPO_ROOT,
    SUBJECTS,
    canonical,
    dry_run,
    per_epoch,
    printed_int,
    safetensors_header,
    safetensors_tensor_bytes,
    train,
    write_config,
    write_images_tree,
)

from kohya_multiplier.planner import PLANNER_VERSION

pytestmark = pytest.mark.integration

EPOCHS = 3
SEED = 42


@pytest.fixture(scope="module")
def data(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"lora-data-{sd.label}")
    write_images_tree(root)
    return root


@pytest.fixture(scope="module")
def main_run(sd, data, tmp_path_factory):
    """3 epochs, batch size 2, --seed 42, 2 persistent workers, state saved every epoch."""
    config = write_config(data, batch_size=2)
    out = tmp_path_factory.mktemp(f"lora-main-{sd.label}")
    args = [
        "--dataset_config", str(config), "--seed", str(SEED), "--cache_latents",
        "--max_train_epochs", str(EPOCHS), "--max_data_loader_n_workers", "2", "--persistent_data_loader_workers",
        "--save_every_n_epochs", "1", "--save_state", *LORA_ARGS,
    ]
    run = train(sd, "train_network", args, out).check()
    planned, plan = dry_run([str(config), "--seed", str(SEED), "--epochs", str(EPOCHS)], out / "dry-run.jsonl")
    return run, planned, plan, config


def test_schedule_is_the_dry_run(main_run):
    run, planned, _, _ = main_run
    assert planned, "the dry run planned nothing"
    assert canonical(run.records) == canonical(planned)


def test_every_epoch_has_the_printed_length(main_run):
    run, planned, _, _ = main_run
    length = len(planned) // EPOCHS
    assert per_epoch(run.records) == {e: length for e in range(1, EPOCHS + 1)}
    assert printed_int(run.output, "num batches per epoch") == length
    assert printed_int(run.output, "num epochs") == EPOCHS
    assert printed_int(run.output, "total optimization steps") == EPOCHS * length
    assert f"{EPOCHS * length}/{EPOCHS * length}" in run.output  # progress bar reached the end
    # bucket purity: one resolution per batch, at most the batch size
    assert all(1 <= len(r["images"]) <= 2 for r in run.records)


def test_multipliers_reach_training(main_run, data):
    run, _, plan, _ = main_run
    counts = {name: 0 for name in [*SUBJECTS, "person"]}
    for record in run.records:
        for image in record["images"]:
            counts[image.split("/")[-2]] += 1
    assert counts["carol"] == 0  # multiplier 0: excluded
    assert counts["bob"] == 2 * 4 * EPOCHS  # integer part exact
    assert counts["alice"] == 3 * EPOCHS  # 0.5 x 6 per epoch
    assert counts["dave"] == pytest.approx(0.4 * 5 * EPOCHS, abs=1)  # multiply.txt
    assert counts["person"] > 0  # automatic regularization multiplier
    assert "excluded" in run.output and "carol" in run.output


def test_balance_table_printed_at_start(main_run):
    run, _, plan, _ = main_run
    table = plan.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(table) if line.startswith("dataset 0:"))
    for line in table[start:]:
        assert line in run.output, f"dry-run table line missing from training output: {line!r}"
    assert run.output.index("subset ") < run.output.index("load Diffusers pretrained")


def test_metadata_records_multipliers(main_run):
    run, _, _, _ = main_run
    metadata = safetensors_header(run.output_dir / "out.safetensors")["__metadata__"]
    dirs = json.loads(metadata["ss_dataset_dirs"])
    assert dirs["alice"] == {"n_repeats": 0.5, "img_count": 6}
    assert dirs["bob"]["n_repeats"] == 2
    assert dirs["dave"]["n_repeats"] == 0.4
    assert "carol" not in dirs
    assert int(metadata["ss_num_train_images"]) == round(0.5 * 6 + 2 * 4 + 0.4 * 5)
    assert int(metadata["ss_num_batches_per_epoch"]) == len(run.records) // EPOCHS
    if "ss_datasets" in metadata:
        dataset = json.loads(metadata["ss_datasets"])[0]
        assert {s["image_dir"].split("/")[-1]: s["num_repeats"] for s in dataset["subsets"]}["alice"] == 0.5
        assert dataset["bucket_info"]["kohya_multiplier"] == {"planner_version": PLANNER_VERSION, "seed": SEED}
    assert all(r["planner_version"] == PLANNER_VERSION for r in run.records)


def test_resume_trains_the_same_later_epochs(sd, main_run, tmp_path_factory):
    run, _, _, config = main_run
    states = sorted(run.output_dir.glob("out-*-state"))
    assert states, "no saved state"
    first = states[0]  # after epoch 1
    out = tmp_path_factory.mktemp(f"lora-resume-{sd.label}")
    args = [
        "--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", str(EPOCHS),
        "--resume", str(first), "--initial_epoch", "2", "--skip_until_initial_step", *LORA_ARGS,
    ]
    resumed = train(sd, "train_network", args, out).check()
    assert {r["epoch"] for r in resumed.records} == {2, 3}
    later = [r for r in run.records if r["epoch"] >= 2]
    assert canonical(resumed.records) == canonical(later)


@pytest.mark.parametrize(
    "workers,persistent",
    [(0, False), (1, False), (1, True), (4, False), (4, True)],
    ids=["0-workers", "1-worker", "1-persistent-worker", "4-workers", "4-persistent-workers"],
)
def test_workers_serve_the_plan(sd, data, tmp_path_factory, workers, persistent):
    """Batch size 1, 2 epochs: the first batch of every epoch must come from that epoch's plan."""
    config = write_config(data, batch_size=1, name="bs1.toml")
    out = tmp_path_factory.mktemp(f"lora-w{workers}-{sd.label}")
    args = ["--dataset_config", str(config), "--seed", "7", "--cache_latents", "--max_train_epochs", "2",
            "--max_data_loader_n_workers", str(workers), *LORA_ARGS]
    if persistent:
        args.append("--persistent_data_loader_workers")
    run = train(sd, "train_network", args, out).check()
    planned, _ = dry_run([str(config), "--seed", "7", "--epochs", "2"], out / "dry-run.jsonl")
    assert canonical(run.records) == canonical(planned)


def test_accelerate_launch_runs_the_wrapper_as_a_module(sd, data, tmp_path_factory):
    """`accelerate launch -m kohya_multiplier train_network ...` trains the dry run's plan."""
    config = write_config(data, batch_size=2, name="accelerate.toml")
    out = tmp_path_factory.mktemp(f"lora-accelerate-{sd.label}")
    launcher = [
        sd.python, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
    ]
    args = ["--dataset_config", str(config), "--seed", "3", "--cache_latents", "--max_train_epochs", "2", *LORA_ARGS]
    run = train(sd, "train_network", args, out, launcher=launcher).check()
    planned, _ = dry_run([str(config), "--seed", "3", "--epochs", "2"], out / "dry-run.jsonl")
    assert canonical(run.records) == canonical(planned)


def test_max_train_steps_cuts_inside_an_epoch(sd, data, tmp_path_factory):
    config = write_config(data, batch_size=2, name="steps.toml")
    out = tmp_path_factory.mktemp(f"lora-steps-{sd.label}")
    planned, _ = dry_run([str(config), "--epochs", "2"], out / "dry-run.jsonl")
    length = len(planned) // 2
    steps = length + 3
    args = ["--dataset_config", str(config), "--cache_latents", "--max_train_steps", str(steps), *LORA_ARGS]
    run = train(sd, "train_network", args, out).check()
    assert printed_int(run.output, "total optimization steps") == steps
    assert printed_int(run.output, "num epochs") == 2
    assert per_epoch(run.records) == {1: length, 2: 3}
    assert set(canonical(run.records)) <= set(canonical(planned))  # no --seed: seed 0 on both sides


def test_validation_split_and_disk_cache(sd, data, tmp_path_factory):
    if not sd.has_validation_split:
        pytest.skip(f"sd-scripts {sd.revision.name} has no validation_split")
    out = tmp_path_factory.mktemp(f"lora-val-{sd.label}")
    root = out / "data"
    write_images_tree(root)
    config = write_config(root, batch_size=2, dataset_extra={"validation_split": 0.25, "validation_seed": 3})
    args = ["--dataset_config", str(config), "--seed", "5", "--cache_latents", "--cache_latents_to_disk",
            "--max_train_epochs", "2", *LORA_ARGS]
    run = train(sd, "train_network", args, out).check()
    planned, _ = dry_run([str(config), "--seed", "5", "--epochs", "2"], out / "dry-run.jsonl")
    assert canonical(run.records) == canonical(planned)
    # validation: stock (num_repeats 1), never planned
    validation = run.output[run.output.index("[Validation Dataset 0]"):]
    assert "num_repeats: 1" in validation and "num_repeats: 0.5" not in validation
    assert printed_int(run.output, "num validation images * repeats") > 0
    # every image of a planned subset was cached once, to disk
    trained = {image for r in run.records for image in r["images"]}
    for image in trained:
        stem = image.rsplit(".", 1)[0]
        caches = list((root / "train").rglob(stem.rsplit("/", 1)[-1] + "*.npz")) + list((root / "reg").rglob(stem.rsplit("/", 1)[-1] + "*.npz"))
        assert caches, f"no latent cache for {image}"
    # the excluded subset is cached only for its validation images (validation stays stock)
    assert len(list((root / "train" / "carol").glob("*.npz"))) < SUBJECTS["carol"][0], "an excluded subset was cached for training"


def test_without_multipliers_training_is_stock(sd, data, tmp_path_factory):
    config = write_config(data, batch_size=2, multipliers=False, name="stock.toml")
    args = ["--dataset_config", str(config), "--seed", "11", "--cache_latents", "--max_train_epochs", "2", *LORA_ARGS]
    stock_run = train(sd, "train_network", args, tmp_path_factory.mktemp(f"stock-{sd.label}"), stock=True).check()
    wrapped = train(sd, "train_network", args, tmp_path_factory.mktemp(f"wrapped-{sd.label}"), schedule=False).check()
    stock_tensors = safetensors_tensor_bytes(stock_run.output_dir / "out.safetensors")
    wrapped_tensors = safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors")
    assert wrapped_tensors == stock_tensors, "the wrapper changed training of a config without multipliers"


BAD_CONFIGS = {
    "boolean": ("alice", {"multiplier": True}),
    "both-keys": ("bob", {"num_repeats": 3}),
    "text": ("alice", {"multiplier": "lots"}),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_fails_before_the_model_loads(sd, data, tmp_path_factory, case):
    subject, keys = BAD_CONFIGS[case]
    out = tmp_path_factory.mktemp(f"bad-{case}-{sd.label}")
    config = write_config(data, batch_size=2, subset_extra={subject: keys}, name=f"bad-{case}.toml")
    run = train(sd, "train_network", ["--dataset_config", str(config), *LORA_ARGS], out)
    plan = _dry_run_error(config)
    assert run.returncode == 2, run.output[-3000:]
    assert plan.returncode == 2
    message = plan.stderr.strip().splitlines()[-1]
    assert message.startswith("kohya-multiplier: error: ")
    assert message in run.output.splitlines()
    assert "load Diffusers pretrained" not in run.output and "Traceback" not in run.output


def _dry_run_error(config):
    return subprocess.run(
        [sys.executable, "-m", "kohya_multiplier", "plan", str(config)],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), timeout=120,
    )
