"""Build, offline, a tiny randomly initialised Wan 2.1 DiT, its training caches and tiny videos, with
musubi-tuner's own code.

Run with the Python that runs musubi-tuner, with tests/integration/tiny_hook on PYTHONPATH and
KOHYA_MULTIPLIER_TINY_WAN=1 (the hook shrinks the sizes musubi hard-codes; the training processes
get the same hook, so they build the same tiny shapes):

    python tests/integration/tiny_wan.py OUT_DIR
        writes OUT_DIR/wan_dit.safetensors, for --dit (with --task t2v-1.3B), checked to load back
        unchanged through musubi's load_wan_model
    python tests/integration/tiny_wan.py --videos DIR [--count N] [--size WxH] [--frames F] [--caption TEXT] [--seed S]
        writes N tiny MPEG-4 videos DIR/vid000.mp4... (random frames, written with PyAV, which
        musubi reads them with), each with a DIR/vidNNN.txt caption when --caption is given
    python tests/integration/tiny_wan.py --caches DATASET_CONFIG
        writes the latent and text-encoder caches of every dataset of a musubi dataset config

The caches: musubi's real caching scripts (wan_cache_latents.py, wan_cache_text_encoder_outputs.py)
need the Wan VAE and umT5-XXL, and T5EncoderModel loads its tokenizer from the hub
("google/umt5-xxl"), so they cannot run offline. ``write_caches`` runs what those scripts run
instead, with random encoders in place of the VAE and T5: musubi's dataset config loader, its
datasets' own ``retrieve_latent_cache_batches`` / ``retrieve_text_encoder_output_cache_batches``
(which read the images and videos, resize them to their buckets, cut the video clips by
target_frames and frame_extraction, and name every cache file), its caching drivers
(``cache_latents.encode_datasets``, ``cache_text_encoder_outputs.process_text_encoder_batches``
and ``post_process_cache_files``) and its writers ``save_latent_cache_wan`` /
``save_text_encoder_output_cache_wan``. Only the tensors are made up, in the shapes the Wan VAE
and T5 give (bfloat16, as those scripts save them): latents [16, (F - 1) / 4 + 1, H / 8, W / 8]
for F frames of H x W pixels (F = 1 for an image), T5 outputs [tokens, text_dim] with one token
per caption word plus the end token, at most text_len. Each tensor is seeded by its cache file's
name, so a rerun writes the same tensors (safetensors may order the header's metadata differently).
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from pathlib import Path

FILES = {"dit": "wan_dit.safetensors"}
TASK = "t2v-1.3B"  # --task for training; the hook shrinks every Wan config alike
SEED = 1234


def _import_musubi():
    import km_tiny_wan as tiny  # the test hook's sizes are the tiny model's

    if os.environ.get(tiny.WAN_ENV) != "1":
        raise SystemExit(f"tiny_wan: set {tiny.WAN_ENV}=1 so that musubi-tuner builds the tiny shapes")
    return tiny


def write_model(out_dir: Path) -> Path:
    tiny = _import_musubi()
    import torch
    from safetensors.torch import save_file

    from musubi_tuner.wan.configs import WAN_CONFIGS
    from musubi_tuner.wan.modules.model import WanModel, load_wan_model

    config = WAN_CONFIGS[TASK]
    torch.manual_seed(SEED)
    # The arguments load_wan_model gives (the hook makes them tiny and adds text_dim).
    dit = WanModel(
        model_type="t2v", model_version="2.1", dim=config.dim, eps=config.eps, ffn_dim=config.ffn_dim, freq_dim=config.freq_dim,
        in_dim=config.in_dim, num_heads=config.num_heads, num_layers=config.num_layers, out_dim=config.out_dim,
        text_len=config.text_len,
    )
    assert dit.text_dim == tiny.WAN_TEXT_DIM and dit.dim == tiny.WAN_CONFIG["dim"], "the tiny_hook shrink did not apply"
    # Wan's own init zeroes the output head and the biases; with a zero head no gradient reaches the
    # blocks, so the LoRA would never move. Random weights instead.
    with torch.no_grad():
        for parameter in dit.parameters():
            if not parameter.abs().sum():
                parameter.normal_(std=0.02)
    path = out_dir / FILES["dit"]
    save_file({k: v.detach().clone().contiguous() for k, v in dit.state_dict().items()}, str(path))

    back = load_wan_model(config, "cpu", str(path), "torch", False, "cpu", torch.float32)
    ours, theirs = dit.state_dict(), back.state_dict()
    assert set(ours) == set(theirs), f"dit: keys differ: {sorted(set(ours) ^ set(theirs))[:5]}"
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), f"dit.{key} changed on the way"
    return path


def write_videos(folder: Path, count: int = 3, size: tuple[int, int] = (32, 32), frames: int = 9, *, seed: int = 0,
                 caption: str | None = None, stem: str = "vid") -> list[Path]:
    """Write ``count`` videos of ``frames`` random frames of ``size`` (w, h, each even), MPEG-4 in .mp4."""
    import av
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{stem}{i:03d}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=16)  # in FFmpeg itself: no external encoder needed
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            for _ in range(frames):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
            container.mux(stream.encode())  # flush
        with av.open(str(path)) as container:
            decoded = sum(1 for _ in container.decode(video=0))
        assert decoded == frames, f"{path}: wrote {frames} frames, read back {decoded}"
        if caption is not None:
            path.with_suffix(".txt").write_text(caption, encoding="utf-8")
        paths.append(path)
    return paths


def _generator(cache_path: str):
    import torch

    return torch.Generator().manual_seed(zlib.crc32(os.path.basename(cache_path).encode()))


def write_caches(dataset_config: Path, architecture: str = "wan") -> None:
    """Write every latent and text-encoder cache of ``dataset_config`` as musubi's Wan caching scripts would."""
    tiny = _import_musubi()
    import torch

    from musubi_tuner import cache_latents, cache_text_encoder_outputs
    from musubi_tuner.dataset import config_utils
    from musubi_tuner.dataset.cache_io import save_latent_cache_wan, save_text_encoder_output_cache_wan
    from musubi_tuner.dataset.config_utils import BlueprintGenerator, ConfigSanitizer
    from musubi_tuner.wan.configs import WAN_CONFIGS

    if architecture != "wan":
        raise ValueError(f"tiny_wan writes Wan caches only, not {architecture!r}")
    text_len = WAN_CONFIGS[TASK].text_len
    # What the caching scripts' parsers give when run with only --dataset_config (plus one worker).
    args = argparse.Namespace(num_workers=1, skip_existing=False, keep_cache=False, batch_size=None, debug_dataset=False)
    user_config = config_utils.load_user_config(str(dataset_config))
    blueprint = BlueprintGenerator(ConfigSanitizer()).generate(user_config, args, architecture=architecture)
    datasets = config_utils.generate_dataset_group_by_blueprint(blueprint.dataset_group).datasets

    t_stride, s_stride = tiny.WAN_VAE_STRIDE[0], tiny.WAN_VAE_STRIDE[1]

    def encode_latents(batch):  # in place of wan_cache_latents.encode_and_save_batch (t2v: no CLIP, no image latent)
        for item in batch:
            frames, (height, width) = (item.content.shape[0] if item.content.ndim == 4 else 1), item.content.shape[-3:-1]
            shape = (tiny.WAN_LATENT_CHANNELS, (frames - 1) // t_stride + 1, height // s_stride, width // s_stride)
            latent = torch.randn(shape, generator=_generator(item.latent_cache_path)).to(torch.bfloat16)
            save_latent_cache_wan(item, latent, None, None, None)

    cache_latents.encode_datasets(datasets, encode_latents, args)

    def encode_text(batch):  # in place of wan_cache_text_encoder_outputs.encode_and_save_batch
        for item in batch:
            tokens = min(len(item.caption.split()) + 1, text_len)
            embed = torch.randn((tokens, tiny.WAN_TEXT_DIM), generator=_generator(item.text_encoder_output_cache_path))
            save_text_encoder_output_cache_wan(item, embed.to(torch.bfloat16))

    files, paths = cache_text_encoder_outputs.prepare_cache_files_and_paths(datasets)
    cache_text_encoder_outputs.process_text_encoder_batches(
        args.num_workers, args.skip_existing, args.batch_size, datasets, files, paths, encode_text
    )
    cache_text_encoder_outputs.post_process_cache_files(datasets, files, paths, args.keep_cache)


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("out_dir", nargs="?", type=Path, help="write the tiny DiT here")
    mode.add_argument("--videos", type=Path, metavar="DIR", help="write tiny videos here")
    mode.add_argument("--caches", type=Path, metavar="DATASET_CONFIG", help="write the caches of this dataset config")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--size", type=_size, default=(32, 32), metavar="WxH")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--caption")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.videos is not None:
        write_videos(args.videos, args.count, args.size, args.frames, seed=args.seed, caption=args.caption)
    elif args.caches is not None:
        write_caches(args.caches)
    else:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_model(args.out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
