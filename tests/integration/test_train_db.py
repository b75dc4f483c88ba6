"""DreamBooth training (train_db.py) through `kohya-multiplier train_db`, for real, on CPU.

Covers DreamBooth folders with fractional names (``0.5_alice``), multiply.txt in a folder,
regularization folders, batch size 1, no --seed (planner seed 0), and a real two-process run
(torchrun, gloo on CPU) whose ranks together train exactly the dry run's plan.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from harness import canonical, dry_run, per_epoch, printed_int, train, write_config, write_images_tree

pytestmark = pytest.mark.integration

FOLDER_ARGS = [
    "--resolution", "128", "--enable_bucket", "--min_bucket_reso", "64", "--max_bucket_reso", "256",
    "--bucket_reso_steps", "64", "--caption_extension", ".txt",
]


@pytest.fixture(scope="module")
def folders(sd, tmp_path_factory):
    """train/0.5_alice, train/2_bob, train/0_carol (skipped as by sd-scripts), train/1_dave with
    multiply.txt 0.4, reg/1_person."""
    root = tmp_path_factory.mktemp(f"db-data-{sd.label}")
    source = root / "source"
    write_images_tree(source)
    names = {"alice": "0.5_alice", "bob": "2_bob", "carol": "0_carol", "dave": "1_dave"}
    for subject, folder in names.items():
        shutil.copytree(source / "train" / subject, root / "train" / folder)
    shutil.copytree(source / "reg" / "person", root / "reg" / "1_person")
    return root


def test_dreambooth_folders_follow_the_dry_run(sd, folders, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"db-folders-{sd.label}")
    data = ["--train_data_dir", str(folders / "train"), "--reg_data_dir", str(folders / "reg"), *FOLDER_ARGS]
    args = [*data, "--train_batch_size", "1", "--cache_latents", "--max_train_epochs", "2"]
    run = train(sd, "train_db", args, out).check()
    planned, plan = dry_run([*data, "--train_batch_size", "1", "--epochs", "2"], out / "dry-run.jsonl")
    assert "no --seed given" in plan.stdout
    assert canonical(run.records) == canonical(planned)
    length = len(planned) // 2
    assert per_epoch(run.records) == {1: length, 2: length}
    assert printed_int(run.output, "num batches per epoch") == length
    counts = Counter(Path(image).parent.name for r in run.records for image in r["images"])
    assert counts["0.5_alice"] == 2 * 3 and counts["2_bob"] == 2 * 8 and "0_carol" not in counts
    assert counts["1_person"] > 0 and counts["1_dave"] == pytest.approx(2 * 0.4 * 5, abs=1)
    assert all(len(r["images"]) == 1 for r in run.records)
    assert (out / "out.safetensors").exists()


def test_two_processes_agree_without_seed(sd, tmp_path_factory):
    """torchrun starts two ranks (gloo on CPU); no --seed: both must plan with seed 0.

    (`accelerate launch --cpu` always starts one process; torchrun is what accelerate uses for
    several GPUs. LoRA cannot be used here: accelerate wraps sd-scripts' frozen U-Net in DDP on
    CPU, which torch refuses; DreamBooth trains the U-Net itself.)
    """
    torchrun = Path(sd.python).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"no torchrun beside {sd.python}")
    out = tmp_path_factory.mktemp(f"db-ranks-{sd.label}")
    root = out / "data"
    write_images_tree(root)
    config = write_config(root, batch_size=2)
    port = str(29500 + (os.getpid() % 400))
    launcher = [str(torchrun), "--nproc_per_node", "2", "--master_port", port]
    args = ["--dataset_config", str(config), "--cache_latents", "--max_train_epochs", "2"]
    run = train(sd, "train_db", args, out, launcher=launcher).check()
    assert "loading model for process 1/2" in run.output
    planned, _ = dry_run([str(config), "--epochs", "2"], out / "dry-run.jsonl")
    length = len(planned) // 2
    # Together the ranks train every planned batch; accelerate pads an odd epoch by repeating
    # batches of that epoch so that both ranks take the same number of steps.
    assert sorted(set(canonical(run.records))) == canonical(planned)
    per_rank = -(-length // 2)
    assert printed_int(run.output, "num batches per epoch") == per_rank
    assert per_epoch(run.records) == {1: 2 * per_rank, 2: 2 * per_rank}
