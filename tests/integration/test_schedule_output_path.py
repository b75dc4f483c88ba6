"""Training's --multiplier_schedule never overwrites an input (issue 11, point 1): the dataset
config or a file in an image folder is refused with one line and status 2, before the recorder
opens the file and before any model loads; the file is left as it was."""

from __future__ import annotations

import pytest

from harness import LORA_ARGS, train, write_config, write_images_tree

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("target", ["config", "caption"])
def test_schedule_over_an_input_is_refused_before_training(sd, tmp_path_factory, target):
    root = tmp_path_factory.mktemp(f"schedule-over-{target}-{sd.label}")
    write_images_tree(root)
    config = write_config(root, batch_size=2)
    victim = config if target == "config" else next((root / "train" / "alice").glob("*.txt"))
    before = victim.read_bytes()
    out = root / "out"
    run = train(sd, "train_network", ["--dataset_config", str(config), "--multiplier_schedule", str(victim), *LORA_ARGS],
                out, schedule=False)
    assert run.returncode == 2, run.output[-3000:]
    expected = "is the dataset config" if target == "config" else "is inside the image folder"
    errors = [line for line in run.output.splitlines() if line.startswith("kohya-multiplier: error: ")]
    assert len(errors) == 1 and "--multiplier_schedule: " in errors[0] and expected in errors[0], run.output[-3000:]
    assert victim.read_bytes() == before
    assert "load Diffusers pretrained" not in run.output and "Traceback" not in run.output
