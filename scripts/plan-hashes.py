"""Hash the schedules `plan --schedule` writes for a fixed set of varied datasets.

    python scripts/plan-hashes.py            # print {case: sha256} as JSON
    python scripts/plan-hashes.py --check F  # compare with a saved JSON; exit 1 on any difference

A restructuring must leave every plan byte-identical (a change of plans is a new planner version):
run this before the first change and after every step. The datasets are generated in a temporary
folder (deterministic images and captions); the folder's path is replaced by ``ROOT`` before
hashing, so the hashes do not depend on where they were made. tests/test_plan_hashes.py runs it
against tests/golden/plan_hashes.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile

from kohya_multiplier.cli import main
from kohya_multiplier.example import generate, write_png


def _images(folder: str, count: int, sizes=((64, 64), (64, 96), (96, 64)), *, caption: str | None = "a photo") -> None:
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        write_png(os.path.join(folder, f"{i:04d}.png"), width, height, (i % 256, (3 * i) % 256, 7))
        if caption is not None:
            with open(os.path.join(folder, f"{i:04d}.txt"), "w", encoding="utf-8") as handle:
                handle.write(f"{caption} {i}\n")


def _write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


# The [general] table of every case: small buckets, so small images make several of them.
GENERAL = """[general]
resolution = 64
enable_bucket = true
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 32
"""


def build_cases(root: str) -> dict[str, list[str]]:
    """Each case: the `plan` arguments (its --schedule is added by the caller)."""
    r = root.replace("\\", "/")
    example = generate(os.path.join(root, "example"))
    _images(f"{root}/subjects/alice", 40)
    _images(f"{root}/subjects/bob", 9)
    _images(f"{root}/subjects/carol", 3, sizes=((96, 64),))
    _images(f"{root}/reg/person", 30)
    _images(f"{root}/ed/style", 12)
    _write(f"{root}/ed/style/multiply.txt", "0.4\n")
    _write(f"{root}/ed/style/loss_scale.txt", "0.5\n")
    subjects = _write(f"{root}/subjects.toml", f"""
{GENERAL}caption_extension = ".txt"
[[datasets]]
batch_size = 2
  [[datasets.subsets]]
  image_dir = "{r}/subjects/alice"
  multiplier = 0.15
  loss_weight = 0.8
  [[datasets.subsets]]
  image_dir = "{r}/subjects/bob"
  multiplier = 1.7
  [[datasets.subsets]]
  image_dir = "{r}/subjects/carol"
  num_repeats = 3
  [[datasets.subsets]]
  image_dir = "{r}/reg/person"
  is_reg = true
  [[datasets.subsets]]
  image_dir = "{r}/ed/style"
[[datasets]]
batch_size = 3
multiplier = 0.5
  [[datasets.subsets]]
  image_dir = "{r}/subjects/alice"
  [[datasets.subsets]]
  image_dir = "{r}/reg/person"
  is_reg = true
  multiplier = 0.2
""")
    stock = _write(f"{root}/stock.toml", f"""
{GENERAL}[[datasets]]
batch_size = 2
  [[datasets.subsets]]
  image_dir = "{r}/subjects/bob"
  num_repeats = 2
  [[datasets.subsets]]
  image_dir = "{r}/reg/person"
  is_reg = true
""")
    _images(f"{root}/folders/train/0.25_alice", 20)
    _images(f"{root}/folders/train/3_bob", 4)
    _images(f"{root}/folders/reg/1_person", 25)
    meta = {}
    for name, count in (("big", 30), ("small", 6)):
        _images(f"{root}/ft/{name}", count, caption=None)
        meta[name] = {f"{root}/ft/{name}/{i:04d}.png".replace("\\", "/"): {"caption": f"{name} {i}"} for i in range(count)}
        _write(f"{root}/ft/{name}.json", json.dumps(meta[name]))
    finetune = _write(f"{root}/finetune.toml", f"""
{GENERAL}[[datasets]]
batch_size = 2
  [[datasets.subsets]]
  metadata_file = "{r}/ft/big.json"
  multiplier = 0.3
  [[datasets.subsets]]
  metadata_file = "{r}/ft/small.json"
  multiplier = 1.5
  loss_weight = 0.5
""")
    folders = ["--train_data_dir", f"{root}/folders/train", "--reg_data_dir", f"{root}/folders/reg",
               "--resolution", "64", "--enable_bucket", "--min_bucket_reso", "32", "--max_bucket_reso", "128",
               "--bucket_reso_steps", "32", "--train_batch_size", "2"]
    return {
        "example": [example, "--epochs", "12", "--seed", "42"],
        "example-from-epoch-40": [example, "--from-epoch", "40", "--epochs", "3", "--seed", "7"],
        "subjects": [subjects, "--epochs", "15", "--seed", "3"],
        "subjects-from-epoch-25": [subjects, "--from-epoch", "25", "--epochs", "4", "--seed", "3"],
        "stock": [stock, "--epochs", "4", "--seed", "1"],
        "dreambooth-folders": [*folders, "--epochs", "10", "--seed", "5"],
        "fine-tuning-metadata": [finetune, "--epochs", "10", "--seed", "9"],
    }


def plan_hashes() -> dict[str, str]:
    hashes = {}
    with tempfile.TemporaryDirectory(prefix="plan-hashes-") as root:
        root = os.path.realpath(root)
        # no configured checkout: fine-tuning metadata is read by the newest rules on every machine
        saved = {key: os.environ.get(key) for key in ("KOHYA_SD_SCRIPTS", "XDG_CONFIG_HOME")}
        os.environ.pop("KOHYA_SD_SCRIPTS", None)
        os.environ["XDG_CONFIG_HOME"] = os.path.join(root, "config-home")
        try:
            hashes = _hash_cases(root)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return hashes


def _hash_cases(root: str) -> dict[str, str]:
    hashes = {}
    for name, args in build_cases(root).items():
        schedule = os.path.join(root, f"{name}.jsonl")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            status = main(["plan", *args, "--schedule", schedule])
        if status != 0:
            raise SystemExit(f"plan-hashes: {name}: plan exited {status}: {err.getvalue().strip()}")
        with open(schedule, "rb") as handle:
            data = handle.read().replace(root.replace("\\", "/").encode(), b"ROOT").replace(root.encode(), b"ROOT")
        hashes[name] = hashlib.sha256(data).hexdigest()
    return hashes


def main_script(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="FILE", help="compare with saved hashes; exit 1 on any difference")
    args = parser.parse_args(argv)
    hashes = plan_hashes()
    if args.check:
        with open(args.check, encoding="utf-8") as handle:
            saved = json.load(handle)
        differ = sorted(k for k in saved.keys() | hashes.keys() if saved.get(k) != hashes.get(k))
        for name in differ:
            print(f"{name}: {saved.get(name)} -> {hashes.get(name)}")
        print("plans identical" if not differ else f"{len(differ)} of {len(saved)} plans differ")
        return 1 if differ else 0
    print(json.dumps(hashes, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main_script())
