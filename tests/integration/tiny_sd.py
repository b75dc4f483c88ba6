"""Build, offline, a tiny randomly initialised SD1.x model and a real CLIP tokenizer.

Run with the Python that runs sd-scripts (it needs torch, diffusers and transformers):

    python tests/integration/tiny_sd.py OUT_DIR

writes
    OUT_DIR/model/                                   a diffusers StableDiffusionPipeline folder
    OUT_DIR/tokenizers/openai_clip-vit-large-patch14/ for sd-scripts' --tokenizer_cache_dir OUT_DIR/tokenizers

Nothing is downloaded. The tokenizer is the real CLIP BPE tokenizer (same ids as
openai/clip-vit-large-patch14), rebuilt from the merges file that the open_clip_torch wheel ships
(`pip install --no-deps open_clip_torch`, or point KOHYA_MULTIPLIER_CLIP_BPE at the .txt.gz or at a
downloaded open_clip_torch wheel).

sd-scripts converts every diffusers UNet into its own ``library.original_unet`` whose block widths
are module constants, so the training process must set the same widths before it builds the model:
tests/integration/tiny_hook/sitecustomize.py does that when TINY_UNET_ENV is set to
``",".join(map(str, BLOCK_OUT_CHANNELS))``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path

# Widths of the tiny UNet; the training process must patch sd-scripts' constants to the same values.
BLOCK_OUT_CHANNELS = (32, 64, 64, 64)
TEXT_HIDDEN = 32  # text encoder width == UNet cross-attention width
TINY_UNET_ENV = "KOHYA_MULTIPLIER_TINY_UNET"
TOKENIZER_FOLDER = "openai_clip-vit-large-patch14"  # what sd-scripts looks for under --tokenizer_cache_dir
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
CLIP_MERGES = 49152 - 256 - 2  # merges CLIP uses, after the header line
SEED = 1234


def tiny_unet_env_value() -> str:
    return ",".join(str(c) for c in BLOCK_OUT_CHANNELS)


def _read_bpe_gz() -> bytes:
    override = os.environ.get("KOHYA_MULTIPLIER_CLIP_BPE")
    if override:
        if override.endswith(".whl"):
            with zipfile.ZipFile(override) as wheel:
                return wheel.read(BPE_MEMBER)
        return Path(override).read_bytes()
    # find_spec of the top-level package does not execute it (open_clip's own imports may be missing).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "tiny_sd: the CLIP BPE merges are needed: `pip install --no-deps open_clip_torch` "
            "or set KOHYA_MULTIPLIER_CLIP_BPE to its .txt.gz or wheel"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    return (folder / Path(BPE_MEMBER).name).read_bytes()


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable unicode mapping."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def write_tokenizer(folder: Path) -> None:
    lines = gzip.decompress(_read_bpe_gz()).decode("utf-8").split("\n")
    merges = lines[1 : CLIP_MERGES + 1]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    config = dict(special, model_max_length=77, tokenizer_class="CLIPTokenizer", do_lower_case=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def write_model(folder: Path, tokenizer_folder: Path) -> None:
    # transformers imports torchvision when it is installed; apply the product's work-around for a
    # torchvision wheel that does not match torch (see kohya_multiplier.sdscripts.compat).
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from kohya_multiplier.sdscripts.compat import install_torchvision_workaround

    install_torchvision_workaround()
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=BLOCK_OUT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=2,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,  # sd-scripts' original UNet takes the SD1.x head count from here
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 16, 16),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=128,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=TEXT_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=TEXT_HIDDEN,
        )
    )
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, clip_sample=False)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_folder))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))


def build(out_dir: Path) -> None:
    tokenizer_folder = out_dir / "tokenizers" / TOKENIZER_FOLDER
    write_tokenizer(tokenizer_folder)
    write_model(out_dir / "model", tokenizer_folder)
    (out_dir / "READY").write_text(tiny_unet_env_value() + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tiny_sd.py OUT_DIR")
    build(Path(sys.argv[1]))
