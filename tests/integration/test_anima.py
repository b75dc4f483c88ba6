"""Anima training through the wrapper, for real, on CPU, with a tiny random Anima DiT (with its
LLM adapter), Qwen-Image VAE and Qwen3 text encoder (tiny_anima.py).

- `kohya-multiplier anima_train_network` (LoRA on the DiT, text encoder outputs and latents cached
  in memory, as Anima users do), 2 persistent DataLoader workers;
- `kohya-multiplier anima_train` (full fine-tune of the DiT), no workers;
- a config without multipliers trains bit-identical LoRA weights to the stock anima_train_network.py.

Each run is checked against `kohya-multiplier plan --schedule` and against what sd-scripts prints.

What Anima hard-codes, and how the tests shrink it (tiny_hook/km_tiny_anima.py, selected by
KOHYA_MULTIPLIER_TINY_ANIMA=1 in every process of a run): the DiT config is a literal inside
sd-scripts' `load_anima_model` (2048 channels, 28 blocks), the LLM adapter's dims are literals
inside the DiT (1024, 6 layers) and the Qwen-Image VAE config is a JSON literal inside its
`load_vae`; each class is replaced by a same-named subclass with tiny arguments. The adapter keeps
T5's 32,128-row embedding (its ids come from sd-scripts' own configs/t5_old tokenizer) and the VAE
its 8x scale and 16 latent channels. The Qwen3 text encoder is a tiny Hugging Face folder given
with `--qwen3 DIR` (sd-scripts reads a folder with AutoTokenizer/AutoModelForCausalLM); its
tokenizer is the real Qwen3 one, built offline from the vocab.json and merges.txt sd-scripts ships
in configs/qwen3_06b/ (that folder lacks tokenizer.json, and sd-scripts only reads it for a
single-file `--qwen3`). Token lengths are cut to 16 (`--qwen3_max_token_length`,
`--t5_max_token_length`) to keep CPU time small.

Revisions without anima_train_network.py skip, saying so.
"""

from __future__ import annotations

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
# --attn_mode: anima_train.py gives its default (None) to the DiT as is, which refuses it; the LoRA
# script turns None into "torch" itself.
ANIMA_ARGS = [
    "--attn_mode", "torch", "--cache_text_encoder_outputs", "--cache_latents",
    "--timestep_sampling", "shift", "--discrete_flow_shift", "3.0",
    "--qwen3_max_token_length", "16", "--t5_max_token_length", "16",
]
# LoRA on the DiT only (sd-scripts requires it with cached text encoder outputs).
LORA_ARGS = ["--network_module", "networks.lora_anima", "--network_dim", "4", "--network_alpha", "1", "--network_train_unet_only"]
PERSISTENT_WORKERS = ["--max_data_loader_n_workers", "2", "--persistent_data_loader_workers"]
NO_WORKERS = ["--max_data_loader_n_workers", "0"]


@pytest.fixture(scope="module")
def data(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"anima-data-{sd.label}")
    write_images_tree(root)
    return root


def _planned_run(sd, tiny_anima, data, tmp_path_factory, command: str, name: str, extra: list[str]):
    config = write_config(data, batch_size=2, name=f"{name}.toml")
    out = tmp_path_factory.mktemp(f"anima-{name}-{sd.label}")
    run, planned = train_and_plan(sd, command, config, out, [*ANIMA_ARGS, *extra], tiny=tiny_anima, epochs=EPOCHS, seed=SEED)
    return run, planned


@pytest.fixture(scope="module")
def lora_run(sd, tiny_anima, data, tmp_path_factory):
    return _planned_run(sd, tiny_anima, data, tmp_path_factory, "anima_train_network", "lora", [*LORA_ARGS, *PERSISTENT_WORKERS])


@pytest.fixture(scope="module")
def finetune_run(sd, tiny_anima, data, tmp_path_factory):
    if not (sd.root / "anima_train.py").is_file():
        pytest.skip(f"sd-scripts {sd.revision.name} has no anima_train.py")
    return _planned_run(sd, tiny_anima, data, tmp_path_factory, "anima_train", "finetune", NO_WORKERS)


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


def test_lora_metadata_records_multipliers(lora_run):
    run, _ = lora_run
    assert_lora_metadata_has_multipliers(run.output_dir / "out.safetensors", run.records, EPOCHS)


def test_finetune_saves_a_trained_dit(tiny_anima, finetune_run):
    run, _ = finetune_run
    before = safetensors_tensors(tiny_anima.folder / "anima.safetensors")
    after = safetensors_tensors(run.output_dir / "out.safetensors")
    blocks = [name for name in before if name.startswith("net.blocks.")]
    assert blocks and all(name in after for name in blocks)
    assert any(before[name] != after[name] for name in blocks), "anima_train saved an untrained DiT"


def test_without_multipliers_training_is_stock(sd, tiny_anima, data, tmp_path_factory):
    one_checkout_only(sd, "the Anima bit-identical check without multipliers")
    config = write_config(data, batch_size=2, multipliers=False, name="stock.toml")
    args = ["--dataset_config", str(config), "--seed", "11", "--max_train_epochs", str(EPOCHS),
            *ANIMA_ARGS, *LORA_ARGS, *NO_WORKERS]
    stock = train(sd, "anima_train_network", args, tmp_path_factory.mktemp(f"anima-stock-{sd.label}"), stock=True, tiny=tiny_anima).check()
    wrapped = train(sd, "anima_train_network", args, tmp_path_factory.mktemp(f"anima-wrapped-{sd.label}"), schedule=False, tiny=tiny_anima).check()
    lora = safetensors_tensors(stock.output_dir / "out.safetensors")
    assert any(name.endswith("lora_up.weight") and raw.strip(b"\0") for name, raw in lora.items()), "the LoRA did not train"
    assert safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors") == safetensors_tensor_bytes(
        stock.output_dir / "out.safetensors"
    ), "the wrapper changed Anima training of a config without multipliers"
