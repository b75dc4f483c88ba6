"""Issue 12, point 1: hooks that check themselves.

For each hook, a test-only start-up hook (tiny_hook/km_test_moves.py) moves the hooked name out of
reach right after kohya-multiplier installed it, as a refactor of sd-scripts would. The run must
stop with one line naming what is missing and the detected sd-scripts revision, exit status 2,
before the model loads: never train with multipliers ignored.
"""

from __future__ import annotations

import subprocess

import pytest

from harness import LORA_ARGS, model_args, write_config, write_images_tree

pytestmark = pytest.mark.integration

# moved name -> what the one line must name
MOVES = {
    "prepare_dataset_args": "never read the dataset config",
    "DreamBoothDataset": "not the planned dataset",
    "collator_class": "collator_class (the epoch collator) is not ours",
    "generate_dataset_group_by_blueprint": "without the check of generate_dataset_group_by_blueprint",
    "generate_dreambooth_subsets_config_by_subdirs": "generate_dreambooth_subsets_config_by_subdirs (0.25_name folders) is not ours",
    "recorder": "recorder is not attached",
}


@pytest.fixture(scope="module")
def config(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"selfcheck-{sd.label}")
    write_images_tree(root)
    return write_config(root, batch_size=2)


def _run(sd, config, out, move: str):
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sd.python, "-m", "kohya_multiplier", "train_network", "--sd-scripts", str(sd.root),
        "--multiplier_schedule", str(out / "schedule.jsonl"),
        *model_args(sd), "--output_dir", str(out), "--dataset_config", str(config), "--max_train_epochs", "1", *LORA_ARGS,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=str(out), timeout=600, env=sd.env(KOHYA_MULTIPLIER_TEST_MOVE=move)
    )
    (out / "train.log").write_text(" ".join(command) + "\n\n" + result.stdout + "\n" + result.stderr)
    return result


@pytest.mark.parametrize("move", list(MOVES))
def test_a_hook_that_misses_stops_the_run(sd, config, tmp_path_factory, move):
    result = _run(sd, config, tmp_path_factory.mktemp(f"move-{move}-{sd.label}"), move)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-4000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("kohya-multiplier: error:")]
    assert len(lines) == 1, output[-4000:]
    line = lines[0]
    assert "a hook into sd-scripts did not take effect" in line
    assert MOVES[move] in line, line
    assert sd.revision.name in line and "layout" in line, line  # the revision and its layout
    assert "Traceback" not in output
    assert "load Diffusers pretrained" not in output and "loading u-net" not in output.lower()
    assert not list((tmp_path_factory.getbasetemp()).glob(f"move-{move}-{sd.label}*/out*.safetensors"))


def test_a_missed_fine_tuning_dataset_hook_stops_the_run(sd, tmp_path_factory):
    """The same for a metadata dataset (metadata_file subsets): sd-scripts' own FineTuningDataset
    would train it without its multipliers."""
    import json

    from pngs import write_images

    root = tmp_path_factory.mktemp(f"selfcheck-ft-{sd.label}")
    images = write_images(root / "images", 3, (128, 128), seed=9)
    absolute = {str(p): {"caption": "photo"} for p in images}  # absolute keys: the same image at every revision
    (root / "meta.json").write_text(json.dumps(absolute))
    config = root / "fine-tuning.toml"
    config.write_text(
        "[general]\nresolution = 128\n\n[[datasets]]\nbatch_size = 2\n\n  [[datasets.subsets]]\n"
        f"  metadata_file = {json.dumps(str(root / 'meta.json'))}\n  multiplier = 0.5\n"
    )
    result = _run(sd, config, root / "out", "FineTuningDataset")
    lines = [line for line in result.stderr.splitlines() if line.startswith("kohya-multiplier: error:")]
    assert result.returncode == 2 and len(lines) == 1, (result.stdout + result.stderr)[-4000:]
    assert "FineTuningDataset, not the planned dataset" in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
