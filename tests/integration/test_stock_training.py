"""The dry run predicts what sd-scripts trains for datasets without multipliers ("stock"), for real.

A stock dataset with regularization images: sd-scripts registers regularization images until
their repeats reach the training images, adds one repeat round-robin when they fall short, and
never registers the rest (kohya_multiplier.dataset.regularization). `plan` must print sd-scripts' batches
per epoch and its `--schedule` must hold, per epoch, the same images per bucket as the batches
sd-scripts trains (their order is sd-scripts' own shuffle, unpredictable). Checked on a stock
config and on a mixed config (one dataset with multipliers, one without), on every checkout.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness import BUCKET_OPTIONS, LORA_ARGS, _toml_value, dry_run, per_epoch, printed_int, train
from pngs import write_images

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 13

# folder: (images, (w, h)); three buckets at resolution 128 with the harness' bucket options
FOLDERS = {
    "train/alice": (6, (128, 128)),
    "train/bob": (4, (192, 64)),
    "train/carol": (3, (64, 192)),
    "reg/person": (4, (128, 128)),
    "reg/crowd": (10, (192, 64)),
}
TINY = "train/tiny"  # 2 images of 64 x 64 (skipped by skip_image_resolution = 64) and 2 of 128 x 128


def supports_skip(sd) -> bool:
    """sd-scripts v0.11.1 and later: the skip_image_resolution dataset key."""
    return "skip_image_resolution" in (Path(sd.root) / "library" / "config_util.py").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def data(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"stock-data-{sd.label}")
    for seed, (folder, (count, size)) in enumerate(FOLDERS.items(), start=21):
        write_images(root / folder, count, size, seed=seed, caption=f"photo of {Path(folder).name}")
    write_images(root / TINY, 2, (64, 64), seed=31, caption="photo of tiny", stem="small")
    write_images(root / TINY, 2, (128, 128), seed=32, caption="photo of tiny", stem="big")
    return root


def _config(root: Path, name: str, datasets: list[tuple[int, list[dict]]], skip: bool) -> Path:
    """The config; with ``skip`` (v0.11.1), each dataset skips images of at most 64 x 64 and also
    trains train/tiny (whose two 128 x 128 images are kept) once per epoch."""
    lines = ["[general]", 'caption_extension = ".txt"', "resolution = 128"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in BUCKET_OPTIONS.items()]
    for batch_size, subsets in datasets:
        lines += ["", "[[datasets]]", f"batch_size = {batch_size}"]
        if skip:
            lines.append("skip_image_resolution = 64")
            subsets = [{"image_dir": TINY}, *subsets]
        for subset in subsets:
            lines += ["", "  [[datasets.subsets]]"]
            for key, value in subset.items():
                value = str(root / value) if key == "image_dir" else value
                lines.append(f"  {key} = {_toml_value(value)}")
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


# Training images 6 x 1 + 4 x 2 = 14. Regularization: person 4 x 2 = 8, then crowd 6 of its 10
# images once (4 never used): 14, in two buckets.
STOCK = [
    (2, [
        {"image_dir": "train/alice", "num_repeats": 1},
        {"image_dir": "train/bob", "num_repeats": 2},
        {"image_dir": "reg/person", "is_reg": True, "num_repeats": 2},
        {"image_dir": "reg/crowd", "is_reg": True},
    ]),
]
# Dataset 0 uses multipliers; dataset 1 does not: training 4 x 2 + 3 x 1 = 11 against 4
# regularization images, which get 3, 3, 3 and 2 repeats (further passes round-robin).
MIXED = [
    (2, [
        {"image_dir": "train/alice", "multiplier": 0.5},
        {"image_dir": "train/carol", "num_repeats": 2},
        {"image_dir": "reg/crowd", "is_reg": True},
    ]),
    (3, [
        {"image_dir": "train/bob", "num_repeats": 2},
        {"image_dir": "train/carol"},
        {"image_dir": "reg/person", "is_reg": True},
    ]),
]


def _batches(records: list[dict], dataset: int | None = None) -> list[str]:
    """The batches (epoch, position, resolution, images) of a schedule, comparable across writers."""
    keys = ("epoch", "dataset", "batch", "resolution", "images")
    return sorted(json.dumps([r[k] for k in keys]) for r in records if dataset is None or r["dataset"] == dataset)


def _images(records: list[dict]) -> Counter:
    return Counter((tuple(r["resolution"]), image) for r in records for image in r["images"])


def assert_stock_epoch(trained: list[dict], planned: list[dict], batch_size: int) -> None:
    """One epoch of a stock dataset (its records in training order) against the dry run's.

    sd-scripts' epoch holds exactly the planned images per bucket, in batches of the planned
    sizes, in its own order. One batch can differ: the DataLoader fetches the first batch of an
    epoch before sd-scripts' collator moves the dataset to the new epoch, so that batch comes from
    the previous epoch's shuffle, another draw from the same composition (with 0 workers, the
    first batch trained; per worker otherwise).
    """
    assert len(trained) == len(planned)
    plan = _images(planned)
    if _images(trained) == plan:
        assert Counter((tuple(r["resolution"]), len(r["images"])) for r in trained) == Counter(
            (tuple(r["resolution"]), len(r["images"])) for r in planned
        )
        return
    first, rest = trained[0], _images(trained[1:])
    assert not rest - plan, f"images beyond the plan: {rest - plan}"
    assert not _images([first]) - plan, "the epoch's first batch holds images beyond the composition"
    left = plan - rest  # the batch the first one stands in for: one bucket, at most a batch
    assert len({res for res, _ in left}) == 1 and 1 <= sum(left.values()) <= batch_size, left
    sizes = Counter((tuple(r["resolution"]), len(r["images"])) for r in trained[1:])
    assert not sizes - Counter((tuple(r["resolution"]), len(r["images"])) for r in planned)


def _composition(records: list[dict], dataset: int, epoch: int) -> Counter:
    return Counter(
        (tuple(r["resolution"]), image) for r in records if r["dataset"] == dataset and r["epoch"] == epoch for image in r["images"]
    )


def _epoch(records: list[dict], dataset: int, epoch: int) -> list[dict]:
    return [r for r in records if r["dataset"] == dataset and r["epoch"] == epoch]


def _run(sd, data, tmp_path_factory, name: str, datasets) -> tuple:
    config = _config(data, f"{name}.toml", datasets, supports_skip(sd))
    out = tmp_path_factory.mktemp(f"{name}-{sd.label}")
    args = ["--dataset_config", str(config), "--seed", str(SEED), "--cache_latents", "--max_train_epochs", str(EPOCHS),
            "--max_data_loader_n_workers", "0", *LORA_ARGS]
    run = train(sd, "train_network", args, out).check()
    planned, plan = dry_run([str(config), "--seed", str(SEED), "--epochs", str(EPOCHS)], out / "dry-run.jsonl")
    return run, planned, plan


def test_stock_config_with_regularization_images(sd, data, tmp_path_factory):
    skip = supports_skip(sd)
    run, planned, plan = _run(sd, data, tmp_path_factory, "stock", STOCK)
    length = len(planned) // EPOCHS
    # sum over buckets of ceil(images x repeats / batch size): (6 + 8) / 2 + ceil((8 + 6) / 2) = 7 + 7;
    # with train/tiny: 16 training images, crowd 8 of 10, (6 + 2 + 8) / 2 + (8 + 8) / 2
    assert length == (16 if skip else 14)
    assert printed_int(run.output, "num batches per epoch") == length
    assert per_epoch(run.records) == {e: length for e in range(1, EPOCHS + 1)}
    unused = 2 if skip else 4
    assert f"{unused} of the 14 regularization images are never used" in plan.stdout
    assert f"never ({unused} unused)" in plan.stdout
    if skip:
        assert "skip_image_resolution 64x64: 2 of 4 images" in plan.stdout
    person = str(data / "reg" / "person")
    crowd = str(data / "reg" / "crowd")
    for epoch in range(1, EPOCHS + 1):
        assert_stock_epoch(_epoch(run.records, 0, epoch), _epoch(planned, 0, epoch), batch_size=2)
        composition = _composition(planned, 0, epoch)
        per_folder = Counter(Path(image).parent.as_posix() for (_, image), n in composition.items() for _ in range(n))
        assert per_folder[person] == 8 and per_folder[crowd] == 14 - 8 + (2 if skip else 0)
        assert len({image for (_, image) in composition if image.startswith(crowd + "/")}) == per_folder[crowd]
        assert not any("/small" in image for (_, image) in composition)
        trained_crowd = {image for r in _epoch(run.records, 0, epoch)[1:] for image in r["images"] if image.startswith(crowd + "/")}
        assert trained_crowd <= {image for (_, image) in composition}  # the 4 unused are never trained


def test_mixed_config(sd, data, tmp_path_factory):
    run, planned, plan = _run(sd, data, tmp_path_factory, "mixed", MIXED)
    length = len(planned) // EPOCHS
    assert printed_int(run.output, "num batches per epoch") == length
    assert per_epoch(run.records) == {e: length for e in range(1, EPOCHS + 1)}
    person = str(data / "reg" / "person")
    for epoch in range(1, EPOCHS + 1):
        assert _composition(run.records, 0, epoch) == _composition(planned, 0, epoch)
        assert_stock_epoch(_epoch(run.records, 1, epoch), _epoch(planned, 1, epoch), batch_size=3)
        reg = sorted(n for (_, image), n in _composition(planned, 1, epoch).items() if image.startswith(person + "/"))
        assert reg == ([3, 3, 3, 4] if supports_skip(sd) else [2, 3, 3, 3])  # 13 or 11 training images
        assert not any("/small" in image for r in _epoch(run.records, 0, epoch) for image in r["images"])
    # the dataset with multipliers follows the plan batch for batch
    assert _batches(run.records, 0) == _batches(planned, 0)


def test_skip_image_resolution_with_multipliers(sd, data, tmp_path_factory):
    """v0.11.1 filters images of a dataset with multipliers too; the dry run filters the same ones."""
    if not supports_skip(sd):
        pytest.skip(f"sd-scripts {sd.revision.name} has no skip_image_resolution")
    datasets = [(2, [
        {"image_dir": "train/alice", "multiplier": 0.5},
        {"image_dir": "train/bob"},
        {"image_dir": "reg/person", "is_reg": True},
    ])]
    run, planned, plan = _run(sd, data, tmp_path_factory, "skip-multipliers", datasets)
    assert "skip_image_resolution 64x64: 2 of 4 images" in plan.stdout
    assert _batches(run.records) == _batches(planned)
    trained = {image for r in run.records for image in r["images"]}
    assert not any("/small" in image for image in trained) and any("/big" in image for image in trained)
    assert "other images than" not in run.output  # the adapter's check against the dry run
