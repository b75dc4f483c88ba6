"""Build, offline, a tiny randomly initialised HunyuanImage-2.1 model set with sd-scripts' own classes.

Run with the Python that runs sd-scripts, with tests/integration/tiny_hook on PYTHONPATH and
KOHYA_MULTIPLIER_TINY_HUNYUAN=1 (the hook shrinks the sizes sd-scripts hard-codes; the training
processes get the same hook, so they build the same tiny shapes; the sizes are in
tiny_hook/km_tiny_hunyuan.py):

    python tests/integration/tiny_hunyuan.py SD_SCRIPTS_ROOT OUT_DIR

writes
    OUT_DIR/dit.safetensors, vae.safetensors, qwen2_5_vl.safetensors, byt5.safetensors
                  for --pretrained_model_name_or_path, --vae, --text_encoder, --byt5, in the key
                  layouts sd-scripts' loaders convert from; each checked to load back through those
                  loaders (strictly) tensor for tensor
    OUT_DIR/tokenizers/
                  a byte-level BPE tokenizer for Qwen2.5-VL, built here with the `tokenizers`
                  package (the byte alphabet and Qwen's chat special tokens, no merges), and the
                  byT5 tokenizer (bytes; it needs no files), under the names sd-scripts' tokenize
                  strategy looks for (for --tokenizer_cache_dir)
    OUT_DIR/hub/  the same two tokenizers as a Hugging Face hub cache (for HF_HUB_CACHE): sd-scripts'
                  Qwen2.5-VL and byT5 loaders also load the tokenizers, always by their hub ids
                  ("Qwen/Qwen2.5-VL-7B-Instruct", "google/byt5-small"), with no argument to point
                  them elsewhere; offline, transformers finds them in this cache

Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

FILES = {"dit": "dit.safetensors", "vae": "vae.safetensors", "qwen": "qwen2_5_vl.safetensors", "byt5": "byt5.safetensors"}
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # what sd-scripts' prompt template uses
SEED = 1234


def _import_sd_scripts(root: Path, out_dir: Path):
    import km_tiny_hunyuan as tiny  # the test hook's sizes: the tiny model's

    if os.environ.get(tiny.ENV) != "1":
        raise SystemExit(f"tiny_hunyuan: set {tiny.ENV}=1 so that sd-scripts builds the tiny shapes")
    # before transformers reads it: the loaders below get their tokenizers from this cache
    os.environ["HF_HUB_CACHE"] = str(out_dir / "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(root))
    from kohya_multiplier.sdscripts.compat import install_torchvision_workaround

    install_torchvision_workaround()
    from library import hunyuan_image_models, hunyuan_image_text_encoder, hunyuan_image_vae

    return tiny, hunyuan_image_models, hunyuan_image_text_encoder, hunyuan_image_vae


def _write_hub_snapshot(hub: Path, model_id: str, files: Path) -> None:
    """``files`` as the cached main revision of ``model_id`` in huggingface_hub's cache layout."""
    repo = hub / ("models--" + model_id.replace("/", "--"))
    digest = hashlib.sha1()
    for path in sorted(files.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    revision = digest.hexdigest()
    shutil.copytree(files, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


def write_tokenizers(text_encoder_module, out_dir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import ByT5Tokenizer, Qwen2TokenizerFast

    import km_tiny_hunyuan as tiny

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    qwen = Qwen2TokenizerFast(tokenizer_object=bpe)  # adds <|endoftext|> as unk, eos and pad
    qwen.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL[1:]})
    assert len(qwen) == len(alphabet) + len(QWEN_SPECIAL) <= tiny.QWEN_VOCAB, len(qwen)
    byt5 = ByT5Tokenizer()

    folders = {
        text_encoder_module.QWEN_2_5_VL_IMAGE_ID: (qwen, out_dir / "tokenizers"),
        text_encoder_module.BYT5_TOKENIZER_PATH: (byt5, out_dir / "tokenizers"),
    }
    for model_id, (tokenizer, parent) in folders.items():
        folder = parent / model_id.replace("/", "_")  # the name sd-scripts looks for
        tokenizer.save_pretrained(str(folder))
        _write_hub_snapshot(out_dir / "hub", model_id, folder)


def _sd_scripts_config(loader, model_type: str) -> dict:
    """The config JSON sd-scripts writes inside a loader function (shrunk later by the hook)."""
    for const in loader.__code__.co_consts:
        if isinstance(const, str) and f'"model_type": "{model_type}"' in const:
            return json.loads(const)
    raise SystemExit(f"tiny_hunyuan: no {model_type} config in sd-scripts' {loader.__name__}")


def write_models(root: Path, out_dir: Path) -> None:
    tiny, models_module, te_module, vae_module = _import_sd_scripts(root, out_dir)
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, T5ForConditionalGeneration

    write_tokenizers(te_module, out_dir)
    torch.manual_seed(SEED)

    dit = models_module.HYImageDiffusionTransformer(attn_mode="torch")
    vae = vae_module.HunyuanVAE2D()
    qwen_config = te_module.Qwen2_5_VLConfig(**_sd_scripts_config(te_module.load_qwen2_5_vl, "qwen2_5_vl"))
    qwen = Qwen2_5_VLForConditionalGeneration(qwen_config)
    byt5 = T5ForConditionalGeneration(te_module.T5Config(**_sd_scripts_config(te_module.load_byt5, "t5"))).get_encoder()
    # sd-scripts adds its color and font tokens to the byT5 tokenizer and resizes the embedding
    te_module.add_special_token(AutoTokenizer.from_pretrained(te_module.BYT5_TOKENIZER_PATH), byt5)
    assert dit.hidden_size == tiny.DIT_HIDDEN and len(dit.double_blocks) == tiny.DIT_DOUBLE_BLOCKS

    def original_qwen_key(key: str) -> str:  # what load_qwen2_5_vl converts from
        if key.startswith("model.language_model."):
            return "model." + key[len("model.language_model.") :]
        if key.startswith("model.visual."):
            return "visual." + key[len("model.visual.") :]
        return key

    def original_byt5_key(key: str) -> str:  # what load_byt5 converts from
        return "shared.weight" if key == "embed_tokens.weight" else "encoder." + key

    models = {"dit": (dit, str), "vae": (vae, str), "qwen": (qwen, original_qwen_key), "byt5": (byt5, original_byt5_key)}
    for name, (model, rename) in models.items():
        state = {rename(key): value.detach().clone().contiguous() for key, value in model.state_dict().items()}
        save_file(state, str(out_dir / FILES[name]))

    fp32 = torch.float32
    path = {name: str(out_dir / file) for name, file in FILES.items()}
    loaded = {
        "dit": models_module.load_hunyuan_image_model("cpu", path["dit"], "torch", False, "cpu", fp32),
        "vae": vae_module.load_vae(path["vae"], "cpu"),
        "qwen": te_module.load_qwen2_5_vl(path["qwen"], None, "cpu")[1],
        "byt5": te_module.load_byt5(path["byt5"], None, "cpu")[1],
    }
    for name, back in loaded.items():
        left = [key for key, tensor in [*back.named_parameters(), *back.named_buffers()] if tensor.is_meta]
        assert not left, f"{name}: stayed on the meta device after sd-scripts loaded it: {left[:5]}"
        mine, theirs = models[name][0].state_dict(), back.state_dict()
        assert set(mine) == set(theirs), f"{name}: keys differ: {sorted(set(mine) ^ set(theirs))[:5]}"
        for key, value in mine.items():
            assert torch.equal(value, theirs[key]), f"{name}.{key} changed on the way"


def build(root: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_models(root, out_dir)
    (out_dir / "READY").write_text("hunyuan\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python tiny_hunyuan.py SD_SCRIPTS_ROOT OUT_DIR")
    build(Path(sys.argv[1]), Path(sys.argv[2]).resolve())
