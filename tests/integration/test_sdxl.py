"""SDXL training through the wrapper, for real, on CPU, with a tiny random SDXL (tiny_sdxl.py).

- `kohya-multiplier sdxl_train_network` (LoRA, text encoders trained too), 2 persistent workers:
  every revision, v0.9.1 included;
- the same with `--cache_text_encoder_outputs --network_train_unet_only`, no workers;
- `kohya-multiplier sdxl_train` (full fine-tune, DreamBooth-style dataset TOML), 2 persistent workers;
- a config without multipliers trains bit-identical LoRA weights to the stock sdxl_train_network.py.

Each run is checked against `kohya-multiplier plan --schedule` and against what sd-scripts prints.
The last three cases run on the strategy-layout revisions only (main, v0.11.x), to keep CI time.
"""

from __future__ import annotations

import pytest

from harness import (
    LORA_ARGS,
    assert_epochs_have_the_printed_length,
    assert_lora_metadata_has_multipliers,
    assert_schedule_is_the_dry_run,
    dry_run,
    safetensors_tensor_bytes,
    safetensors_tensors,
    train,
    write_config,
    write_images_tree,
)
from kohya_multiplier.checkouts import locate

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 42
PERSISTENT_WORKERS = ["--max_data_loader_n_workers", "2", "--persistent_data_loader_workers"]
NO_WORKERS = ["--max_data_loader_n_workers", "0"]
CACHED_TEXT = ["--cache_text_encoder_outputs", "--network_train_unet_only"]  # sd-scripts requires both


def _full_set_only(sd) -> None:
    if sd.revision.layout == locate.LAYOUT_V09:
        pytest.skip(f"CI time: on sd-scripts {sd.revision.name} only the SDXL LoRA case runs")


@pytest.fixture(scope="module")
def data(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"sdxl-data-{sd.label}")
    write_images_tree(root)
    return root


def _planned_run(sd, tiny_sdxl, data, tmp_path_factory, command: str, name: str, extra: list[str]):
    config = write_config(data, batch_size=2, name=f"{name}.toml")
    out = tmp_path_factory.mktemp(f"sdxl-{name}-{sd.label}")
    args = ["--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", str(EPOCHS), *extra]
    run = train(sd, command, args, out, tiny=tiny_sdxl).check()
    planned, _ = dry_run([str(config), "--seed", str(SEED), "--epochs", str(EPOCHS)], out / "dry-run.jsonl")
    return run, planned


@pytest.fixture(scope="module")
def lora_run(sd, tiny_sdxl, data, tmp_path_factory):
    return _planned_run(sd, tiny_sdxl, data, tmp_path_factory, "sdxl_train_network", "lora", [*LORA_ARGS, *PERSISTENT_WORKERS])


@pytest.fixture(scope="module")
def cached_text_run(sd, tiny_sdxl, data, tmp_path_factory):
    _full_set_only(sd)
    return _planned_run(sd, tiny_sdxl, data, tmp_path_factory, "sdxl_train_network", "lora-cached-te", [*LORA_ARGS, *CACHED_TEXT, *NO_WORKERS])


@pytest.fixture(scope="module")
def finetune_run(sd, tiny_sdxl, data, tmp_path_factory):
    _full_set_only(sd)
    return _planned_run(sd, tiny_sdxl, data, tmp_path_factory, "sdxl_train", "finetune", PERSISTENT_WORKERS)


# Tests take the run by name; they also take `sd` so that they are parametrised by checkout.
RUNS = ["lora_run", "cached_text_run", "finetune_run"]


@pytest.mark.parametrize("case", RUNS)
def test_schedule_is_the_dry_run(sd, request, case):
    run, planned = request.getfixturevalue(case)
    assert_schedule_is_the_dry_run(run, planned, EPOCHS)


@pytest.mark.parametrize("case", RUNS)
def test_every_epoch_has_the_printed_length(sd, request, case):
    run, planned = request.getfixturevalue(case)
    assert_epochs_have_the_printed_length(run, planned, EPOCHS)


@pytest.mark.parametrize("case", ["lora_run", "cached_text_run"])
def test_lora_metadata_records_multipliers(sd, request, case):
    run, _ = request.getfixturevalue(case)
    assert_lora_metadata_has_multipliers(run.output_dir / "out.safetensors", run.records, EPOCHS)


def test_text_encoders_are_trained_only_without_their_cache(lora_run, cached_text_run):
    """The two LoRA runs really differ as their flags say (so both code paths were exercised)."""
    with_text = {name.split("_")[1] for name in safetensors_tensors(lora_run[0].output_dir / "out.safetensors")}
    unet_only = {name.split("_")[1] for name in safetensors_tensors(cached_text_run[0].output_dir / "out.safetensors")}
    assert {"te1", "te2", "unet"} <= with_text
    assert unet_only == {"unet"}


def test_finetune_saves_a_trained_unet(tiny_sdxl, finetune_run):
    run, _ = finetune_run
    before = safetensors_tensors(tiny_sdxl.folder / "sdxl.safetensors")
    after = safetensors_tensors(run.output_dir / "out.safetensors")
    unet = [name for name in before if name.startswith("model.diffusion_model.")]
    assert unet and all(name in after for name in unet)
    assert any(before[name] != after[name] for name in unet), "sdxl_train saved an untrained U-Net"


def test_without_multipliers_training_is_stock(sd, tiny_sdxl, data, tmp_path_factory):
    _full_set_only(sd)
    config = write_config(data, batch_size=2, multipliers=False, name="stock.toml")
    args = ["--dataset_config", str(config), "--seed", "11", "--cache_latents", "--max_train_epochs", str(EPOCHS),
            *LORA_ARGS, *CACHED_TEXT, *NO_WORKERS]
    stock = train(sd, "sdxl_train_network", args, tmp_path_factory.mktemp(f"sdxl-stock-{sd.label}"), stock=True, tiny=tiny_sdxl).check()
    wrapped = train(sd, "sdxl_train_network", args, tmp_path_factory.mktemp(f"sdxl-wrapped-{sd.label}"), schedule=False, tiny=tiny_sdxl).check()
    assert safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors") == safetensors_tensor_bytes(
        stock.output_dir / "out.safetensors"
    ), "the wrapper changed SDXL training of a config without multipliers"
