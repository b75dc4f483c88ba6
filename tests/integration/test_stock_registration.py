"""sd-scripts' own datasets against the dry run, for many configs without multipliers, on every checkout.

For random stock configs (subsets drawn from a pool of folders, with num_repeats 0 to 3, repeated
image_dirs, regularization subsets below, at and above the training count, batch sizes 1 to 4;
validation_split with a seed where the checkout has it, skip_image_resolution where it has that),
sd-scripts builds its training datasets exactly as train_network.py does (no model, no training;
sdscripts_registration_oracle.py), and every dataset must register exactly the images the plan
input holds, with the same repeats and buckets, and have the planner's batches per epoch.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from harness import BUCKET_OPTIONS, _toml_value
from pngs import write_images

from kohya_multiplier.dataset.config import load_training_config
from kohya_multiplier.errors import UserError
from kohya_multiplier.planner.plan_input import planner_for_dataset

pytestmark = pytest.mark.integration

ORACLE = Path(__file__).with_name("sdscripts_registration_oracle.py")
CONFIGS = 40

# folder: [(count, (w, h)), ...]
POOL = {
    "train/t0": [(5, (128, 128))],
    "train/t1": [(3, (192, 64))],
    "train/t2": [(7, (64, 192))],
    "train/t3": [(2, (64, 64)), (2, (128, 128))],
    "reg/r0": [(6, (128, 128))],
    "reg/r1": [(10, (192, 64))],
    "reg/r2": [(3, (128, 128))],
    "reg/r3": [(2, (64, 64))],  # nothing left with skip_image_resolution = 64
}


def _source_has(sd, key: str) -> bool:
    return key in (Path(sd.root) / "library" / "config_util.py").read_text(encoding="utf-8")


def _random_config(rng: random.Random, root: Path, index: int, *, split: bool, skip: bool) -> Path:
    lines = ["[general]", 'caption_extension = ".txt"', "resolution = 128"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in BUCKET_OPTIONS.items()]
    for _ in range(rng.choice([1, 1, 2])):
        lines += ["", "[[datasets]]", f"batch_size = {rng.randint(1, 4)}"]
        if split and rng.random() < 0.3:
            lines += [f"validation_split = {rng.choice([0.25, 0.5])}", f"validation_seed = {rng.randint(0, 99)}"]
        if skip and rng.random() < 0.4:
            lines.append("skip_image_resolution = " + rng.choice(["64", "[64, 64]", "[100, 100]"]))
        folders = list(POOL)
        chosen = [rng.choice([f for f in folders if f.startswith("train")])]
        chosen += [rng.choice(folders) for _ in range(rng.randint(0, 4))]
        rng.shuffle(chosen)
        for folder in chosen:
            lines += ["", "  [[datasets.subsets]]", f"  image_dir = {json.dumps(str(root / folder))}"]
            if folder.startswith("reg") or rng.random() < 0.1:
                lines.append("  is_reg = true")
            repeats = rng.choice([None, None, 0, 1, 2, 3])
            if repeats is not None:
                lines.append(f"  num_repeats = {repeats}")
    path = root / f"config{index:03d}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sd_scripts_registers_what_the_plan_input_holds(sd, tmp_path):
    for seed, (folder, groups) in enumerate(POOL.items(), start=40):
        for k, (count, size) in enumerate(groups):
            write_images(tmp_path / folder, count, size, seed=seed * 10 + k, caption="photo", stem=f"g{k}_")
    rng = random.Random(2026)
    split, skip = _source_has(sd, "validation_split"), _source_has(sd, "skip_image_resolution")
    configs = [_random_config(rng, tmp_path, i, split=split, skip=skip) for i in range(CONFIGS)]
    output = tmp_path / "oracle.json"
    completed = subprocess.run(
        [sd.python, str(ORACLE)], input=json.dumps({"configs": [str(c) for c in configs], "output": str(output)}),
        capture_output=True, text=True, env=sd.env(), cwd=str(sd.root), timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(output.read_text())
    compared = reg_unused = reg_extra = 0
    for config, theirs in zip(configs, results):
        try:
            ours = load_training_config(str(config))
        except UserError as error:
            # The dry run refuses a dataset whose every subset is excluded; sd-scripts builds it empty.
            assert "every subset is excluded" in str(error), (config.read_text(), str(error))
            continue
        assert "error" not in theirs, (config.read_text(), theirs)
        assert len(theirs["datasets"]) == len(ours.datasets)
        for dataset, registered in zip(ours.datasets, theirs["datasets"]):
            planner, plan_input = planner_for_dataset(dataset, 0)
            mine = {
                key: [int(repeats), list(plan_input.bucket_resolutions[bucket])]
                for key, repeats, bucket in zip(plan_input.image_keys, plan_input.image_repeats, plan_input.bucket_of_image)
            }
            assert mine == registered["images"], config.read_text()
            assert planner.epoch_length == registered["length"], config.read_text()
            reg_images = sum(len(s.images) for s in dataset.subsets if s.is_reg and not s.excluded)
            reg_registered = sum(1 for key in mine if "/reg/" in key)
            reg_unused += reg_registered < reg_images
            reg_extra += any(r > 1 for key, (r, _) in mine.items() if "/reg/" in key)
            compared += 1
    # the random configs really cover both sides of the rule
    assert compared >= CONFIGS and reg_unused >= 3 and reg_extra >= 3, (compared, reg_unused, reg_extra)


FOLDER_ARGS = ["--resolution", "128", "--enable_bucket", "--min_bucket_reso", "64", "--max_bucket_reso", "256",
               "--bucket_reso_steps", "64", "--caption_extension", ".txt", "--train_batch_size", "2"]


def test_dreambooth_folders_queue_regularization_in_sd_scripts_listing_order(sd, tmp_path):
    """--train_data_dir/--reg_data_dir: sd-scripts queues regularization folders in file-system
    order (Path.iterdir), which decides which images are used when they outnumber the training
    images; the dry run takes the same order."""
    write_images(tmp_path / "few" / "2_alice", 5, (128, 128), seed=1, caption="alice")  # 10: some reg images unused
    write_images(tmp_path / "many" / "19_alice", 5, (128, 128), seed=1, caption="alice")  # 95: reg repeated in turn
    reg_folders = ["1_a", "1_e", "2_c", "3_d", "1_b", "1_f"]
    for k, name in enumerate(reg_folders):
        write_images(tmp_path / "reg" / name, 2 + k % 3, (128, 128) if k % 2 else (192, 64), seed=10 + k, caption="person")
    listed = [p.name for p in (tmp_path / "reg").iterdir()]
    cases = {label: ["--train_data_dir", str(tmp_path / label), "--reg_data_dir", str(tmp_path / "reg")] for label in ("few", "many")}
    output = tmp_path / "oracle.json"
    request = {"configs": [{"args": [*args, *FOLDER_ARGS]} for args in cases.values()], "output": str(output)}
    completed = subprocess.run([sd.python, str(ORACLE)], input=json.dumps(request), capture_output=True, text=True,
                               env=sd.env(), cwd=str(sd.root), timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    from kohya_multiplier.commands.dataset_options import add_dataset_arguments, options_from_args
    import argparse

    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    for (label, args), theirs in zip(cases.items(), json.loads(output.read_text())):
        assert "error" not in theirs, theirs
        config = load_training_config(None, options_from_args(parser.parse_args([*args, *FOLDER_ARGS])))
        (dataset,) = config.datasets
        planner, plan_input = planner_for_dataset(dataset, 0)
        mine = {
            key: [int(repeats), list(plan_input.bucket_resolutions[bucket])]
            for key, repeats, bucket in zip(plan_input.image_keys, plan_input.image_repeats, plan_input.bucket_of_image)
        }
        assert mine == theirs["datasets"][0]["images"], (label, listed)
        assert planner.epoch_length == theirs["datasets"][0]["length"], label
