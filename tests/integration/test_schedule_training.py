"""Scheduled mixes, proven by real training (LoRA with train_network, DreamBooth with train_db).

The config schedules alice's multiplier (0.5 rising to 1.5 by epoch 4) and her loss weight, brings
bob in at epoch 3 and keeps dave (multiply.txt) and the automatic regularization subset as they
are; every epoch trains the first epoch's total. The LoRA run uses 2 persistent DataLoader
workers and saves its state every epoch; a run resumed from the state after epoch 2 (mid-schedule)
trains exactly the later epochs of the uninterrupted run. Each run's trained schedule equals
`plan --schedule` epoch by epoch, every epoch has the printed length, and the metadata records the
schedules as given.
"""

from __future__ import annotations

import json

import pytest

from harness import LORA_ARGS, canonical, dry_run, per_epoch, printed_int, safetensors_header, train, write_config, write_images_tree

pytestmark = pytest.mark.integration

EPOCHS = 4
SEED = 11
SCHEDULED = {
    "alice": {"multiplier": {"1": 0.5, "4": 1.5}, "loss_weight": {"1": 1, "4": 0.5}},
    "bob": {"start_epoch": 3},
}


@pytest.fixture(scope="module")
def config(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"schedule-data-{sd.label}")
    write_images_tree(root)
    return write_config(root, batch_size=2, subset_extra=SCHEDULED, name="scheduled.toml")


@pytest.fixture(scope="module")
def lora_run(sd, config, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"schedule-lora-{sd.label}")
    args = [
        "--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", str(EPOCHS),
        "--max_data_loader_n_workers", "2", "--persistent_data_loader_workers", "--save_every_n_epochs", "1", "--save_state",
        *LORA_ARGS,
    ]
    run = train(sd, "train_network", args, out).check()
    planned, plan = dry_run([str(config), "--seed", str(SEED), "--epochs", str(EPOCHS)], out / "dry-run.jsonl")
    return run, planned, plan


def _subject_counts(records, epoch: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        if record["epoch"] == epoch:
            for image in record["images"]:
                name = image.split("/")[-2]
                counts[name] = counts.get(name, 0) + 1
    return counts


def test_the_scheduled_lora_trains_the_dry_run_epoch_by_epoch(lora_run):
    run, planned, plan = lora_run
    for epoch in range(1, EPOCHS + 1):
        assert canonical([r for r in run.records if r["epoch"] == epoch]) == canonical([r for r in planned if r["epoch"] == epoch])
    length = len(planned) // EPOCHS
    assert per_epoch(run.records) == {e: length for e in range(1, EPOCHS + 1)}
    assert printed_int(run.output, "num batches per epoch") == length
    assert printed_int(run.output, "total optimization steps") == EPOCHS * length
    assert "schedule: target images" in plan.stdout and "scheduled (subset)" in run.output
    assert [_subject_counts(run.records, e).get("bob", 0) for e in range(1, EPOCHS + 1)][:2] == [0, 0]
    assert _subject_counts(run.records, 3).get("bob", 0) > 0
    # epoch 1 asks for 3 + 2 (dave) + 5 (regularization) = 10 images, the constant total
    assert sum(_subject_counts(run.records, 4).values()) == sum(_subject_counts(run.records, 1).values()) == 10


def test_each_batch_is_weighted_as_the_schedule_says(lora_run):
    """Training records the loss weights it applied to each batch; the dry run records the
    config's (compared above, batch by batch): alice's falls from 1 to 0.5 by epoch 4."""
    run, _, _ = lora_run
    weights = {}
    for record in run.records:
        for image, weight in zip(record["images"], record["loss_weights"]):
            weights.setdefault((image.split("/")[-2], record["epoch"]), set()).add(round(weight, 9))
    assert [weights.get(("alice", e)) for e in range(1, EPOCHS + 1)] == [{1.0}, {round(5 / 6, 9)}, {round(4 / 6, 9)}, {0.5}]
    assert all(w == {1.0} for (name, _), w in weights.items() if name != "alice")


def test_the_metadata_records_the_schedules_as_given(lora_run):
    run, _, _ = lora_run
    metadata = safetensors_header(run.output_dir / "out.safetensors")["__metadata__"]
    if "ss_datasets" not in metadata:
        pytest.skip("this revision writes no ss_datasets")
    entry = json.loads(metadata["ss_datasets"])[0]["bucket_info"]["kohya_multiplier"]
    assert entry["schedules"] == {"alice": {"multiplier": {"1": 0.5, "4": 1.5}}, "bob": {"start_epoch": 3}}
    assert entry["loss_weights"]["alice"] == {"1": 1, "4": 0.5} and entry["seed"] == SEED


def test_a_run_resumed_mid_schedule_trains_the_same_later_epochs(sd, config, lora_run, tmp_path_factory):
    run, _, _ = lora_run
    states = sorted(run.output_dir.glob("out-*-state"))
    assert len(states) >= 2, "no state saved after epoch 2"
    out = tmp_path_factory.mktemp(f"schedule-resume-{sd.label}")
    args = [
        "--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", str(EPOCHS),
        "--max_data_loader_n_workers", "2", "--persistent_data_loader_workers",
        "--resume", str(states[1]), "--initial_epoch", "3", "--skip_until_initial_step", *LORA_ARGS,
    ]
    resumed = train(sd, "train_network", args, out).check()
    assert {r["epoch"] for r in resumed.records} == {3, 4}
    assert canonical(resumed.records) == canonical([r for r in run.records if r["epoch"] >= 3])


def test_a_scheduled_dreambooth_run_trains_the_dry_run(sd, config, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"schedule-db-{sd.label}")
    args = ["--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", "3",
            "--max_data_loader_n_workers", "2", "--persistent_data_loader_workers"]
    run = train(sd, "train_db", args, out).check()
    planned, _ = dry_run([str(config), "--seed", str(SEED), "--epochs", "3"], out / "dry-run.jsonl")
    assert canonical(run.records) == canonical(planned)
