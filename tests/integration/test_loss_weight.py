"""Issue 9, point 1: `loss_weight` per subset, proven by real training.

- A run whose only subset has loss_weight 0 leaves the LoRA exactly at its initial weights (the
  weights of a run with learning rate 0), while weight 1 moves them.
- Weight 2 against weight 1 doubles the logged loss of the first step (same seed, same batch).
- The weight is in the LoRA metadata next to the multiplier, and a script that ignores per-example
  loss weights (sdxl_train.py) refuses it with one line before loading a model.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness import (
    LORA_ARGS,
    model_args,
    safetensors_header,
    safetensors_tensor_bytes,
    train,
)
from pngs import write_images

pytestmark = pytest.mark.integration

SEED = 21
# weight_decay 0: AdamW would otherwise shrink the weights even with zero gradients
BASE_ARGS = ["--seed", str(SEED), "--cache_latents", "--max_train_epochs", "1", "--optimizer_args", "weight_decay=0", *LORA_ARGS]


@pytest.fixture(scope="module")
def images(sd, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(f"loss-weight-{sd.label}")
    write_images(root / "alice", 4, (128, 128), seed=3, caption="photo of alice")
    return root


def _config(root: Path, name: str, subset_keys: str) -> Path:
    path = root / name
    path.write_text(
        "[general]\ncaption_extension = \".txt\"\nenable_bucket = true\nmin_bucket_reso = 64\nmax_bucket_reso = 256\n"
        "bucket_reso_steps = 64\n\n[[datasets]]\nresolution = 128\nbatch_size = 2\n\n"
        f"  [[datasets.subsets]]\n  image_dir = {json.dumps(str(root / 'alice'))}\n  {subset_keys}\n"
    )
    return path


def _train(sd, config: Path, out: Path, *extra: str):
    return train(sd, "train_network", ["--dataset_config", str(config), *BASE_ARGS, *extra], out, schedule=False).check()


def _up_weights_are_zero(path: Path) -> bool:
    """LoRA initialises every lora_up to zeros (lora_down at random): all zero means untouched."""
    header, data = safetensors_tensor_bytes(path)
    ups = [entry for name, entry in header.items() if "lora_up" in name]
    assert ups
    return all(not any(data[entry["data_offsets"][0] : entry["data_offsets"][1]]) for entry in ups)


def test_weight_zero_leaves_the_lora_at_its_initial_weights(sd, images, tmp_path_factory):
    zero = _config(images, "zero.toml", "multiplier = 0.5\n  loss_weight = 0")
    one = _config(images, "one.toml", "multiplier = 0.5")
    short = _train(sd, zero, tmp_path_factory.mktemp(f"lw-zero1-{sd.label}"), "--learning_rate", "1e-2")
    longer = _train(sd, zero, tmp_path_factory.mktemp(f"lw-zero3-{sd.label}"), "--learning_rate", "1e-2", "--max_train_epochs", "3")
    trained = _train(sd, one, tmp_path_factory.mktemp(f"lw-one-{sd.label}"), "--learning_rate", "1e-2")
    # never moved: the up weights are still their initial zeros, and 3 epochs end where 1 did
    assert _up_weights_are_zero(short.output_dir / "out.safetensors")
    assert safetensors_tensor_bytes(longer.output_dir / "out.safetensors") == safetensors_tensor_bytes(short.output_dir / "out.safetensors")
    assert not _up_weights_are_zero(trained.output_dir / "out.safetensors")
    assert "loss weight" in short.output  # the balance table shows the column
    metadata = safetensors_header(short.output_dir / "out.safetensors")["__metadata__"]
    assert json.loads(metadata["ss_dataset_dirs"])["alice"]["n_repeats"] == 0.5
    if "ss_datasets" in metadata:
        entry = json.loads(metadata["ss_datasets"])[0]["bucket_info"]["kohya_multiplier"]
        assert entry["loss_weights"] == {"alice": 0}


def _first_logged_loss(sd, logging_dir: Path) -> float:
    """loss/current of step 1 from the run's TensorBoard events, read in the checkout's Python."""
    code = (
        "import sys, glob\n"
        "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n"
        "files = sorted(glob.glob(sys.argv[1] + '/**/events.out.tfevents.*', recursive=True))\n"
        "for f in files:\n"
        "    acc = EventAccumulator(f); acc.Reload()\n"
        "    if 'loss/current' in acc.Tags().get('scalars', []):\n"
        "        print(repr(min(acc.Scalars('loss/current'), key=lambda e: e.step).value)); break\n"
    )
    result = subprocess.run([sd.python, "-c", code, str(logging_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    return float(result.stdout.strip())


def test_weight_two_doubles_the_logged_loss(sd, images, tmp_path_factory):
    losses = {}
    for weight in (1, 2):
        config = _config(images, f"w{weight}.toml", f"loss_weight = {weight}" if weight != 1 else "num_repeats = 1")
        out = tmp_path_factory.mktemp(f"lw-log{weight}-{sd.label}")
        _train(sd, config, out, "--log_with", "tensorboard", "--logging_dir", str(out / "logs"))
        losses[weight] = _first_logged_loss(sd, out / "logs")
    assert losses[1] > 0
    assert losses[2] == pytest.approx(2 * losses[1], rel=1e-5)


def test_a_script_that_ignores_loss_weights_refuses_them(sd, images, tmp_path_factory):
    config = _config(images, "refused.toml", "loss_weight = 2")
    out = tmp_path_factory.mktemp(f"lw-refused-{sd.label}")
    command = [sd.python, "-m", "kohya_multiplier", "sdxl_train", "--sd-scripts", str(sd.root), *model_args(sd),
               "--output_dir", str(out), "--dataset_config", str(config)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=str(out), env=sd.env(), timeout=600)
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("kohya-multiplier: error:")]
    assert len(lines) == 1 and "sdxl_train.py ignores per-example loss weights" in lines[0]
    assert "Traceback" not in result.stderr and "loading" not in result.stdout.lower()
