"""A folder that changes between the start-up table and sd-scripts' own listing of it.

The start-up table plans the images kohya-multiplier read from the config; sd-scripts then lists the
folders again. When an image arrives in between (a sync tool, a second terminal), training must
follow what sd-scripts registered, say so once, and plan it exactly as a dry run of the grown folder
does: never serve the table's plan against other images. A test-only start-up hook
(tiny_hook/km_test_grow.py) copies the image in right after the table is printed.
"""

from __future__ import annotations

import os

import pytest

from harness import LORA_ARGS, canonical, dry_run, printed_int, train, write_config, write_images_tree
from pngs import write_images

pytestmark = pytest.mark.integration

EPOCHS = 2
SEED = 7
DIFFERS = (
    "sd-scripts found other images than `kohya-multiplier plan` (0 only in the dry run, 1 only in training); "
    "training follows sd-scripts"
)


def test_an_image_added_during_start_up_is_trained_as_sd_scripts_found_it(sd, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"grow-{sd.label}")
    write_images_tree(root)
    # a wide image: a bucket alice's other images are not in
    staged = write_images(root / "staging", 1, (128, 64), seed=21, stem="late")[0]
    alice = root / "train" / "alice"
    (alice / "late000.txt").write_text("photo of alice\n")  # a caption alone is no image to either reader
    arriving = alice / "late000.png"
    config = write_config(root, batch_size=2)
    out = tmp_path_factory.mktemp(f"grow-run-{sd.label}")
    args = ["--dataset_config", str(config), "--seed", str(SEED), "--max_train_epochs", str(EPOCHS),
            "--max_data_loader_n_workers", "0", *LORA_ARGS]
    run = train(sd, "train_network", args, out, env={"KOHYA_MULTIPLIER_TEST_ADD_IMAGE": f"{staged}{os.pathsep}{arriving}"}).check()

    assert arriving.is_file(), "the test hook did not add the image"
    assert run.output.count(DIFFERS) == 1, run.output[-4000:]
    planned, _ = dry_run([str(config), "--seed", str(SEED), "--epochs", str(EPOCHS)], out / "dry-run.jsonl")
    assert canonical(run.records) == canonical(planned)
    assert printed_int(run.output, "num batches per epoch") == len(planned) // EPOCHS
    assert printed_int(run.output, "total optimization steps") == len(planned)
