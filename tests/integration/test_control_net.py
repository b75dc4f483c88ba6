"""ControlNet-LLLite training through `kohya-multiplier sdxl_train_control_net_lllite`, for real, on
CPU, with the session's tiny SDXL (tiny_sdxl.py); LLLite adapts to the tiny U-Net's widths
(train_control_net.py hard-codes SD1.5's U-Net config for its ControlNet, which the tiny SD1.x
model does not have).

A conditioning dataset (every subset has conditioning_data_dir) pairs each image with the image of
the same name in its conditioning folder; sd-scripts registers and serves the images through an
internal DreamBoothDataset, which the wrapper makes the planned dataset:
- with multipliers (fractional, integer, 0, multiply.txt), the run trains the dry run's schedule
  with the lengths it prints;
- a config without multipliers trains bit-identical ControlNet weights to the stock script.

Revisions without library/controlnet_dataset.py's delegate (v0.9.x, main 48d368fa) are not
trained here, to keep CI time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import (
    BUCKET_OPTIONS,
    DAVE_MULTIPLY_TXT,
    SUBJECTS,
    canonical,
    images_per_subject,
    one_checkout_only,
    per_epoch,
    printed_int,
    safetensors_tensor_bytes,
    train,
    train_and_plan,
)
from pngs import write_images
from kohya_multiplier.checkouts import locate

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 42
SCRIPT = "sdxl_train_control_net_lllite"
LLLITE_ARGS = ["--cond_emb_dim", "8", "--network_dim", "4", "--cache_latents"]
NO_WORKERS = ["--max_data_loader_n_workers", "0"]
MULTIPLIERS = {"alice": {"multiplier": 0.5}, "bob": {"multiplier": 2}, "carol": {"multiplier": 0.0}, "dave": {}}
STOCK = {"alice": {"num_repeats": 1}, "bob": {"num_repeats": 2}}  # dave's multiply.txt would be a multiplier


def _strategy_layout_only(sd) -> None:
    if sd.revision.layout not in (locate.LAYOUT_STRATEGIES, locate.LAYOUT_SPLIT):
        pytest.skip(f"CI time: {SCRIPT} is trained on the strategy-layout revisions only, not {sd.revision.name}")


def _write_data(root: Path) -> None:
    """Every subject's images and, under cond/, a conditioning image of the same name and size each."""
    for seed, (name, (count, size)) in enumerate(SUBJECTS.items(), start=1):
        write_images(root / "train" / name, count, size, seed=seed, caption=f"photo of {name}")
        write_images(root / "cond" / name, count, size, seed=seed + 50)
    (root / "train" / "dave" / "multiply.txt").write_text(DAVE_MULTIPLY_TXT + "\n")


def _write_config(root: Path, subsets: dict[str, dict], name: str) -> Path:
    lines = ["[general]", 'caption_extension = ".txt"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in BUCKET_OPTIONS.items()]
    lines += ["", "[[datasets]]", "resolution = 128", "batch_size = 2"]
    for subject, keys in subsets.items():
        lines += ["", "  [[datasets.subsets]]", f"  image_dir = {json.dumps(str(root / 'train' / subject))}",
                  f"  conditioning_data_dir = {json.dumps(str(root / 'cond' / subject))}"]
        lines += [f"  {k} = {json.dumps(v)}" for k, v in keys.items()]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data(sd, tmp_path_factory):
    _strategy_layout_only(sd)
    root = tmp_path_factory.mktemp(f"controlnet-data-{sd.label}")
    _write_data(root)
    return root


@pytest.fixture(scope="module")
def planned_run(sd, tiny_sdxl, data, tmp_path_factory):
    config = _write_config(data, MULTIPLIERS, "dataset.toml")
    out = tmp_path_factory.mktemp(f"controlnet-planned-{sd.label}")
    run, planned = train_and_plan(sd, SCRIPT, config, out, [*LLLITE_ARGS, *NO_WORKERS], tiny=tiny_sdxl, epochs=EPOCHS, seed=SEED)
    return run, planned


def test_schedule_is_the_dry_run(planned_run):
    run, planned = planned_run
    assert planned, "the dry run planned nothing"
    assert canonical(run.records) == canonical(planned)
    counts = images_per_subject(run.records)
    assert counts["carol"] == 0, "a subset with multiplier 0 was trained"
    assert counts["bob"] == 2 * SUBJECTS["bob"][0] * EPOCHS, counts
    assert counts["alice"] == SUBJECTS["alice"][0] // 2 * EPOCHS, counts
    assert abs(counts["dave"] - 0.4 * SUBJECTS["dave"][0] * EPOCHS) <= 1, counts


def test_every_epoch_has_the_printed_length(planned_run):
    run, planned = planned_run
    length = len(planned) // EPOCHS
    assert per_epoch(run.records) == {e: length for e in range(1, EPOCHS + 1)}
    assert printed_int(run.output, "num batches per epoch") == length
    assert printed_int(run.output, "num epochs") == EPOCHS
    assert printed_int(run.output, "total optimization steps") == EPOCHS * length
    assert all(1 <= len(r["images"]) <= 2 for r in run.records)


def test_without_multipliers_training_is_stock(sd, tiny_sdxl, data, tmp_path_factory):
    one_checkout_only(sd, "the LLLite bit-identical check without multipliers")
    config = _write_config(data, STOCK, "stock.toml")
    args = ["--dataset_config", str(config), "--seed", "11", "--max_train_epochs", str(EPOCHS), *LLLITE_ARGS, *NO_WORKERS]
    stock = train(sd, SCRIPT, args, tmp_path_factory.mktemp(f"controlnet-stock-{sd.label}"), stock=True, tiny=tiny_sdxl).check()
    wrapped = train(sd, SCRIPT, args, tmp_path_factory.mktemp(f"controlnet-wrapped-{sd.label}"), schedule=False, tiny=tiny_sdxl).check()
    assert safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors") == safetensors_tensor_bytes(
        stock.output_dir / "out.safetensors"
    ), "the wrapper changed LLLite training of a config without multipliers"
