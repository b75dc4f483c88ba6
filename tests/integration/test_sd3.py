"""SD3 training through the wrapper, for real, on CPU, with a tiny random SD3 (medium layout)
MMDiT, 16-channel VAE, CLIP-L, CLIP-G and T5 (tiny_sd3.py).

- `kohya-multiplier sd3_train_network` (LoRA on the MMDiT, text encoder outputs and latents cached
  in memory, no workers): the schedule is the dry run's, every epoch has the printed length, and
  the saved LoRA's metadata records the multipliers;
- `kohya-multiplier sd3_train` (full fine-tune of the MMDiT, the same caches): the schedule is the
  dry run's, every epoch has the printed length, and the saved MMDiT was trained;
- a config without multipliers trains bit-identical LoRA weights to the stock sd3_train_network.py.

What sd-scripts hard-codes for SD3 and the test shrinks (tiny_hook/km_tiny_sd3.py, active with
KOHYA_MULTIPLIER_TINY_SD3=1 in every process of a run): the CLIP-L and CLIP-G configs
(`library.sd3_utils`, literal widths 768 and 1280), the T5-XXL config (`library.flux_utils`'s
literal JSON, which SD3 loads T5 with), the VAE's widths (`VAEEncoder` / `VAEDecoder` defaults),
and the T5-XXL width 4096 that `Sd3TextEncodingStrategy.concat_encodings` pads the CLIP outputs
to (it runs unchanged on T5's output padded to 4096, cut back to the tiny width). The MMDiT needs
none: sd-scripts reads its depth, patch size, position grid and input widths from the checkpoint.

Tokenizers, offline: the real CLIP tokenizer (tiny_sd.py) under the CLIP-L and CLIP-G names and
the T5 tokenizer sd-scripts ships in configs/t5_old/, given with --tokenizer_cache_dir.
sd3_train.py ignores --tokenizer_cache_dir (it builds Sd3TokenizeStrategy without it), so the same
files also form a Hugging Face hub cache that its runs get through HF_HUB_CACHE (HF_HUB_OFFLINE=1).

Revisions without sd3_train_network.py skip, saying so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import (
    assert_epochs_have_the_printed_length,
    assert_lora_metadata_has_multipliers,
    assert_schedule_is_the_dry_run,
    one_checkout_only,
    safetensors_tensor_bytes,
    safetensors_tensors,
    train,
    train_and_plan,
    write_config,
    write_images_tree,
)

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 42
NO_WORKERS = ["--max_data_loader_n_workers", "0"]
# Text encoder outputs and latents cached (sd-scripts requires --network_train_unet_only with the
# text encoder cache); T5 tokens cut to 64 to keep CPU time small.
SD3_ARGS = ["--cache_text_encoder_outputs", "--cache_latents", "--t5xxl_max_token_length", "64", *NO_WORKERS]
LORA_ARGS = ["--network_module", "networks.lora_sd3", "--network_dim", "4", "--network_alpha", "1", "--network_train_unet_only"]


@pytest.fixture(scope="module")
def data(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"sd3-data-{sd.label}")
    write_images_tree(root)
    return root


def _planned_run(sd, tiny_sd3, data, tmp_path_factory, command: str, name: str, extra: list[str]):
    config = write_config(data, batch_size=2, name=f"{name}.toml")
    out = tmp_path_factory.mktemp(f"sd3-{name}-{sd.label}")
    run, planned = train_and_plan(sd, command, config, out, [*SD3_ARGS, *extra], tiny=tiny_sd3, epochs=EPOCHS, seed=SEED)
    return run, planned


@pytest.fixture(scope="module")
def lora_run(sd, tiny_sd3, data, tmp_path_factory):
    return _planned_run(sd, tiny_sd3, data, tmp_path_factory, "sd3_train_network", "lora", LORA_ARGS)


@pytest.fixture(scope="module")
def finetune_run(sd, tiny_sd3, data, tmp_path_factory):
    if not (Path(sd.root) / "sd3_train.py").is_file():
        pytest.skip(f"sd-scripts {sd.revision.name} has no sd3_train.py")
    return _planned_run(sd, tiny_sd3, data, tmp_path_factory, "sd3_train", "finetune", [])


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
    run, _ = lora_run
    assert_lora_metadata_has_multipliers(run.output_dir / "out.safetensors", run.records, EPOCHS)


def test_lora_trains_the_mmdit_only(sd, lora_run):
    names = list(safetensors_tensors(lora_run[0].output_dir / "out.safetensors"))
    assert names and all(name.startswith("lora_unet_") for name in names), names[:5]


def test_finetune_saves_a_trained_mmdit(sd, tiny_sd3, finetune_run):
    run, _ = finetune_run
    before = safetensors_tensors(tiny_sd3.folder / "sd3.safetensors")
    after = safetensors_tensors(run.output_dir / "out.safetensors")
    assert before and all(name in after for name in before)
    assert any(before[name] != after[name] for name in before), "sd3_train saved an untrained MMDiT"


def test_without_multipliers_training_is_stock(sd, tiny_sd3, data, tmp_path_factory):
    one_checkout_only(sd, "the SD3 bit-identical check without multipliers")
    config = write_config(data, batch_size=2, multipliers=False, name="stock.toml")
    args = ["--dataset_config", str(config), "--seed", "11", "--max_train_epochs", str(EPOCHS), *SD3_ARGS, *LORA_ARGS]
    stock = train(sd, "sd3_train_network", args, tmp_path_factory.mktemp(f"sd3-stock-{sd.label}"), stock=True, tiny=tiny_sd3).check()
    wrapped = train(sd, "sd3_train_network", args, tmp_path_factory.mktemp(f"sd3-wrapped-{sd.label}"), schedule=False, tiny=tiny_sd3).check()
    assert safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors") == safetensors_tensor_bytes(
        stock.output_dir / "out.safetensors"
    ), "the wrapper changed SD3 training of a config without multipliers"
