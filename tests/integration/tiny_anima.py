"""Build, offline, a tiny randomly initialised Anima model set with sd-scripts' own classes.

Run with the Python that runs sd-scripts, with tests/integration/tiny_hook on PYTHONPATH and
KOHYA_MULTIPLIER_TINY_ANIMA=1 (the hook shrinks the configs sd-scripts hard-codes; the training
processes get the same hook, so they build the same tiny shapes):

    python tests/integration/tiny_anima.py SD_SCRIPTS_ROOT OUT_DIR

writes
    OUT_DIR/anima.safetensors  the DiT with its LLM adapter, saved by sd-scripts' own
                               save_anima_model ("net." keys, as the released file), for
                               --pretrained_model_name_or_path
    OUT_DIR/vae.safetensors    the Qwen-Image VAE, for --vae
    OUT_DIR/qwen3/             a Hugging Face folder for --qwen3: a tiny Qwen3 (config.json from
                               sd-scripts' configs/qwen3_06b/ with km_tiny_anima.QWEN3 sizes) and
                               the real Qwen3 tokenizer

Every file is checked to load back through sd-scripts' loaders unchanged.

The tokenizer: sd-scripts ships configs/qwen3_06b/ with vocab.json, merges.txt and
tokenizer_config.json but without tokenizer.json, and reads that folder only for a single-file
--qwen3. A folder --qwen3 is read with AutoTokenizer instead, so the folder written here gets the
three files sd-scripts ships, from which transformers builds the fast byte-level BPE tokenizer of
Qwen3's vocabulary and merges, saved back as tokenizer.json so that every training process loads
it without converting again. The T5 tokenizer (LLM adapter target ids) is the one sd-scripts ships in
configs/t5_old/, its default. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

FILES = {"model": "anima.safetensors", "vae": "vae.safetensors"}
QWEN3_FOLDER = "qwen3"
QWEN3_SHIPPED = ("vocab.json", "merges.txt", "tokenizer_config.json")  # in sd-scripts' configs/qwen3_06b/
SAMPLE_CAPTIONS = ["photo of alice", "photo of a person"]
SEED = 1234


def _import_sd_scripts(root: Path):
    import km_tiny_anima as tiny  # the test hook's sizes are the tiny model's

    if os.environ.get(tiny.ANIMA_ENV) != "1":
        raise SystemExit(f"tiny_anima: set {tiny.ANIMA_ENV}=1 so that sd-scripts builds the tiny shapes")
    sys.path.insert(0, str(root))
    from kohya_multiplier.sdscripts.compat import install_torchvision_workaround

    install_torchvision_workaround()
    from library import anima_models, anima_utils, qwen_image_autoencoder_kl

    return tiny, anima_models, anima_utils, qwen_image_autoencoder_kl


def write_qwen3(root: Path, folder: Path, tiny) -> None:
    import torch
    import transformers

    shipped = root / "configs" / "qwen3_06b"
    folder.mkdir(parents=True, exist_ok=True)
    for name in QWEN3_SHIPPED:
        if not (shipped / name).is_file():
            raise SystemExit(f"tiny_anima: {shipped / name} is missing (sd-scripts ships the Qwen3 tokenizer files there)")
        shutil.copyfile(shipped / name, folder / name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    expected = tokenizer(SAMPLE_CAPTIONS)["input_ids"]
    tokenizer.save_pretrained(str(folder))
    assert (folder / "tokenizer.json").is_file(), "transformers wrote no tokenizer.json"

    config = json.loads((shipped / "config.json").read_text())
    config.update(tiny.QWEN3)
    config["torch_dtype"] = "float32"
    assert len(tokenizer) <= config["vocab_size"], (len(tokenizer), config["vocab_size"])
    torch.manual_seed(SEED)
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**config))
    model.save_pretrained(str(folder), safe_serialization=True)
    # sd-scripts' own readers: every training process loads the tokenizer and the encoder this way.
    from library import anima_utils

    again = anima_utils.load_qwen3_tokenizer(str(folder))
    assert again(SAMPLE_CAPTIONS)["input_ids"] == expected, "the saved tokenizer.json tokenizes differently"
    encoder, _ = anima_utils.load_qwen3_text_encoder(str(folder), dtype=torch.float32, device="cpu")
    mine = model.model.state_dict()
    theirs = encoder.state_dict()
    assert set(mine) == set(theirs), f"qwen3: keys differ: {sorted(set(mine) ^ set(theirs))[:5]}"
    for key, value in mine.items():
        assert torch.equal(value, theirs[key]), f"qwen3.{key} changed on the way"


def write_models(root: Path, out_dir: Path) -> None:
    tiny, anima_models, anima_utils, qwen_image_autoencoder_kl = _import_sd_scripts(root)
    import torch
    from safetensors.torch import save_file

    write_qwen3(root, out_dir / QWEN3_FOLDER, tiny)

    torch.manual_seed(SEED)
    # The arguments load_anima_model gives (the hook makes them tiny); read back from the loader
    # below, so a mismatch fails here, not in training.
    dit = anima_models.Anima(
        max_img_h=512, max_img_w=512, max_frames=128, in_channels=16, out_channels=16, patch_spatial=2, patch_temporal=1,
        concat_padding_mask=True, pos_emb_cls="rope3d", pos_emb_learnable=True, use_adaln_lora=True,
        rope_h_extrapolation_ratio=4.0, rope_w_extrapolation_ratio=4.0, rope_enable_fps_modulation=False, use_llm_adapter=True,
    )
    # Anima's own init leaves some output projections zero; random weights make training move them.
    with torch.no_grad():
        for parameter in dit.parameters():
            if not parameter.abs().sum():
                parameter.normal_(std=0.02)
    anima_utils.save_anima_model(str(out_dir / FILES["model"]), dit.state_dict(), {})

    vae = qwen_image_autoencoder_kl.AutoencoderKLQwenImage()
    save_file({k: v.detach().clone().contiguous() for k, v in vae.state_dict().items()}, str(out_dir / FILES["vae"]))

    loaded = {
        "model": (dit, anima_utils.load_anima_model("cpu", str(out_dir / FILES["model"]), "torch", False, "cpu", torch.float32)),
        "vae": (vae, qwen_image_autoencoder_kl.load_vae(str(out_dir / FILES["vae"]), device="cpu")),
    }
    for name, (mine, back) in loaded.items():
        left = [key for key, tensor in [*back.named_parameters(), *back.named_buffers()] if tensor.is_meta]
        assert not left, f"{name}: stayed on the meta device after sd-scripts loaded it: {left[:5]}"
        ours, theirs = mine.state_dict(), back.state_dict()
        assert set(ours) == set(theirs), f"{name}: keys differ: {sorted(set(ours) ^ set(theirs))[:5]}"
        for key, value in ours.items():
            assert torch.equal(value, theirs[key]), f"{name}.{key} changed on the way"
    assert anima_utils.load_t5_tokenizer(None)(SAMPLE_CAPTIONS)["input_ids"], "sd-scripts' T5 tokenizer gave nothing"


def build(root: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_models(root, out_dir)
    (out_dir / "READY").write_text("anima\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python tiny_anima.py SD_SCRIPTS_ROOT OUT_DIR")
    build(Path(sys.argv[1]), Path(sys.argv[2]))
