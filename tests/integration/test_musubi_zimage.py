"""musubi-tuner's own zimage_train_network.py, wrapped, on a tiny Z-Image model: two image datasets
of different buckets in one config.

The musubi-tuner environment is the one ``kohya-multiplier configure --musubi PY`` remembered (the
README's developer set-up makes it); without it every test here is skipped with the reason. The
tiny DiT and the caches come from ``tiny_zimage.py`` (musubi's own model builder and cache
writers, random tensors in place of the VAE and the Qwen3 text encoder, whose tokenizer musubi
would fetch from the hub). What musubi hard-codes that had to be shrunk for that, in
``tiny_hook/km_tiny_zimage.py``: the DiT constants of ``zimage/zimage_config.py`` (3840 channels,
30 layers, 2 refiner layers, 30 heads, RoPE axes 32/48/48, Qwen3-4B's 2560-wide text features) to
32 channels, 2 layers, 1 refiner layer, 2 heads, RoPE axes 4/6/6 and 32-wide text features; the
VAE and Qwen3 are never built.

Z-Image's buckets step by 16 pixels (the planner's architecture "zi"); at resolution 32 x 32 the
candidates are 16 x 64, 32 x 32 and 64 x 16, so the 32 x 32 and 64 x 16 images keep their sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import canonical, printed_int, read_records, safetensors_header, safetensors_tensors
from musubi_harness import INTEGRATION_DIR, needs_musubi, run as run_in_musubi, train as train_in_musubi, plan as dry_run
from pngs import write_images

pytestmark = needs_musubi
TINY = "KOHYA_MULTIPLIER_TINY_ZIMAGE"
ARCHITECTURE = "zi"  # musubi's short name for Z-Image, in its cache file names
EPOCHS = 2


def run(args: list[str], cwd: Path, log: Path):
    return run_in_musubi(args, cwd, log, TINY)


@pytest.fixture(scope="module")
def zimage(tmp_path_factory):
    """The tiny DiT, the images of both datasets and their caches."""
    root = tmp_path_factory.mktemp("musubi_zimage")
    built = run([str(INTEGRATION_DIR / "tiny_zimage.py"), str(root / "model")], root, root / "model.log")
    assert built.returncode == 0, built.stdout + built.stderr
    write_images(root / "squares", 4, (32, 32), seed=1, caption="a square", stem="sq")
    write_images(root / "wide", 2, (64, 16), seed=9, caption="a wide one", stem="wide")
    plain = write_config(root, "plain", "", "")  # the caches, of what every config here names
    cached = run([str(INTEGRATION_DIR / "tiny_zimage.py"), "--caches", str(plain)], root, root / "caches.log")
    assert cached.returncode == 0, cached.stdout + cached.stderr
    return root


def write_config(root: Path, name: str, square_rate: str, wide_rate: str) -> Path:
    """Both datasets with their caches; a rate line is e.g. "multiplier = 1.5" or "" (musubi's own)."""
    config = root / f"{name}.toml"
    config.write_text(f"""
[general]
resolution = [32, 32]
caption_extension = ".txt"
enable_bucket = true

[[datasets]]
image_directory = "{root / 'squares'}"
cache_directory = "{root / 'cache_squares'}"
batch_size = 2
{square_rate}

[[datasets]]
image_directory = "{root / 'wide'}"
cache_directory = "{root / 'cache_wide'}"
batch_size = 1
{wide_rate}
""")
    return config


def train(root: Path, config: Path, out: str, extra: list[str], *, stock: bool = False):
    args = ["--dit", str(root / "model" / "zimage_dit.safetensors"), "--dataset_config", str(config),
            "--network_module", "networks.lora_zimage", "--max_train_epochs", str(EPOCHS), *extra]
    return train_in_musubi(root / out, "zimage_train_network", args, TINY, stock=stock)


def plan(config: Path, schedule: Path, *extra: str) -> tuple[list[dict], str]:
    return dry_run(config, schedule, ARCHITECTURE, *extra)


def test_zimage_lora_trains_exactly_the_plan(zimage):
    config = write_config(zimage, "balanced", "multiplier = 1.5", "multiplier = 0.5")
    schedule = zimage / "trained.jsonl"
    output, lora = train(zimage, config, "balanced", ["--multiplier_schedule", str(schedule)])
    planned, _ = plan(config, zimage / "planned.jsonl", "--epochs", str(EPOCHS))
    trained = read_records(schedule)
    assert canonical(trained) == canonical(planned)
    squares = [r for r in trained if r["dataset"] == 0]
    wide = [r for r in trained if r["dataset"] == 1]
    assert sum(len(r["images"]) for r in squares) == 6 * EPOCHS  # 1.5 x 4 images
    assert sum(len(r["images"]) for r in wide) == 1 * EPOCHS  # 0.5 x 2 images
    assert {tuple(r["resolution"]) for r in squares} == {(32, 32)}
    assert {tuple(r["resolution"]) for r in wide} == {(64, 16)}
    assert len({item for r in wide for item in r["images"]}) == 2  # rotation: both wide images in 2 epochs
    length = len(planned) // EPOCHS
    assert printed_int(output, "num batches per epoch") == length
    assert printed_int(output, "total optimization steps") == EPOCHS * length
    metadata = safetensors_header(lora)["__metadata__"]
    assert int(metadata["ss_num_batches_per_epoch"]) == length
    datasets = json.loads(metadata["ss_datasets"])
    assert [d["kohya_multiplier"]["multiplier"] for d in datasets] == [1.5, 0.5]
    assert any(any(b != 0 for b in t) for name, t in safetensors_tensors(lora).items() if "lora_up" in name)


def test_a_config_without_multipliers_trains_as_stock_musubi_bit_for_bit(zimage):
    config = write_config(zimage, "stock", "num_repeats = 2", "")
    _, stock = train(zimage, config, "stock_musubi", [], stock=True)
    _, wrapped = train(zimage, config, "stock_wrapped", [])
    assert safetensors_tensors(wrapped) == safetensors_tensors(stock)
