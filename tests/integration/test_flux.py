"""FLUX LoRA training through `kohya-multiplier flux_train_network`, for real, on CPU, with a tiny
random FLUX.1-dev, AutoEncoder, CLIP-L and T5 (tiny_flux.py).

Text encoder outputs and latents are cached, as FLUX users do:
- in memory, with 2 persistent DataLoader workers;
- on disk (`--cache_latents_to_disk --cache_text_encoder_outputs_to_disk`), without workers;
- a config without multipliers trains bit-identical LoRA weights to the stock flux_train_network.py.

Revisions without flux_train_network.py (v0.9.x) skip, saying so.
"""

from __future__ import annotations

import pytest

from harness import (
    SUBJECTS,
    assert_epochs_have_the_printed_length,
    assert_lora_metadata_has_multipliers,
    assert_schedule_is_the_dry_run,
    safetensors_tensor_bytes,
    train,
    train_and_plan,
    write_config,
    write_images_tree,
)

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 42
# LoRA on the transformer only (sd-scripts requires it with cached text encoder outputs); the
# flow-matching options of sd-scripts' FLUX guide; T5 tokens cut to 64 to keep CPU time small.
# FLUX_MODEL_ARGS are shared with the full fine-tune (test_flux_train.py).
FLUX_MODEL_ARGS = [
    "--cache_text_encoder_outputs", "--cache_latents",
    "--guidance_scale", "1.0", "--timestep_sampling", "shift", "--discrete_flow_shift", "3.1582",
    "--model_prediction_type", "raw", "--t5xxl_max_token_length", "64",
]
FLUX_ARGS = [
    "--network_module", "networks.lora_flux", "--network_dim", "4", "--network_alpha", "1",
    "--network_train_unet_only", *FLUX_MODEL_ARGS,
]
DISK_CACHES = ["--cache_latents_to_disk", "--cache_text_encoder_outputs_to_disk"]
PERSISTENT_WORKERS = ["--max_data_loader_n_workers", "2", "--persistent_data_loader_workers"]
NO_WORKERS = ["--max_data_loader_n_workers", "0"]
LATENT_CACHE_SUFFIX = "_flux.npz"  # sd-scripts' FLUX cache files beside each image
TEXT_CACHE_SUFFIX = "_flux_te.npz"


def _planned_run(sd, tiny_flux, data, out, extra: list[str]):
    config = write_config(data, batch_size=2)
    run, planned = train_and_plan(sd, "flux_train_network", config, out, [*FLUX_ARGS, *extra], tiny=tiny_flux, epochs=EPOCHS, seed=SEED)
    return run, planned


@pytest.fixture(scope="module")
def data(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"flux-data-{sd.label}")
    write_images_tree(root)
    return root


@pytest.fixture(scope="module")
def memory_run(sd, tiny_flux, data, tmp_path_factory):
    return _planned_run(sd, tiny_flux, data, tmp_path_factory.mktemp(f"flux-memory-{sd.label}"), PERSISTENT_WORKERS)


@pytest.fixture(scope="module")
def disk_run(sd, tiny_flux, tmp_path_factory):
    """Its own images: the caches it writes beside them must not reach the other runs."""
    out = tmp_path_factory.mktemp(f"flux-disk-{sd.label}")
    write_images_tree(out / "data")
    run, planned = _planned_run(sd, tiny_flux, out / "data", out, [*DISK_CACHES, *NO_WORKERS])
    return run, planned, out / "data"


# Tests take the run by name; they also take `sd` so that they are parametrised by checkout.
RUNS = ["memory_run", "disk_run"]


@pytest.mark.parametrize("case", RUNS)
def test_schedule_is_the_dry_run(sd, request, case):
    run, planned = request.getfixturevalue(case)[:2]
    assert_schedule_is_the_dry_run(run, planned, EPOCHS)


@pytest.mark.parametrize("case", RUNS)
def test_every_epoch_has_the_printed_length(sd, request, case):
    run, planned = request.getfixturevalue(case)[:2]
    assert_epochs_have_the_printed_length(run, planned, EPOCHS)


@pytest.mark.parametrize("case", RUNS)
def test_lora_metadata_records_multipliers(sd, request, case):
    run = request.getfixturevalue(case)[0]
    assert_lora_metadata_has_multipliers(run.output_dir / "out.safetensors", run.records, EPOCHS)


def test_disk_caches_cover_every_trained_image(disk_run):
    run, _, data = disk_run
    trained = {image for record in run.records for image in record["images"]}
    assert trained
    for image in sorted(trained):
        folder, stem = data / image.split("/")[-3] / image.split("/")[-2], image.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        assert list(folder.glob(f"{stem}_*{LATENT_CACHE_SUFFIX}")), f"no latent cache on disk for {image}"
        assert (folder / f"{stem}{TEXT_CACHE_SUFFIX}").is_file(), f"no text encoder cache on disk for {image}"
    carol = data / "train" / "carol"
    assert len(list(carol.glob("*.png"))) == SUBJECTS["carol"][0]
    assert not list(carol.glob("*.npz")), "the excluded subset was cached"


def test_without_multipliers_training_is_stock(sd, tiny_flux, data, tmp_path_factory):
    config = write_config(data, batch_size=2, multipliers=False, name="stock.toml")
    args = ["--dataset_config", str(config), "--seed", "11", "--max_train_epochs", str(EPOCHS), *FLUX_ARGS, *NO_WORKERS]
    stock = train(sd, "flux_train_network", args, tmp_path_factory.mktemp(f"flux-stock-{sd.label}"), stock=True, tiny=tiny_flux).check()
    wrapped = train(sd, "flux_train_network", args, tmp_path_factory.mktemp(f"flux-wrapped-{sd.label}"), schedule=False, tiny=tiny_flux).check()
    assert safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors") == safetensors_tensor_bytes(
        stock.output_dir / "out.safetensors"
    ), "the wrapper changed FLUX training of a config without multipliers"
