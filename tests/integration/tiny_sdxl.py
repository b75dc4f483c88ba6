"""Build, offline, a tiny randomly initialised SDXL checkpoint with sd-scripts' own code.

Run with the Python that runs sd-scripts, with tests/integration/tiny_hook on PYTHONPATH and
KOHYA_MULTIPLIER_TINY_SDXL=1 (the hook shrinks sd-scripts' hard-coded SDXL sizes; the training
processes get the same hook, so they build the same tiny shapes):

    python tests/integration/tiny_sdxl.py SD_SCRIPTS_ROOT OUT_DIR

writes
    OUT_DIR/sdxl.safetensors   a single-file checkpoint in the original (stability) key layout,
                               written by sd-scripts' save function and checked to load back
                               key for key with its loader
    OUT_DIR/tokenizers/        the real CLIP tokenizer under both names sd-scripts asks for
                               (for --tokenizer_cache_dir)

Nothing is downloaded.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from tiny_sd import write_tokenizer

CHECKPOINT_NAME = "sdxl.safetensors"
# Folder names sd-scripts looks for under --tokenizer_cache_dir (model ids with "/" -> "_").
TOKENIZER_FOLDERS = ("openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k")
SEED = 1234


def _import_sd_scripts(root: Path):
    import sitecustomize as tiny  # the test hook; its sizes are the tiny model's

    if os.environ.get(tiny.SDXL_ENV) != "1":
        raise SystemExit(f"tiny_sdxl: set {tiny.SDXL_ENV}=1 so that sd-scripts builds the tiny shapes")
    sys.path.insert(0, str(root))
    from kohya_multiplier.sdscripts.compat import install_torchvision_workaround

    install_torchvision_workaround()
    from library import model_util, sdxl_model_util, sdxl_original_unet

    return tiny, model_util, sdxl_model_util, sdxl_original_unet


def write_checkpoint(root: Path, path: Path) -> None:
    tiny, model_util, sdxl_model_util, sdxl_original_unet = _import_sd_scripts(root)
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(SEED)
    unet = sdxl_original_unet.SdxlUNet2DConditionModel()
    common = dict(vocab_size=49408, max_position_embeddings=77, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    text_encoder1 = CLIPTextModel(CLIPTextConfig(**common, hidden_act="quick_gelu", **tiny.SDXL_TEXT_ENCODER_1))
    text_encoder2 = CLIPTextModelWithProjection(CLIPTextConfig(**common, hidden_act="gelu", **tiny.SDXL_TEXT_ENCODER_2))
    vae = AutoencoderKL(**model_util.create_vae_diffusers_config())
    logit_scale = torch.tensor(math.log(100.0))
    sdxl_model_util.save_stable_diffusion_checkpoint(
        str(path), text_encoder1, text_encoder2, unet, 0, 0, None, vae, logit_scale, metadata=None
    )

    # The loader sd-scripts trains with must get back exactly these weights.
    loaded = sdxl_model_util.load_models_from_sdxl_checkpoint(None, str(path), "cpu")
    for built, back in zip((text_encoder1, text_encoder2, vae, unet), loaded[:4]):
        mine, theirs = built.state_dict(), back.state_dict()
        missing = sorted(set(mine) ^ set(theirs))
        assert not missing, f"{type(built).__name__}: keys differ after loading: {missing[:5]}"
        for key, value in mine.items():
            assert not theirs[key].is_meta, f"{type(built).__name__}.{key} stayed on the meta device"
            assert torch.equal(value, theirs[key]), f"{type(built).__name__}.{key} changed on the way"


def build(root: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in TOKENIZER_FOLDERS:
        write_tokenizer(out_dir / "tokenizers" / folder)
    write_checkpoint(root, out_dir / CHECKPOINT_NAME)
    (out_dir / "READY").write_text("sdxl\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python tiny_sdxl.py SD_SCRIPTS_ROOT OUT_DIR")
    build(Path(sys.argv[1]), Path(sys.argv[2]))
