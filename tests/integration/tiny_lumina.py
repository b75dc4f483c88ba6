"""Build, offline, a tiny randomly initialised Lumina Image 2.0 model set with sd-scripts' own classes.

Run with the Python that runs sd-scripts, with tests/integration/tiny_hook on PYTHONPATH and
KOHYA_MULTIPLIER_TINY_LUMINA=1 (the hook shrinks the configs sd-scripts hard-codes, with the sizes
of tiny_hook/km_tiny_lumina.py; the training processes get the same hook, so they build the same
tiny shapes):

    python tests/integration/tiny_lumina.py SD_SCRIPTS_ROOT OUT_DIR

writes
    OUT_DIR/lumina.safetensors, gemma2.safetensors, ae.safetensors
                         for --pretrained_model_name_or_path, --gemma2, --ae; each checked to load
                         back through sd-scripts' loaders with every tensor filled (they load with
                         strict=False, so a missing key would silently stay on the meta device)
    OUT_DIR/tokenizers/  a tiny Gemma tokenizer in the Hugging Face hub cache layout, as
                         google/gemma-2-2b: sd-scripts loads it with
                         ``AutoTokenizer.from_pretrained("google/gemma-2-2b", cache_dir=...)``, so
                         this folder is what --tokenizer_cache_dir (lumina_train_network.py) or the
                         HF_HUB_CACHE environment variable (lumina_train.py passes no cache_dir)
                         names. Offline, the hub client reads snapshots/<refs/main>/ of it.

The tokenizer is a GemmaTokenizerFast over a byte-fallback BPE model as Gemma's (pad 0, eos 1,
bos 2, unk 3; <bos> prepended): single characters and the 256 byte pieces, no merges, so every
caption tokenizes, one piece per character. Nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FILES = {"model": "lumina.safetensors", "gemma2": "gemma2.safetensors", "ae": "ae.safetensors"}
GEMMA_ID = "google/gemma-2-2b"  # sd-scripts' strategy_lumina.GEMMA_ID
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0..3, as Gemma's
GEMMA_CHARACTERS = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"-()<>"
SNAPSHOT = "0" * 40  # the hub cache's commit folder; any name refs/main points to
SEED = 1234


def _import_sd_scripts(root: Path):
    import km_tiny_lumina as tiny  # the test hook's sizes are the tiny model's

    if os.environ.get(tiny.LUMINA_ENV) != "1":
        raise SystemExit(f"tiny_lumina: set {tiny.LUMINA_ENV}=1 so that sd-scripts builds the tiny shapes")
    sys.path.insert(0, str(root))
    from kohya_multiplier.sdscripts.compat import install_torchvision_workaround

    install_torchvision_workaround()
    from library import flux_models, lumina_models, lumina_util

    return tiny, flux_models, lumina_models, lumina_util


def write_tokenizer(folder: Path, vocab_size: int) -> None:
    """The tiny Gemma tokenizer as ``google/gemma-2-2b`` in a hub cache at ``folder``."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import GemmaTokenizerFast

    vocab = {piece: index for index, piece in enumerate(GEMMA_SPECIALS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for character in GEMMA_CHARACTERS:
        vocab.setdefault(character, len(vocab))
    assert len(vocab) <= vocab_size, f"{len(vocab)} pieces do not fit Gemma2's {vocab_size} embeddings"
    model = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    model.normalizer = normalizers.Replace(" ", "▁")
    model.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer = GemmaTokenizerFast(
        tokenizer_object=model, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        add_bos_token=True, add_eos_token=False,
    )
    repo = folder / f"models--{GEMMA_ID.replace('/', '--')}"
    tokenizer.save_pretrained(str(repo / "snapshots" / SNAPSHOT))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)


def check_tokenizer(folder: Path) -> None:
    """sd-scripts' own tokenize strategy loads it from the cache, offline, and pads as Gemma's."""
    from library import strategy_lumina

    strategy = strategy_lumina.LuminaTokenizeStrategy(None, 24, str(folder))
    ids, mask = strategy.tokenize("photo of alice, ü")
    assert type(strategy.tokenizer).__name__ == "GemmaTokenizerFast", type(strategy.tokenizer)
    assert ids.shape == (1, 24) and int(ids[0, 0]) == 2 and int(mask.sum()) == 1 + len("photo of alice, ") + 2, (ids, mask)
    assert strategy.tokenizer.decode(ids[0], skip_special_tokens=True) == "photo of alice, ü"


def write_models(root: Path, out_dir: Path) -> None:
    tiny, flux_models, lumina_models, lumina_util = _import_sd_scripts(root)
    import torch
    from safetensors.torch import save_file
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(SEED)
    models = {
        "model": lumina_models.NextDiT_2B_GQA_patch2_Adaln_Refiner(),
        "gemma2": Gemma2Model(Gemma2Config(pad_token_id=0, eos_token_id=1, bos_token_id=2, **tiny.LUMINA_GEMMA2)),
        "ae": flux_models.AutoEncoder(flux_models.configs["schnell"].ae_params),
    }
    assert models["model"].dim == tiny.LUMINA_PARAMS["dim"], "the hook did not shrink NextDiT"
    for name, model in models.items():
        state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
        save_file(state, str(out_dir / FILES[name]))

    fp32 = torch.float32
    loaded = {
        "model": lumina_util.load_lumina_model(str(out_dir / FILES["model"]), fp32, torch.device("cpu")),
        "gemma2": lumina_util.load_gemma2(str(out_dir / FILES["gemma2"]), fp32, "cpu"),
        "ae": lumina_util.load_ae(str(out_dir / FILES["ae"]), fp32, "cpu"),
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
    write_models(root, out_dir)
    import km_tiny_lumina as tiny

    write_tokenizer(out_dir / "tokenizers", tiny.LUMINA_GEMMA2["vocab_size"])
    check_tokenizer(out_dir / "tokenizers")
    (out_dir / "READY").write_text("lumina\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python tiny_lumina.py SD_SCRIPTS_ROOT OUT_DIR")
    build(Path(sys.argv[1]), Path(sys.argv[2]))
