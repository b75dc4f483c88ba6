"""Textual inversion through `kohya-multiplier train_textual_inversion` (SD1.x, the session's tiny
model of tiny_sd.py) and `kohya-multiplier sdxl_train_textual_inversion` (tiny_sdxl.py), for real,
on CPU, latents cached, no DataLoader workers.

For each script:
- a wrapped run with multipliers trains exactly the dry run's schedule, every epoch with the
  length sd-scripts prints;
- what its save writes: sd-scripts' textual inversion save gives safetensors only the SAI model
  spec (``modelspec.*``: title, architecture ".../textual-inversion", resolution, date, ...), never
  the ``ss_*`` training metadata of a LoRA; the embedding file records nothing of the dataset, so
  it cannot record the multipliers and the test asserts that it is the model spec and nothing else;
- the embedding of the new token was trained (it left the init word's embedding it starts from);
- a config without multipliers trains bit-identical embeddings wrapped and stock.

The token string is new to the tokenizers (sd-scripts refuses a known one); the init word
"person" is one token of the real CLIP vocabulary both tiny models' tokenizers are built from
(tiny_sd.write_tokenizer). `--use_object_template` puts the token string into every caption, so
the embedding gets a gradient on every step.

Nothing new had to be shrunk: the scripts load the same SD1.x and SDXL models as the LoRA
scripts, which KOHYA_MULTIPLIER_TINY_UNET and KOHYA_MULTIPLIER_TINY_SDXL already shrink.
Revisions without a script skip, saying so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kohya_multiplier.checkouts import locate

from harness import (
    assert_epochs_have_the_printed_length,
    assert_schedule_is_the_dry_run,
    one_checkout_only,
    safetensors_header,
    safetensors_tensor_bytes,
    safetensors_tensors,
    train,
    train_and_plan,
    write_config,
    write_images_tree,
)

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 42
TOKEN = "kmtoken"
INIT_WORD = "person"
NO_WORKERS = ["--max_data_loader_n_workers", "0"]
TI_ARGS = ["--token_string", TOKEN, "--init_word", INIT_WORD, "--use_object_template", "--cache_latents", *NO_WORKERS]
CLIP_VOCAB = Path("openai_clip-vit-large-patch14") / "vocab.json"  # under --tokenizer_cache_dir

# script -> (what its save names each embedding: the token embedding weight it starts from, in
# the tiny model's file), the model's file relative to its folder, and the architecture it saves.
SCRIPTS = {
    "train_textual_inversion": (
        {"emb_params": "text_model.embeddings.token_embedding.weight"},
        Path("model") / "text_encoder" / "model.safetensors",
        "stable-diffusion-v1/textual-inversion",
    ),
    "sdxl_train_textual_inversion": (
        {
            "clip_l": "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
            "clip_g": "conditioner.embedders.1.model.token_embedding.weight",
        },
        Path("sdxl.safetensors"),
        "stable-diffusion-xl-v1-base/textual-inversion",
    ),
}


def _model(sd, request, script: str):
    """(the TinyModel for train(), None for the session's SD1.x model; the model's folder)."""
    if not (Path(sd.root) / f"{script}.py").is_file():
        pytest.skip(f"sd-scripts {sd.revision.name} has no {script}.py")
    if script.startswith("sdxl_") and sd.revision.layout == locate.LAYOUT_V09:
        # stock sd-scripts fails there too: its parser leaves out the SDXL arguments that
        # sdxl_train_util's model loader reads ("no attribute 'disable_mmap_load_safetensors'")
        pytest.skip(f"sdxl_train_textual_inversion.py of sd-scripts {sd.revision.name} cannot load a model, stock or wrapped")
    if script.startswith("sdxl_"):
        tiny = request.getfixturevalue("tiny_sdxl")
        return tiny, tiny.folder
    return None, sd.tiny_dir


@pytest.fixture(scope="module")
def data(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"ti-data-{sd.label}")
    write_images_tree(root)
    return root


def _planned_run(sd, request, data, tmp_path_factory, script: str):
    tiny, _ = _model(sd, request, script)
    config = write_config(data, batch_size=2, name=f"{script}.toml")
    out = tmp_path_factory.mktemp(f"ti-{script}-{sd.label}")
    run, planned = train_and_plan(sd, script, config, out, [*TI_ARGS], tiny=tiny, epochs=EPOCHS, seed=SEED)
    return run, planned


@pytest.fixture(scope="module")
def sd1_run(sd, request, data, tmp_path_factory):
    return _planned_run(sd, request, data, tmp_path_factory, "train_textual_inversion")


@pytest.fixture(scope="module")
def sdxl_run(sd, request, data, tmp_path_factory):
    return _planned_run(sd, request, data, tmp_path_factory, "sdxl_train_textual_inversion")


# Tests take the run by name; they also take `sd` so that they are parametrised by checkout.
RUNS = {"sd1_run": "train_textual_inversion", "sdxl_run": "sdxl_train_textual_inversion"}


@pytest.mark.parametrize("case", RUNS)
def test_schedule_is_the_dry_run(sd, request, case):
    run, planned = request.getfixturevalue(case)
    assert_schedule_is_the_dry_run(run, planned, EPOCHS)


@pytest.mark.parametrize("case", RUNS)
def test_every_epoch_has_the_printed_length(sd, request, case):
    run, planned = request.getfixturevalue(case)
    assert_epochs_have_the_printed_length(run, planned, EPOCHS)


@pytest.mark.parametrize("case", RUNS)
def test_embedding_file_holds_the_model_spec_only(sd, request, case):
    """sd-scripts' TI save writes the SAI model spec and no training metadata (see the module)."""
    run, _ = request.getfixturevalue(case)
    names, _, architecture = SCRIPTS[RUNS[case]]
    header = safetensors_header(run.output_dir / "out.safetensors")
    metadata = header.pop("__metadata__")
    assert all(key.startswith("modelspec.") for key in metadata), sorted(metadata)
    assert metadata["modelspec.architecture"] == architecture
    assert metadata["modelspec.title"] == "out"
    assert set(header) == set(names)
    assert all(entry["shape"][0] == 1 for entry in header.values()), header  # one vector per token


@pytest.mark.parametrize("case", RUNS)
def test_the_token_embedding_was_trained(sd, request, case):
    run, _ = request.getfixturevalue(case)
    names, model_file, _ = SCRIPTS[RUNS[case]]
    _, folder = _model(sd, request, RUNS[case])
    trained = safetensors_tensors(run.output_dir / "out.safetensors")
    for name, start in _init_embeddings(folder, model_file, names).items():
        assert len(trained[name]) == len(start)
        assert trained[name] != start, f"{name}: the embedding is still the init word's"


def _init_embeddings(folder: Path, model_file: Path, names: dict[str, str]) -> dict[str, bytes]:
    """The init word's row of each token embedding weight: what sd-scripts starts the new token from."""
    token = json.loads((folder / "tokenizers" / CLIP_VOCAB).read_text(encoding="utf-8"))[f"{INIT_WORD}</w>"]
    header = safetensors_header(folder / model_file)
    tensors = safetensors_tensors(folder / model_file)
    rows = {}
    for name, weight in names.items():
        assert header[weight]["dtype"] == "F32"
        width = header[weight]["shape"][1] * 4
        rows[name] = tensors[weight][token * width : (token + 1) * width]
    return rows


@pytest.mark.parametrize("script", SCRIPTS)
def test_without_multipliers_training_is_stock(sd, request, data, tmp_path_factory, script):
    one_checkout_only(sd, "the textual inversion bit-identical check without multipliers")
    tiny, _ = _model(sd, request, script)
    config = write_config(data, batch_size=2, multipliers=False, name=f"{script}-stock.toml")
    args = ["--dataset_config", str(config), "--seed", "11", "--max_train_epochs", str(EPOCHS), *TI_ARGS]
    stock = train(sd, script, args, tmp_path_factory.mktemp(f"ti-stock-{script}-{sd.label}"), stock=True, tiny=tiny).check()
    wrapped = train(sd, script, args, tmp_path_factory.mktemp(f"ti-wrapped-{script}-{sd.label}"), schedule=False, tiny=tiny).check()
    assert safetensors_tensor_bytes(wrapped.output_dir / "out.safetensors") == safetensors_tensor_bytes(
        stock.output_dir / "out.safetensors"
    ), f"the wrapper changed {script} training of a config without multipliers"
