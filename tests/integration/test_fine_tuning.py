"""Issue 9, point 2: multipliers for fine-tuning datasets (subsets with ``metadata_file``), trained.

The test builds its own metadata files (captions, relative keys against ``image_dir``, an absolute
key without extension, ``image_size`` and ``train_resolution`` entries) and trains them with
train_network.py and fine_tune.py on the tiny model: the trained schedule equals the dry run of
``kohya-multiplier plan --sd-scripts CHECKOUT`` (which reads the metadata by that revision's rules),
every multiplier reaches training, and the model metadata says the multipliers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from harness import LORA_ARGS, canonical, dry_run, per_epoch, safetensors_header, safetensors_tensor_bytes, train
from pngs import write_images

from kohya_multiplier.checkouts import locate

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 5
# subset -> (images, multiplier)
SUBSETS = {"alice": (6, 0.5), "bob": (3, 2.0), "carol": (4, 0.25)}


@pytest.fixture(scope="module")
def metadata_dataset(sd, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(f"fine-tuning-{sd.label}")
    images = root / "images"
    wide = write_images(images, 4, (384, 128), seed=1, stem="alice_wide")
    square = write_images(images, 2, (128, 128), seed=2, stem="alice_square")
    bob = write_images(images, 3, (128, 384), seed=3, stem="bob")
    carol = write_images(root / "elsewhere", 4, (128, 128), seed=4, stem="carol")
    # alice: relative keys, with extension where sd-scripts takes them as file names (v0.9 adds
    # the extension itself); sizes given as sd-scripts >= v0.10 reads them
    legacy = sd.revision.layout == locate.LAYOUT_V09
    alice = {(p.stem if legacy else p.name): {"caption": "photo of alice", "image_size": [384, 128] if p in wide else [128, 128]} for p in [*wide, *square]}
    # bob: tags only, relative keys without extension (found as key.png in image_dir), except at
    # v0.10-main, which takes a key as the file name it is
    keep_extension = sd.revision.layout == locate.LAYOUT_STRATEGIES
    bob_md = {(p.name if keep_extension else p.stem): {"tags": "bob, portrait"} for p in bob}
    # carol: absolute keys outside image_dir, with train_resolution as prepare_buckets_latents.py writes it
    carol_md = {str(p): {"caption": "carol", "train_resolution": [128, 128]} for p in carol}
    for name, md in (("alice.json", alice), ("bob.json", bob_md), ("carol.json", carol_md)):
        (root / name).write_text(json.dumps(md, indent=1))
    return root


def _config(root: Path, batch_size: int) -> Path:
    lines = [
        "[general]", "enable_bucket = true", "min_bucket_reso = 64", "max_bucket_reso = 256", "bucket_reso_steps = 64", "",
        "[[datasets]]", "resolution = 128", f"batch_size = {batch_size}",
    ]
    for name, (_, multiplier) in SUBSETS.items():
        lines += ["", "  [[datasets.subsets]]", f"  metadata_file = {json.dumps(str(root / (name + '.json')))}",
                  f"  image_dir = {json.dumps(str(root / 'images'))}", f"  multiplier = {multiplier}"]
    path = root / f"fine-tuning-bs{batch_size}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _counts(records) -> Counter:
    """Images trained per subject (the letters a file name starts with)."""
    return Counter(re.match(r"[a-z]+", Path(image).name).group(0) for record in records for image in record["images"])


@pytest.fixture(scope="module")
def lora_run(sd, metadata_dataset, tmp_path_factory):
    config = _config(metadata_dataset, batch_size=2)
    out = tmp_path_factory.mktemp(f"ft-lora-{sd.label}")
    args = ["--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", str(EPOCHS),
            "--max_data_loader_n_workers", "2", "--persistent_data_loader_workers", *LORA_ARGS]
    run = train(sd, "train_network", args, out).check()
    planned, plan = dry_run([str(config), "--seed", str(SEED), "--epochs", str(EPOCHS), "--sd-scripts", str(sd.root)],
                            out / "dry-run.jsonl")
    return run, planned, plan


def test_train_network_schedule_is_the_dry_run(lora_run):
    run, planned, _ = lora_run
    assert planned, "the dry run planned nothing"
    assert canonical(run.records) == canonical(planned)
    assert len(set(per_epoch(run.records).values())) == 1  # constant epoch length


def test_multipliers_of_metadata_subsets_reach_training(lora_run, metadata_dataset):
    run, _, _ = lora_run
    counts = _counts(run.records)
    assert counts["alice"] == 3 * EPOCHS  # 0.5 x 6 per epoch
    assert counts["bob"] == 2 * 3 * EPOCHS  # integer multiplier: exact
    assert counts["carol"] == 1 * EPOCHS  # 0.25 x 4 per epoch
    trained = {image for record in run.records for image in record["images"]}
    assert str(metadata_dataset / "images" / "bob000.png") in trained  # key without extension, found as bob000.png
    assert {Path(p).parent for p in trained if "carol" in p} == {metadata_dataset / "elsewhere"}  # absolute keys


def test_buckets_follow_the_revisions_metadata_rules(lora_run):
    """Sizes from the metadata or the headers: alice's 3:1 images train in the 192x64 bucket, bob's
    1:3 ones in 64x192, at every revision; the dry run knew it (the schedules are equal)."""
    run, _, plan = lora_run
    def buckets(stem):
        return {tuple(r["resolution"]) for r in run.records if any(Path(p).name.startswith(stem) for p in r["images"])}
    assert buckets("alice_wide") == {(192, 64)}
    assert buckets("bob") == {(64, 192)}
    assert "alice.json" in plan.stdout and "bob.json" in plan.stdout


def test_lora_metadata_says_the_multipliers(lora_run):
    run, _, _ = lora_run
    metadata = safetensors_header(run.output_dir / "out.safetensors")["__metadata__"]
    dirs = json.loads(metadata["ss_dataset_dirs"])
    assert dirs["alice.json"]["n_repeats"] == 0.5, dirs
    assert dirs["bob.json"]["n_repeats"] == 2, dirs
    assert int(metadata["ss_num_train_images"]) == round(0.5 * 6 + 2 * 3 + 0.25 * 4)


def test_fine_tune_trains_the_dry_run(sd, metadata_dataset, tmp_path_factory):
    """fine_tune.py (the full fine-tune of the U-Net) serves the same plan."""
    config = _config(metadata_dataset, batch_size=1)
    out = tmp_path_factory.mktemp(f"ft-full-{sd.label}")
    args = ["--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", "1"]
    run = train(sd, "fine_tune", args, out).check()
    planned, _ = dry_run([str(config), "--seed", str(SEED), "--epochs", "1", "--sd-scripts", str(sd.root)], out / "dry-run.jsonl")
    assert canonical(run.records) == canonical(planned)
    assert _counts(run.records) == Counter({"alice": 3, "bob": 6, "carol": 1})


def test_without_multipliers_a_metadata_dataset_trains_as_stock(sd, metadata_dataset, tmp_path_factory):
    """No multiplier: the wrapper's fine-tuning dataset is sd-scripts' own, weight for weight; with
    --multiplier_schedule, a DataLoader worker records the images by the dry run's paths."""
    config = _config(metadata_dataset, batch_size=2).read_text().replace("multiplier = ", "# multiplier = ")
    path = metadata_dataset / "stock.toml"
    path.write_text(config)
    args = ["--dataset_config", str(path), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", "1",
            "--max_data_loader_n_workers", "1", *LORA_ARGS]
    stock = train(sd, "train_network", args, tmp_path_factory.mktemp(f"ft-stock-{sd.label}"), stock=True).check()
    wrapped = train(sd, "train_network", args, tmp_path_factory.mktemp(f"ft-wrapped-{sd.label}"), schedule=False).check()
    assert safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors") == safetensors_tensor_bytes(stock.output_dir / "out.safetensors")
    recorded = train(sd, "train_network", args, tmp_path_factory.mktemp(f"ft-recorded-{sd.label}")).check()
    trained = {image for record in recorded.records for image in record["images"]}
    assert str(metadata_dataset / "images" / "bob000.png") in trained  # the key's image, as the dry run names it
    # every image once (stock order: a worker's first batch comes from sd-scripts' previous shuffle)
    assert sum(_counts(recorded.records).values()) == 6 + 3 + 4
