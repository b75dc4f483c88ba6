"""Lumina Image 2.0 training through the wrapper, for real, on CPU, with a tiny random NextDiT,
Gemma2 (with a tiny Gemma tokenizer) and FLUX AutoEncoder (tiny_lumina.py).

- `kohya-multiplier lumina_train_network` (LoRA on NextDiT, `networks.lora_lumina`), latents and
  Gemma2 outputs cached in memory, no workers: the schedule is the dry run's, every epoch has the
  printed length, the LoRA's metadata records the multipliers;
- a config without multipliers trains bit-identical LoRA weights to the stock lumina_train_network.py;
- `kohya-multiplier lumina_train` (full fine-tune) with the same tiny model: the schedule is the
  dry run's and sd-scripts prints the planned batches and steps.

What Lumina hard-codes that had to be shrunk (tiny_hook/km_tiny_lumina.py, selected by
KOHYA_MULTIPLIER_TINY_LUMINA=1): NextDiT's 2B config (`LuminaParams.get_2b_config`, the only one
sd-scripts loads), the Gemma2 config literal of `lumina_util.load_gemma2` (gemma-2-2b, 256,000-token
vocabulary) and the FLUX AutoEncoder's `ae_params`. The Gemma tokenizer, which sd-scripts only
fetches from the Hugging Face hub (`AutoTokenizer.from_pretrained("google/gemma-2-2b",
cache_dir=...)`), is built offline in the hub cache layout: lumina_train_network.py finds it
through its own `--tokenizer_cache_dir`; lumina_train.py passes no cache folder to the tokenizer
(it ignores `--tokenizer_cache_dir`), so its run names that folder with the hub client's
`HF_HUB_CACHE` environment variable. Gemma2 tokens are cut to 32 (`--gemma2_max_token_length`).

Revisions without lumina_train_network.py (v0.9.x) skip, saying so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness import (
    assert_epochs_have_the_printed_length,
    assert_lora_metadata_has_multipliers,
    assert_schedule_is_the_dry_run,
    one_checkout_only,
    safetensors_tensor_bytes,
    train,
    train_and_plan,
    write_config,
    write_images_tree,
)

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 42
NO_WORKERS = ["--max_data_loader_n_workers", "0"]
# Text encoder outputs and latents cached, as sd-scripts' Lumina guide does; the flow-matching
# options of that guide; Gemma2 tokens cut to 32 to keep CPU time small.
MODEL_ARGS = [
    "--cache_text_encoder_outputs", "--cache_latents",
    "--timestep_sampling", "nextdit_shift", "--discrete_flow_shift", "6.0", "--model_prediction_type", "raw",
    "--gemma2_max_token_length", "32", *NO_WORKERS,
]
# LoRA on NextDiT only (sd-scripts requires it with cached text encoder outputs).
LORA_ARGS = ["--network_module", "networks.lora_lumina", "--network_dim", "4", "--network_alpha", "1", "--network_train_unet_only"]


def _planned_run(sd, tiny, data, out, command: str, extra: list[str]):
    config = write_config(data, batch_size=2)
    run, planned = train_and_plan(sd, command, config, out, [*MODEL_ARGS, *extra], tiny=tiny, epochs=EPOCHS, seed=SEED)
    return run, planned


@pytest.fixture(scope="module")
def data(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"lumina-data-{sd.label}")
    write_images_tree(root)
    return root


@pytest.fixture(scope="module")
def lora_run(sd, tiny_lumina, data, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"lumina-lora-{sd.label}")
    return _planned_run(sd, tiny_lumina, data, out, "lumina_train_network", LORA_ARGS)


@pytest.fixture(scope="module")
def finetune_run(sd, tiny_lumina, data, tmp_path_factory):
    if not (Path(sd.root) / "lumina_train.py").is_file():
        pytest.skip(f"sd-scripts {sd.revision.name} has no lumina_train.py")
    # lumina_train.py loads the Gemma tokenizer from the hub client's default cache only.
    tiny = dataclasses.replace(tiny_lumina, env={**tiny_lumina.env, "HF_HUB_CACHE": str(tiny_lumina.folder / "tokenizers")})
    out = tmp_path_factory.mktemp(f"lumina-finetune-{sd.label}")
    return _planned_run(sd, tiny, data, out, "lumina_train", [])


# Tests take the run by name; they also take `sd` so that they are parametrised by checkout.
RUNS = ["lora_run", "finetune_run"]


@pytest.mark.parametrize("case", RUNS)
def test_schedule_is_the_dry_run(sd, request, case):
    run, planned = request.getfixturevalue(case)
    assert_schedule_is_the_dry_run(run, planned, EPOCHS)


@pytest.mark.parametrize("case", RUNS)
def test_every_epoch_has_the_printed_length(sd, request, case):
    run, planned = request.getfixturevalue(case)
    assert_epochs_have_the_printed_length(run, planned, EPOCHS)


def test_lora_metadata_records_multipliers(sd, lora_run):
    run = lora_run[0]
    assert_lora_metadata_has_multipliers(run.output_dir / "out.safetensors", run.records, EPOCHS)


def test_finetune_saves_the_model(sd, finetune_run):
    run = finetune_run[0]
    assert (run.output_dir / "out.safetensors").is_file(), sorted(p.name for p in run.output_dir.iterdir())


def test_without_multipliers_training_is_stock(sd, tiny_lumina, data, tmp_path_factory):
    one_checkout_only(sd, "the Lumina bit-identical check without multipliers")
    config = write_config(data, batch_size=2, multipliers=False, name="stock.toml")
    args = ["--dataset_config", str(config), "--seed", "11", "--max_train_epochs", str(EPOCHS), *MODEL_ARGS, *LORA_ARGS]
    stock = train(sd, "lumina_train_network", args, tmp_path_factory.mktemp(f"lumina-stock-{sd.label}"), stock=True, tiny=tiny_lumina).check()
    wrapped = train(sd, "lumina_train_network", args, tmp_path_factory.mktemp(f"lumina-wrapped-{sd.label}"), schedule=False, tiny=tiny_lumina).check()
    assert safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors") == safetensors_tensor_bytes(
        stock.output_dir / "out.safetensors"
    ), "the wrapper changed Lumina training of a config without multipliers"
