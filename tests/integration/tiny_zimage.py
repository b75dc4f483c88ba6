"""Build, offline, a tiny randomly initialised Z-Image DiT and its training caches, with musubi-tuner's
own code.

Run with the Python that runs musubi-tuner, with tests/integration/tiny_hook on PYTHONPATH and
KOHYA_MULTIPLIER_TINY_ZIMAGE=1 (the hook shrinks the sizes musubi hard-codes; the training
processes get the same hook, so they build the same tiny shapes):

    python tests/integration/tiny_zimage.py OUT_DIR
        writes OUT_DIR/zimage_dit.safetensors, for --dit, checked to load back unchanged through
        musubi's load_zimage_model
    python tests/integration/tiny_zimage.py --caches DATASET_CONFIG
        writes the latent and text-encoder caches of every dataset of a musubi dataset config

The model: ``zimage_model.create_model`` (the arguments ``load_zimage_model`` builds with) builds
it under accelerate's ``init_empty_weights``, on the meta device; here it runs with that context
manager replaced by a no-op, so the same call gives real, seeded random weights. Its two pad
tokens are ``torch.empty`` (whatever the memory held): they get seeded random values too.

The caches: musubi's real caching scripts (zimage_cache_latents.py,
zimage_cache_text_encoder_outputs.py) need the Z-Image VAE and the Qwen3 text encoder, and
``zimage_utils.load_qwen3`` loads its tokenizer from the hub ("Tongyi-MAI/Z-Image"), so they cannot
run offline. ``write_caches`` runs what those scripts run instead, with random encoders in place of
the VAE and Qwen3: musubi's dataset config loader, its datasets' own
``retrieve_latent_cache_batches`` / ``retrieve_text_encoder_output_cache_batches`` (which read the
images, resize them to their buckets and name every cache file), its caching drivers
(``cache_latents.encode_datasets``, ``cache_text_encoder_outputs.process_text_encoder_batches`` and
``post_process_cache_files``) and its writers ``save_latent_cache_z_image`` /
``save_text_encoder_output_cache_z_image``. Only the tensors are made up, in the shapes and dtypes
those scripts save: latents [16, H / 8, W / 8] in float32 (the Z-Image VAE runs in float32) for an
image of H x W pixels, Qwen3 outputs [tokens, cap_feat_dim] in bfloat16 with one token per caption
word plus the chat template's. Each tensor is seeded by its cache file's name, so a rerun writes
the same tensors.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import zlib
from pathlib import Path

FILES = {"dit": "zimage_dit.safetensors"}
SEED = 1234


def _import_musubi():
    import km_tiny_zimage as tiny  # the test hook's sizes are the tiny model's

    if os.environ.get(tiny.ZIMAGE_ENV) != "1":
        raise SystemExit(f"tiny_zimage: set {tiny.ZIMAGE_ENV}=1 so that musubi-tuner builds the tiny shapes")
    return tiny


def _build_dit():
    """``create_model`` as ``load_zimage_model`` calls it, with real (not meta) random weights."""
    import torch

    from musubi_tuner.zimage import zimage_model

    torch.manual_seed(SEED)
    empty = zimage_model.init_empty_weights
    zimage_model.init_empty_weights = contextlib.nullcontext
    try:
        dit = zimage_model.create_model("torch", False, torch.float32)
    finally:
        zimage_model.init_empty_weights = empty
    with torch.no_grad():
        dit.x_pad_token.normal_(std=0.02)
        dit.cap_pad_token.normal_(std=0.02)
    return dit


def write_model(out_dir: Path) -> Path:
    tiny = _import_musubi()
    import torch
    from safetensors.torch import save_file

    from musubi_tuner.zimage.zimage_model import load_zimage_model

    dit = _build_dit()
    assert dit.dim == tiny.ZIMAGE_CONFIG["DEFAULT_TRANSFORMER_DIM"], "the tiny_hook shrink did not apply"
    assert dit.cap_embedder[1].in_features == tiny.ZIMAGE_CONFIG["DEFAULT_TRANSFORMER_CAP_FEAT_DIM"]
    ours = {k: v.detach().clone().contiguous() for k, v in dit.state_dict().items()}
    assert all(torch.isfinite(v).all() for v in ours.values()), "dit: a weight is not finite"
    path = out_dir / FILES["dit"]
    save_file(ours, str(path))

    back = load_zimage_model("cpu", str(path), "torch", False, "cpu", torch.float32)
    theirs = back.state_dict()
    assert set(ours) == set(theirs), f"dit: keys differ: {sorted(set(ours) ^ set(theirs))[:5]}"
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), f"dit.{key} changed on the way"
    return path


def _generator(cache_path: str):
    import torch

    return torch.Generator().manual_seed(zlib.crc32(os.path.basename(cache_path).encode()))


def write_caches(dataset_config: Path) -> None:
    """Write every latent and text-encoder cache of ``dataset_config`` as musubi's Z-Image caching scripts would."""
    tiny = _import_musubi()
    import torch

    from musubi_tuner import cache_latents, cache_text_encoder_outputs
    from musubi_tuner.dataset import config_utils
    from musubi_tuner.dataset.cache_io import save_latent_cache_z_image, save_text_encoder_output_cache_z_image
    from musubi_tuner.dataset.config_utils import BlueprintGenerator, ConfigSanitizer
    from musubi_tuner.dataset.image_video_dataset import ARCHITECTURE_Z_IMAGE
    from musubi_tuner.zimage import zimage_config

    # What the caching scripts' parsers give when run with only --dataset_config (plus one worker).
    args = argparse.Namespace(num_workers=1, skip_existing=False, keep_cache=False, batch_size=None, debug_dataset=False)
    user_config = config_utils.load_user_config(str(dataset_config))
    blueprint = BlueprintGenerator(ConfigSanitizer()).generate(user_config, args, architecture=ARCHITECTURE_Z_IMAGE)
    datasets = config_utils.generate_dataset_group_by_blueprint(blueprint.dataset_group).datasets
    stride, width = tiny.ZIMAGE_VAE_STRIDE, zimage_config.DEFAULT_TRANSFORMER_CAP_FEAT_DIM

    def encode_latents(batch):  # in place of zimage_cache_latents.encode_and_save_batch
        for item in batch:
            height, wide = item.content.shape[0], item.content.shape[1]  # (H, W, C), resized to its bucket
            shape = (tiny.ZIMAGE_LATENT_CHANNELS, height // stride, wide // stride)
            save_latent_cache_z_image(item, torch.randn(shape, generator=_generator(item.latent_cache_path)))

    cache_latents.encode_datasets(datasets, encode_latents, args)

    def encode_text(batch):  # in place of zimage_cache_text_encoder_outputs.encode_and_save_batch
        for item in batch:
            tokens = min(len(item.caption.split()) + tiny.ZIMAGE_TEMPLATE_TOKENS, zimage_config.DEFAULT_MAX_SEQUENCE_LENGTH)
            embed = torch.randn((tokens, width), generator=_generator(item.text_encoder_output_cache_path))
            save_text_encoder_output_cache_z_image(item, embed.to(torch.bfloat16))

    files, paths = cache_text_encoder_outputs.prepare_cache_files_and_paths(datasets)
    cache_text_encoder_outputs.process_text_encoder_batches(
        args.num_workers, args.skip_existing, args.batch_size, datasets, files, paths, encode_text
    )
    cache_text_encoder_outputs.post_process_cache_files(datasets, files, paths, args.keep_cache)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("out_dir", nargs="?", type=Path, help="write the tiny DiT here")
    mode.add_argument("--caches", type=Path, metavar="DATASET_CONFIG", help="write the caches of this dataset config")
    args = parser.parse_args(argv)
    if args.caches is not None:
        write_caches(args.caches)
    else:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_model(args.out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
