"""Build, offline, a tiny randomly initialised FLUX.1-dev model set with sd-scripts' own classes.

Run with the Python that runs sd-scripts, with tests/integration/tiny_hook on PYTHONPATH and
KOHYA_MULTIPLIER_TINY_FLUX=1 (the hook shrinks the configs sd-scripts hard-codes; the training
processes get the same hook, so they build the same tiny shapes):

    python tests/integration/tiny_flux.py SD_SCRIPTS_ROOT OUT_DIR

writes
    OUT_DIR/flux.safetensors, ae.safetensors, clip_l.safetensors, t5xxl.safetensors
                         for --pretrained_model_name_or_path, --ae, --clip_l, --t5xxl; each checked
                         to load back through sd-scripts' loaders with every tensor filled (they
                         load with strict=False, so a missing key would silently stay on the meta
                         device)
    OUT_DIR/tokenizers/  the real CLIP tokenizer, and the T5 tokenizer sd-scripts ships in its own
                         configs/t5_old/ (for --tokenizer_cache_dir)

Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

from tiny_sd import write_tokenizer

FILES = {"model": "flux.safetensors", "ae": "ae.safetensors", "clip_l": "clip_l.safetensors", "t5xxl": "t5xxl.safetensors"}
CLIP_TOKENIZER_FOLDER = "openai_clip-vit-large-patch14"
T5_TOKENIZER_FOLDER = "google_t5-v1_1-xxl"  # sd-scripts' T5 id with "/" -> "_"
T5_TOKENIZER_FILES = ("spiece.model", "tokenizer.json")
T5_VOCAB = 32128  # 32,000 pieces + 100 extra ids + padding, as T5 v1.1 (what configs/t5_old holds)
SEED = 1234


def _import_sd_scripts(root: Path):
    import sitecustomize as tiny  # the test hook; its sizes are the tiny model's

    if os.environ.get(tiny.FLUX_ENV) != "1":
        raise SystemExit(f"tiny_flux: set {tiny.FLUX_ENV}=1 so that sd-scripts builds the tiny shapes")
    sys.path.insert(0, str(root))
    from kohya_multiplier.sdscripts.compat import install_torchvision_workaround

    install_torchvision_workaround()
    from library import flux_models, flux_utils

    return tiny, flux_models, flux_utils


def write_tokenizers(root: Path, folder: Path) -> None:
    write_tokenizer(folder / CLIP_TOKENIZER_FOLDER)
    t5 = folder / T5_TOKENIZER_FOLDER
    t5.mkdir(parents=True, exist_ok=True)
    for name in T5_TOKENIZER_FILES:
        source = root / "configs" / "t5_old" / name
        if not source.is_file():
            raise SystemExit(f"tiny_flux: {source} is missing (sd-scripts ships the T5 tokenizer there)")
        shutil.copyfile(source, t5 / name)


def write_models(root: Path, out_dir: Path) -> None:
    tiny, flux_models, flux_utils = _import_sd_scripts(root)
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(SEED)
    params = dataclasses.replace(
        flux_models.configs["dev"].params, depth=tiny.FLUX_DOUBLE_BLOCKS, depth_single_blocks=tiny.FLUX_SINGLE_BLOCKS
    )
    models = {
        "model": flux_models.Flux(params),
        "ae": flux_models.AutoEncoder(flux_models.configs["dev"].ae_params),
        "clip_l": CLIPTextModel(
            CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2, **tiny.FLUX_CLIP_L)
        ),
        "t5xxl": T5EncoderModel(
            T5Config(vocab_size=T5_VOCAB, feed_forward_proj="gated-gelu", is_encoder_decoder=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, **tiny.FLUX_T5)
        ),
    }
    for name, model in models.items():
        # clone: T5's shared embedding appears under two keys, which safetensors refuses to alias
        state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
        save_file(state, str(out_dir / FILES[name]))

    fp32 = torch.float32
    loaded = {
        "model": flux_utils.load_flow_model(str(out_dir / FILES["model"]), fp32, "cpu")[1],
        "ae": flux_utils.load_ae(str(out_dir / FILES["ae"]), fp32, "cpu"),
        "clip_l": flux_utils.load_clip_l(str(out_dir / FILES["clip_l"]), fp32, "cpu"),
        "t5xxl": flux_utils.load_t5xxl(str(out_dir / FILES["t5xxl"]), fp32, "cpu"),
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
    write_tokenizers(root, out_dir / "tokenizers")
    write_models(root, out_dir)
    (out_dir / "READY").write_text("flux\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python tiny_flux.py SD_SCRIPTS_ROOT OUT_DIR")
    build(Path(sys.argv[1]), Path(sys.argv[2]))
