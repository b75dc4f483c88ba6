"""FLUX full fine-tune through `kohya-multiplier flux_train`, for real, on CPU, with the tiny random
FLUX.1-dev, AutoEncoder, CLIP-L and T5 of the LoRA tests (tiny_flux.py, the `tiny_flux` fixture)
and their options (test_flux.FLUX_MODEL_ARGS: text encoder outputs and latents cached in memory).

One short wrapped run with multipliers, no DataLoader workers: its schedule is the dry run's, every
epoch has the length sd-scripts prints, and the transformer it saves was trained.

Nothing new had to be shrunk: flux_train.py builds its models through the same library/flux_models
and flux_utils as flux_train_network.py, which KOHYA_MULTIPLIER_TINY_FLUX already shrinks.

Tokenizers: flux_train.py builds its FluxTokenizeStrategy without `--tokenizer_cache_dir` (it
accepts the option and ignores it), so it always asks Hugging Face for "openai/clip-vit-large-patch14"
and "google/t5-v1_1-xxl". sd-scripts offers no argument for them; the test gives it the very
tokenizer files tiny_flux.py writes, laid out as an offline Hugging Face hub cache in the test's
tmp folder (HF_HUB_CACHE; the runs are offline, nothing is downloaded).

Revisions without flux_train.py (v0.9.x) skip, saying so.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from harness import (
    assert_subject_counts,
    canonical,
    per_epoch,
    printed_int,
    safetensors_tensors,
    train_and_plan,
    write_config,
    write_images_tree,
)
from test_flux import FLUX_MODEL_ARGS, NO_WORKERS

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 42
# The tokenizer ids flux_train.py loads (library/strategy_flux.py); tiny_flux.py writes each into
# the --tokenizer_cache_dir folder named as sd-scripts names it (the id with "/" -> "_").
HUB_TOKENIZERS = ("openai/clip-vit-large-patch14", "google/t5-v1_1-xxl")
HUB_REVISION = "0" * 40  # any commit name: offline, the hub cache resolves refs/main to it


def write_hub_cache(tokenizers: Path, cache: Path) -> None:
    """The tokenizer folders under ``tokenizers`` as a Hugging Face hub cache (HF_HUB_CACHE layout)."""
    for model_id in HUB_TOKENIZERS:
        repo = cache / ("models--" + model_id.replace("/", "--"))
        shutil.copytree(tokenizers / model_id.replace("/", "_"), repo / "snapshots" / HUB_REVISION)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(HUB_REVISION)


@pytest.fixture(scope="module")
def tiny_flux_hub(sd, tiny_flux, tmp_path_factory):
    """The tiny FLUX model set, its tokenizers also findable through the hub cache."""
    if not (Path(sd.root) / "flux_train.py").is_file():
        pytest.skip(f"sd-scripts {sd.revision.name} has no flux_train.py")
    cache = tmp_path_factory.mktemp(f"flux-hub-{sd.label}")
    write_hub_cache(tiny_flux.folder / "tokenizers", cache)
    return dataclasses.replace(tiny_flux, env={**tiny_flux.env, "HF_HUB_CACHE": str(cache)})


@pytest.fixture(scope="module")
def finetune_run(sd, tiny_flux_hub, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"flux-finetune-{sd.label}")
    write_images_tree(out / "data")
    config = write_config(out / "data", batch_size=2)
    run, planned = train_and_plan(sd, "flux_train", config, out, [*FLUX_MODEL_ARGS, *NO_WORKERS], tiny=tiny_flux_hub, epochs=EPOCHS, seed=SEED)
    return run, planned


def test_schedule_is_the_dry_run(finetune_run):
    run, planned = finetune_run
    assert planned, "the dry run planned nothing"
    assert canonical(run.records) == canonical(planned)
    assert_subject_counts(run.records, EPOCHS)


def test_every_epoch_has_the_printed_length(finetune_run):
    run, planned = finetune_run
    length = len(planned) // EPOCHS
    assert per_epoch(run.records) == {e: length for e in range(1, EPOCHS + 1)}
    assert printed_int(run.output, "num batches per epoch") == length
    assert printed_int(run.output, "num epochs") == EPOCHS
    assert printed_int(run.output, "total optimization steps") == EPOCHS * length
    assert all(1 <= len(r["images"]) <= 2 for r in run.records)


def test_finetune_saves_a_trained_transformer(tiny_flux_hub, finetune_run):
    run, _ = finetune_run
    before = safetensors_tensors(tiny_flux_hub.folder / "flux.safetensors")
    after = safetensors_tensors(run.output_dir / "out.safetensors")
    assert set(after) == set(before), sorted(set(after) ^ set(before))[:5]
    assert any(before[name] != after[name] for name in before), "flux_train saved an untrained transformer"
