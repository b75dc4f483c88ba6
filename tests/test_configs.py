"""The ready-to-copy dataset configs in configs/, each planned against an image tree made here.

Every config under configs/ must have a case below (so none can rot unnoticed): the test builds the
folders it names with the image counts its comments state, runs `kohya-multiplier plan` from the
tree's root (paths in the configs are relative, as sd-scripts reads them) and checks what the
config's comments promise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from imagegen import make_image

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
EPOCHS = 10
# The sampling contract's balance: a fractional subset's images per epoch stay within a few of its
# target (buckets are served in whole picks), and its total over the run within a few of E x target.
PER_EPOCH_SLACK = 3
TOTAL_SLACK = 4
SIZES = [(512, 512), (512, 768), (768, 512)]

# config -> {folder: images}, extra files, and a check of the planned epochs
TREES = {
    "balanced-subjects.toml": {"train/alice": 300, "train/bob": 60, "train/carol": 12},
    "subject-with-preservation.toml": {"train/subject": 40, "reg/person": 2000},
    "rotating-regularization.toml": {"train/subject": 25, "reg/dog": 500},
    "everydream-folders.toml": {"train/landscapes": 400, "train/portraits": 40, "train/logo": 6},
    "fine-tuning-metadata.toml": {"images/photos": 1000, "images/art": 100, "images/logos": 10},
    "dreambooth-folders.toml": {"train/0.25_alice": 200, "train/3_bob": 12, "train/1.5_carol": 20, "reg/1_person": 500},
    "phase-out-regularization.toml": {"train/subject": 40, "reg/person": 2000},
    "bring-in-a-concept.toml": {"train/alice": 100, "train/hat": 50},
    "fade-in-a-style.toml": {"train/subject": 100, "train/style": 200},
}
TRAINING_CONFIGS = {"dreambooth-folders.toml"}  # sd-scripts --config_file files, not dataset configs
MULTIPLY_TXT = {"train/landscapes": "0.2", "train/portraits": "1.5"}
LOSS_SCALE_TXT = {"train/logo": "0.5"}
# fine-tuning metadata files: file -> folder of its images (keys relative to image_dir "images")
METADATA = {"meta/photos.json": "images/photos", "meta/art.json": "images/art", "meta/logos.json": "images/logos"}


def test_every_config_has_a_case():
    assert sorted(p.name for p in CONFIGS.glob("*.toml")) == sorted(TREES)


def _tree(root: Path, folders: dict[str, int]) -> None:
    for folder, count in folders.items():
        path = root / folder
        path.mkdir(parents=True)
        for i in range(count):
            width, height = SIZES[i % len(SIZES)]
            make_image(str(path / f"img{i:04d}.png"), width, height)
            (path / f"img{i:04d}.txt").write_text(f"photo {i}")
        if folder in MULTIPLY_TXT:
            (path / "multiply.txt").write_text(MULTIPLY_TXT[folder] + "\n")
        if folder in LOSS_SCALE_TXT:
            (path / "loss_scale.txt").write_text(LOSS_SCALE_TXT[folder] + "\n")
    for metadata, folder in METADATA.items():
        if folder in folders:
            (root / metadata).parent.mkdir(parents=True, exist_ok=True)
            keys = {f"{Path(folder).name}/img{i:04d}.png": {"caption": f"photo {i}"} for i in range(folders[folder])}
            (root / metadata).write_text(json.dumps(keys))


def assert_balanced(per_epoch: Counter, target: float) -> None:
    counts = [per_epoch[e] for e in range(1, EPOCHS + 1)]
    assert all(abs(c - target) <= PER_EPOCH_SLACK for c in counts), (target, counts)
    assert abs(sum(counts) - EPOCHS * target) <= TOTAL_SLACK, (target, counts)


def _plan(root: Path, name: str) -> tuple[dict[str, Counter], dict[str, Counter], str]:
    """(folder -> images trained per epoch, folder -> times each image was trained over the run, stdout)."""
    schedule = root / "plan.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "kohya_multiplier", "plan", *(["--config_file"] if name in TRAINING_CONFIGS else []),
         str(CONFIGS / name), "--epochs", str(EPOCHS), "--seed", "42", "--schedule", str(schedule)],
        capture_output=True, text=True, cwd=str(root), timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )
    assert result.returncode == 0, result.stderr
    per_epoch: dict[str, Counter] = {}
    per_image: dict[str, Counter] = {}
    for line in schedule.read_text().splitlines():
        record = json.loads(line)
        for image in record["images"]:
            folder = Path(image).parent.relative_to(root).as_posix()
            per_epoch.setdefault(folder, Counter())[record["epoch"]] += 1
            per_image.setdefault(folder, Counter())[image] += 1
    return per_epoch, per_image, result.stdout


@pytest.fixture
def planned(request, tmp_path):
    name = request.param
    _tree(tmp_path, TREES[name])
    return _plan(tmp_path, name)


@pytest.mark.parametrize("planned", ["balanced-subjects.toml"], indirect=True)
def test_balanced_subjects_get_30_images_each_every_epoch(planned):
    per_epoch, per_image, _ = planned
    for folder in ("train/alice", "train/bob", "train/carol"):
        assert_balanced(per_epoch[folder], 30)
    assert len(per_image["train/alice"]) >= 0.95 * 300  # (nearly) all 300 within 10 epochs, none twice
    assert max(per_image["train/alice"].values()) <= 2
    assert set(per_image["train/bob"].values()) <= {4, 5, 6}  # every image about once per 2 epochs


@pytest.mark.parametrize("planned", ["subject-with-preservation.toml"], indirect=True)
def test_preservation_set_is_5_to_10_percent_of_each_epoch(planned):
    per_epoch, per_image, _ = planned
    for epoch in range(1, EPOCHS + 1):
        subject, preservation = per_epoch["train/subject"][epoch], per_epoch["reg/person"][epoch]
        assert subject == 40
        assert 0.05 <= preservation / (subject + preservation) <= 0.10, (epoch, preservation)
    assert max(per_image["reg/person"].values()) == 1  # a different few every epoch


@pytest.mark.parametrize("planned", ["rotating-regularization.toml"], indirect=True)
def test_all_regularization_images_rotate(planned):
    per_epoch, per_image, out = planned
    assert_balanced(per_epoch["reg/dog"], 50)
    assert len(per_image["reg/dog"]) >= 0.95 * 500 and max(per_image["reg/dog"].values()) <= 2
    assert "auto (regularization)" in out


@pytest.mark.parametrize("planned", ["everydream-folders.toml"], indirect=True)
def test_everydream_multiply_txt_files_set_the_multipliers(planned):
    per_epoch, per_image, out = planned
    assert_balanced(per_epoch["train/landscapes"], 80)
    assert_balanced(per_epoch["train/portraits"], 60)
    assert all(per_epoch["train/logo"][e] == 6 for e in range(1, EPOCHS + 1))  # num_repeats 1: exact
    assert set(per_image["train/portraits"].values()) <= {14, 15, 16}  # 1.5: once, every other epoch twice
    assert "multiply.txt" in out
    logo_row = next(line for line in out.splitlines() if line.startswith("logo "))
    assert "0.5 (loss_scale.txt)" in logo_row


@pytest.mark.parametrize("planned", ["fine-tuning-metadata.toml"], indirect=True)
def test_fine_tuning_metadata_sources_are_balanced(planned):
    per_epoch, per_image, out = planned
    assert_balanced(per_epoch["images/photos"], 100)
    assert len(per_image["images/photos"]) >= 0.95 * 1000 and max(per_image["images/photos"].values()) <= 2
    assert all(per_epoch["images/art"][e] == 100 for e in range(1, EPOCHS + 1))
    assert set(per_image["images/logos"].values()) == {5 * EPOCHS}
    assert "loss weight" in out and "logos.json" in out


@pytest.mark.parametrize("planned", ["dreambooth-folders.toml"], indirect=True)
def test_fractional_folder_names_set_the_multipliers(planned):
    per_epoch, per_image, out = planned
    assert_balanced(per_epoch["train/0.25_alice"], 50)
    assert len(per_image["train/0.25_alice"]) == 200 and set(per_image["train/0.25_alice"].values()) <= {2, 3}
    assert set(per_image["train/3_bob"].values()) == {3 * EPOCHS}
    assert set(per_image["train/1.5_carol"].values()) <= {14, 15, 16}
    assert_balanced(per_epoch["reg/1_person"], 116)
    assert "0.25 (folder name)" in out and "total optimization steps: 580 (from --max_train_epochs)" in out


def _batches_per_epoch(out: str) -> int:
    line = next(line for line in out.splitlines() if "batches per epoch (scheduled:" in line)
    return int(line.split(" batches per epoch")[0].rsplit(" ", 1)[1])


@pytest.mark.parametrize("planned", ["phase-out-regularization.toml"], indirect=True)
def test_regularization_share_falls_from_10_to_2_percent_at_50_images_per_epoch(planned):
    per_epoch, per_image, out = planned
    shares = []
    for epoch in range(1, EPOCHS + 1):
        subject, reg = per_epoch["train/subject"][epoch], per_epoch["reg/person"][epoch]
        assert abs(subject + reg - 50) <= PER_EPOCH_SLACK, (epoch, subject, reg)
        shares.append(reg / (subject + reg))
    assert 0.06 <= shares[0] <= 0.14 and shares[-1] <= 0.06
    assert sum(per_epoch["reg/person"].values()) < sum(5 - 4.08 * (e - 1) / 9 for e in range(1, 11)) + TOTAL_SLACK
    assert max(per_image["reg/person"].values()) == 1  # a different few every epoch
    assert "schedule: target images" in out and _batches_per_epoch(out) >= 25


@pytest.mark.parametrize("planned", ["bring-in-a-concept.toml"], indirect=True)
def test_the_hat_enters_at_epoch_5_and_takes_half_of_each_epoch(planned):
    per_epoch, per_image, out = planned
    for epoch in range(1, 5):
        assert per_epoch["train/hat"][epoch] == 0 and per_epoch["train/alice"][epoch] == 100
    for epoch in range(5, EPOCHS + 1):
        assert abs(per_epoch["train/hat"][epoch] - 50) <= PER_EPOCH_SLACK, epoch
        assert abs(per_epoch["train/alice"][epoch] + per_epoch["train/hat"][epoch] - 100) <= PER_EPOCH_SLACK, epoch
    assert len(per_image["train/hat"]) == 50  # every hat image within its first two epochs
    assert 25 <= _batches_per_epoch(out) <= 28 and "epochs 5-" in out  # 100 images in 3 buckets of batch size 4


@pytest.mark.parametrize("planned", ["fade-in-a-style.toml"], indirect=True)
def test_the_style_fades_in_to_half_of_each_epoch(planned):
    per_epoch, _, out = planned
    style = [per_epoch["train/style"][e] for e in range(1, EPOCHS + 1)]
    assert style[0] == 0 and abs(style[-1] - 50) <= PER_EPOCH_SLACK
    assert all(b >= a - PER_EPOCH_SLACK for a, b in zip(style, style[1:]))  # rises epoch by epoch
    for epoch in range(1, EPOCHS + 1):
        assert abs(per_epoch["train/subject"][epoch] + per_epoch["train/style"][epoch] - 100) <= PER_EPOCH_SLACK, epoch
    assert "scheduled (subset)" in out
