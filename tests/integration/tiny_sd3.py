"""Build, offline, a tiny randomly initialised SD3 (medium layout) model set with sd-scripts' own
classes.

Run with the Python that runs sd-scripts, with tests/integration/tiny_hook on PYTHONPATH and
KOHYA_MULTIPLIER_TINY_SD3=1 (the hook shrinks the configs sd-scripts hard-codes; the training
processes get the same hook, so they build the same tiny shapes; the sizes are in
tiny_hook/km_tiny_sd3.py):

    python tests/integration/tiny_sd3.py SD_SCRIPTS_ROOT OUT_DIR

writes
    OUT_DIR/sd3.safetensors, vae.safetensors, clip_l.safetensors, clip_g.safetensors,
    t5xxl.safetensors    for --pretrained_model_name_or_path (the MMDiT, keys under
                         "model.diffusion_model." as sd-scripts reads them), --vae, --clip_l,
                         --clip_g, --t5xxl; each checked to load back through sd-scripts' loaders
                         with every tensor filled (most load with strict=False, so a missing key
                         would silently stay on the meta device). CLIP-L keeps its text projection:
                         without one sd-scripts adds an identity of the literal width 768.
    OUT_DIR/tokenizers/  the real CLIP tokenizer under the CLIP-L and CLIP-G names, and the T5
                         tokenizer sd-scripts ships in its own configs/t5_old/ (for
                         --tokenizer_cache_dir)
    OUT_DIR/hub/         the same three tokenizers as a Hugging Face hub cache (for HF_HUB_CACHE
                         with HF_HUB_OFFLINE=1): sd3_train.py builds its tokenizers without
                         --tokenizer_cache_dir, so this is the only place it can find them offline

Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tiny_sd import write_tokenizer

FILES = {
    "model": "sd3.safetensors",
    "vae": "vae.safetensors",
    "clip_l": "clip_l.safetensors",
    "clip_g": "clip_g.safetensors",
    "t5xxl": "t5xxl.safetensors",
}
MMDIT_PREFIX = "model.diffusion_model."  # sd3_utils.load_mmdit takes the keys under it
# The model ids sd-scripts' Sd3TokenizeStrategy asks for.
CLIP_L_TOKENIZER_ID = "openai/clip-vit-large-patch14"
CLIP_G_TOKENIZER_ID = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
T5_TOKENIZER_ID = "google/t5-v1_1-xxl"
T5_TOKENIZER_FILES = ("spiece.model", "tokenizer.json")
T5_VOCAB = 32128  # 32,000 pieces + 100 extra ids + padding, as T5 v1.1 (what configs/t5_old holds)
HUB_REVISION = "0" * 40  # the snapshot the hub cache's refs/main names
SEED = 1234


def _import_sd_scripts(root: Path):
    import km_tiny_sd3 as tiny  # the test hook; its sizes are the tiny model's

    if os.environ.get(tiny.SD3_ENV) != "1":
        raise SystemExit(f"tiny_sd3: set {tiny.SD3_ENV}=1 so that sd-scripts builds the tiny shapes")
    sys.path.insert(0, str(root))
    from kohya_multiplier.sdscripts.compat import install_torchvision_workaround

    install_torchvision_workaround()
    from library import sd3_models, sd3_utils

    return tiny, sd3_models, sd3_utils


def write_tokenizers(root: Path, out_dir: Path) -> None:
    """--tokenizer_cache_dir folders (model id with "/" -> "_") and the same files as a hub cache."""
    folders = {CLIP_L_TOKENIZER_ID: out_dir / "tokenizers" / CLIP_L_TOKENIZER_ID.replace("/", "_")}
    write_tokenizer(folders[CLIP_L_TOKENIZER_ID])
    folders[CLIP_G_TOKENIZER_ID] = out_dir / "tokenizers" / CLIP_G_TOKENIZER_ID.replace("/", "_")
    shutil.copytree(folders[CLIP_L_TOKENIZER_ID], folders[CLIP_G_TOKENIZER_ID])
    folders[T5_TOKENIZER_ID] = out_dir / "tokenizers" / T5_TOKENIZER_ID.replace("/", "_")
    folders[T5_TOKENIZER_ID].mkdir(parents=True)
    for name in T5_TOKENIZER_FILES:
        source = root / "configs" / "t5_old" / name
        if not source.is_file():
            raise SystemExit(f"tiny_sd3: {source} is missing (sd-scripts ships the T5 tokenizer there)")
        shutil.copyfile(source, folders[T5_TOKENIZER_ID] / name)
    for model_id, folder in folders.items():
        repo = out_dir / "hub" / ("models--" + model_id.replace("/", "--"))
        shutil.copytree(folder, repo / "snapshots" / HUB_REVISION)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(HUB_REVISION)


def write_models(root: Path, out_dir: Path) -> None:
    tiny, sd3_models, sd3_utils = _import_sd_scripts(root)
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(SEED)
    params = sd3_models.SD3Params(
        patch_size=tiny.SD3_PATCH_SIZE,
        depth=tiny.SD3_DEPTH,
        num_patches=tiny.SD3_POS_EMBED_MAX_SIZE**2,
        pos_embed_max_size=tiny.SD3_POS_EMBED_MAX_SIZE,
        adm_in_channels=tiny.SD3_ADM_IN_CHANNELS,
        qk_norm=None,
        x_block_self_attn_layers=[],
        context_embedder_in_features=tiny.SD3_CONTEXT_WIDTH,
        context_embedder_out_features=64 * tiny.SD3_DEPTH,
        model_type="medium",
    )
    mmdit = sd3_models.create_sd3_mmdit(params)
    # the position embedding is an uninitialised buffer: fill it as SD3's checkpoints are (sin-cos)
    grid = sd3_models.get_2d_sincos_pos_embed(mmdit.hidden_size, tiny.SD3_POS_EMBED_MAX_SIZE)
    mmdit.pos_embed.copy_(torch.from_numpy(grid).float().unsqueeze(0))
    clip = dict(vocab_size=49408, max_position_embeddings=77, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    models = {
        "model": mmdit,
        "vae": sd3_models.SDVAE(),  # the hook gives it the tiny widths
        "clip_l": CLIPTextModelWithProjection(CLIPTextConfig(**clip, hidden_act="quick_gelu", **tiny.SD3_CLIP_L)),
        "clip_g": CLIPTextModelWithProjection(CLIPTextConfig(**clip, hidden_act="gelu", **tiny.SD3_CLIP_G)),
        "t5xxl": T5EncoderModel(
            T5Config(vocab_size=T5_VOCAB, feed_forward_proj="gated-gelu", is_encoder_decoder=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, **tiny.SD3_T5)
        ),
    }
    for name, model in models.items():
        prefix = MMDIT_PREFIX if name == "model" else ""
        # clone: T5's shared embedding appears under two keys, which safetensors refuses to alias
        state = {prefix + key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
        save_file(state, str(out_dir / FILES[name]))

    fp32 = torch.float32
    from safetensors.torch import load_file

    loaded = {
        "model": sd3_utils.load_mmdit(load_file(str(out_dir / FILES["model"])), fp32, "cpu"),
        "vae": sd3_utils.load_vae(str(out_dir / FILES["vae"]), fp32, "cpu"),
        "clip_l": sd3_utils.load_clip_l(str(out_dir / FILES["clip_l"]), fp32, "cpu"),
        "clip_g": sd3_utils.load_clip_g(str(out_dir / FILES["clip_g"]), fp32, "cpu"),
        "t5xxl": sd3_utils.load_t5xxl(str(out_dir / FILES["t5xxl"]), fp32, "cpu"),
    }
    for name, back in loaded.items():
        left = [key for key, tensor in [*back.named_parameters(), *back.named_buffers()] if tensor.is_meta]
        assert not left, f"{name}: stayed on the meta device after sd-scripts loaded it: {left[:5]}"
        mine, theirs = models[name].state_dict(), back.state_dict()
        assert set(mine) == set(theirs), f"{name}: keys differ: {sorted(set(mine) ^ set(theirs))[:5]}"
        for key, value in mine.items():
            assert torch.equal(value, theirs[key]), f"{name}.{key} changed on the way"


def build(root: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tokenizers(root, out_dir)
    write_models(root, out_dir)
    (out_dir / "READY").write_text("sd3\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python tiny_sd3.py SD_SCRIPTS_ROOT OUT_DIR")
    build(Path(sys.argv[1]), Path(sys.argv[2]))
