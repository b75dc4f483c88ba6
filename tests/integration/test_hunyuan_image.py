"""HunyuanImage-2.1 LoRA training through `kohya-multiplier hunyuan_image_train_network`, for real,
on CPU, with a tiny random DiT, VAE, Qwen2.5-VL and byT5 (tiny_hunyuan.py). sd-scripts has no full
fine-tune script for HunyuanImage-2.1.

Text encoder outputs are always cached on disk (`--cache_text_encoder_outputs_to_disk`, see below):
- with multipliers, latents cached in memory, 2 persistent DataLoader workers;
- with multipliers, latents cached on disk too (`--cache_latents_to_disk`), no workers;
- a config without multipliers trains bit-identical LoRA weights to the stock
  hunyuan_image_train_network.py (no workers).
Each run with multipliers is checked against `kohya-multiplier plan --schedule`, what sd-scripts
prints and the LoRA's metadata; its disk caches cover every trained image and none of the
excluded subset.

Why the text encoder outputs go to disk: sd-scripts' in-memory cache of them fails for
HunyuanImage-2.1 in both tested revisions, stock too (library/dataset.py stacks the per-image OCR
flag, a numpy bool scalar in memory, with `torch.FloatTensor(...)`, which refuses it: "new(): data
must be a sequence"; read back from the .npz file it is a 0-d array, which works). Without the
cache the text encoders run each step, which fails on CPU: their bfloat16 output meets the float32
DiT with `--mixed_precision no`, and with bf16 the float32 zero byT5 embedding meets a bfloat16
LayerNorm (CPU autocast does not cast it).

What sd-scripts hard-codes and the tiny model shrinks (tiny_hook/km_tiny_hunyuan.py holds the sizes):
- the DiT's sizes are literal locals of `HYImageDiffusionTransformer.__init__` (width 3584, 28 heads,
  20 double and 40 single blocks, RoPE [64, 64], text width 3584, byT5 mapper 2048): the hook
  recompiles that method with those literals replaced (width 64, 2 heads, 1 + 1 blocks, RoPE
  [16, 16], text width 32, mapper 32), each required to occur exactly once;
- the VAE's widths and block counts (128..1024, 2 per level), passed as keywords to its Encoder
  and Decoder: wrapped to (32, 32, 32, 32, 32, 128), no residual block in the encoder's levels
  (float16, slow on CPU) and one in the decoder's; the middle blocks, the 64 latent
  channels and the 32x downscale stay;
- the Qwen2.5-VL and byT5 configs, JSON literals inside sd-scripts' loaders: the config classes
  are wrapped (Qwen: width 32, 3 layers, vocabulary 320, a 1-block vision tower; byT5: 1 layer,
  d_model kept at 1472, which sd-scripts hard-codes for a caption without quoted text).

Tokenizers: sd-scripts' tokenize strategy takes --tokenizer_cache_dir, but its Qwen2.5-VL and byT5
loaders also load the tokenizers by hub id ("Qwen/Qwen2.5-VL-7B-Instruct", "google/byt5-small")
with no argument to point them elsewhere. tiny_hunyuan.py builds both offline (a byte-level BPE
with Qwen's chat special tokens; byT5's byte tokenizer) and writes them to both places; the runs
get the hub cache through HF_HUB_CACHE (and HF_HUB_OFFLINE=1, as every run here).

Revisions without hunyuan_image_train_network.py skip, saying so.
"""

from __future__ import annotations

import pytest

from harness import (
    SUBJECTS,
    assert_lora_metadata_has_multipliers,
    assert_subject_counts,
    canonical,
    one_checkout_only,
    per_epoch,
    printed_int,
    safetensors_tensor_bytes,
    train,
    train_and_plan,
    write_config,
    write_images_tree,
)

pytestmark = pytest.mark.integration

COMMAND = "hunyuan_image_train_network"
EPOCHS = 2
SEED = 42
# LoRA on the DiT only (sd-scripts requires it for HunyuanImage-2.1); latents cached (in memory unless
# a run adds --cache_latents_to_disk), text encoder outputs on disk (see the module docstring); its
# flow-matching defaults spelt out.
HUNYUAN_ARGS = [
    "--network_module", "networks.lora_hunyuan_image", "--network_dim", "4", "--network_alpha", "1",
    "--network_train_unet_only", "--cache_latents",
    "--cache_text_encoder_outputs", "--cache_text_encoder_outputs_to_disk",
    "--model_prediction_type", "raw", "--discrete_flow_shift", "5.0", "--attn_mode", "torch",
]
PERSISTENT_WORKERS = ["--max_data_loader_n_workers", "2", "--persistent_data_loader_workers"]
NO_WORKERS = ["--max_data_loader_n_workers", "0"]
LATENT_CACHE_SUFFIX = "_hi.npz"  # sd-scripts' HunyuanImage cache files beside each image
TEXT_CACHE_SUFFIX = "_hi_te.npz"


def _planned_run(sd, tiny_hunyuan, out, extra: list[str]):
    """A run with multipliers on its own images (the caches it writes go beside them)."""
    write_images_tree(out / "data")
    config = write_config(out / "data", batch_size=2)
    run, planned = train_and_plan(sd, COMMAND, config, out, [*HUNYUAN_ARGS, *extra], tiny=tiny_hunyuan, epochs=EPOCHS, seed=SEED)
    return run, planned, out / "data"


@pytest.fixture(scope="module")
def memory_run(sd, tiny_hunyuan, tmp_path_factory):
    return _planned_run(sd, tiny_hunyuan, tmp_path_factory.mktemp(f"hunyuan-memory-{sd.label}"), PERSISTENT_WORKERS)


@pytest.fixture(scope="module")
def disk_run(sd, tiny_hunyuan, tmp_path_factory):
    return _planned_run(sd, tiny_hunyuan, tmp_path_factory.mktemp(f"hunyuan-disk-{sd.label}"), ["--cache_latents_to_disk", *NO_WORKERS])


# Tests take the run by name; they also take `sd` so that they are parametrised by checkout.
RUNS = ["memory_run", "disk_run"]


@pytest.mark.parametrize("case", RUNS)
def test_schedule_is_the_dry_run(sd, request, case):
    run, planned, _ = request.getfixturevalue(case)
    assert planned, "the dry run planned nothing"
    assert canonical(run.records) == canonical(planned)
    assert_subject_counts(run.records, EPOCHS)


@pytest.mark.parametrize("case", RUNS)
def test_every_epoch_has_the_printed_length(sd, request, case):
    run, planned, _ = request.getfixturevalue(case)
    length = len(planned) // EPOCHS
    assert per_epoch(run.records) == {e: length for e in range(1, EPOCHS + 1)}
    assert printed_int(run.output, "num batches per epoch") == length
    assert printed_int(run.output, "num epochs") == EPOCHS
    assert printed_int(run.output, "total optimization steps") == EPOCHS * length
    assert all(1 <= len(r["images"]) <= 2 for r in run.records)


@pytest.mark.parametrize("case", RUNS)
def test_lora_metadata_records_multipliers(sd, request, case):
    run = request.getfixturevalue(case)[0]
    assert_lora_metadata_has_multipliers(run.output_dir / "out.safetensors", run.records, EPOCHS)


@pytest.mark.parametrize("case", RUNS)
def test_disk_caches_cover_every_trained_image(sd, request, case):
    run, _, data = request.getfixturevalue(case)
    trained = {image for record in run.records for image in record["images"]}
    assert trained
    for image in sorted(trained):
        folder, stem = data / image.split("/")[-3] / image.split("/")[-2], image.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        assert (folder / f"{stem}{TEXT_CACHE_SUFFIX}").is_file(), f"no text encoder cache on disk for {image}"
        latents = list(folder.glob(f"{stem}_*{LATENT_CACHE_SUFFIX}"))
        if case == "disk_run":
            assert latents, f"no latent cache on disk for {image}"
        else:
            assert not latents, f"latents cached in memory were written to disk for {image}"
    carol = data / "train" / "carol"
    assert len(list(carol.glob("*.png"))) == SUBJECTS["carol"][0]
    assert not list(carol.glob("*.npz")), "the excluded subset was cached"


def test_without_multipliers_training_is_stock(sd, tiny_hunyuan, tmp_path_factory):
    one_checkout_only(sd, "the HunyuanImage bit-identical check without multipliers")
    data = tmp_path_factory.mktemp(f"hunyuan-data-{sd.label}")
    write_images_tree(data)
    config = write_config(data, batch_size=2, multipliers=False, name="stock.toml")
    args = ["--dataset_config", str(config), "--seed", "11", "--max_train_epochs", str(EPOCHS), *HUNYUAN_ARGS, *NO_WORKERS]
    stock = train(sd, COMMAND, args, tmp_path_factory.mktemp(f"hunyuan-stock-{sd.label}"), stock=True, tiny=tiny_hunyuan).check()
    wrapped = train(sd, COMMAND, args, tmp_path_factory.mktemp(f"hunyuan-wrapped-{sd.label}"), schedule=False, tiny=tiny_hunyuan).check()
    assert safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors") == safetensors_tensor_bytes(
        stock.output_dir / "out.safetensors"
    ), "the wrapper changed HunyuanImage training of a config without multipliers"
