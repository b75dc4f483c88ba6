"""Datasets, training runs and dry runs for the integration tests."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pngs import write_images

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_TIMEOUT = 600

# The generated dataset: (folder, images, (w, h)). Sizes give three buckets at resolution 128.
SUBJECTS = {
    "alice": (6, (128, 128)),  # multiplier 0.5 (fractional)
    "bob": (4, (192, 64)),  # multiplier 2 (integer)
    "carol": (3, (128, 128)),  # multiplier 0 (excluded)
    "dave": (5, (64, 192)),  # multiply.txt 0.4
}
REG = ("person", 4, (128, 128))  # regularization, automatic multiplier
DAVE_MULTIPLY_TXT = "0.4"

BUCKET_OPTIONS = {"enable_bucket": True, "min_bucket_reso": 64, "max_bucket_reso": 256, "bucket_reso_steps": 64}


def model_args(sd) -> list[str]:
    return [
        "--pretrained_model_name_or_path", str(sd.tiny_dir / "model"),
        "--tokenizer_cache_dir", str(sd.tiny_dir / "tokenizers"),
        "--mixed_precision", "no",
        "--optimizer_type", "AdamW",
        "--learning_rate", "1e-4",
        "--save_model_as", "safetensors",
        "--output_name", "out",
        "--console_log_simple",
    ]


LORA_ARGS = ["--network_module", "networks.lora", "--network_dim", "4", "--network_alpha", "1"]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_images_tree(root: Path) -> dict[str, Path]:
    """The images of every subject and the regularization folder under ``root``; returns folders."""
    folders = {}
    for seed, (name, (count, size)) in enumerate(SUBJECTS.items(), start=1):
        folders[name] = root / "train" / name
        write_images(folders[name], count, size, seed=seed, caption=f"photo of {name}")
    (folders["dave"] / "multiply.txt").write_text(DAVE_MULTIPLY_TXT + "\n")
    name, count, size = REG
    folders[name] = root / "reg" / name
    write_images(folders[name], count, size, seed=9, caption="photo of a person")
    return folders


def write_config(
    root: Path,
    *,
    batch_size: int,
    multipliers: bool = True,
    dataset_extra: dict | None = None,
    subset_extra: dict[str, dict] | None = None,
    name: str = "dataset.toml",
) -> Path:
    """A dataset TOML over the images of :func:`write_images_tree` (which must exist under root)."""
    lines = ["[general]", 'caption_extension = ".txt"']
    lines += [f"{k} = {_toml_value(v)}" for k, v in BUCKET_OPTIONS.items()]
    lines += ["", "[[datasets]]", "resolution = 128", f"batch_size = {batch_size}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (dataset_extra or {}).items()]
    own = {"alice": {"multiplier": 0.5}, "bob": {"multiplier": 2}, "carol": {"multiplier": 0.0}, "dave": {}}
    if not multipliers:
        own = {"alice": {"num_repeats": 1}, "bob": {"num_repeats": 2}, "carol": {"num_repeats": 1}, "dave": {}}
    for subject in SUBJECTS:
        if not multipliers and subject == "dave":
            continue  # its multiply.txt would make a multiplier
        lines += ["", "  [[datasets.subsets]]", f"  image_dir = {json.dumps(str(root / 'train' / subject))}"]
        keys = {**own[subject], **(subset_extra or {}).get(subject, {})}
        lines += [f"  {k} = {_toml_value(v)}" for k, v in keys.items()]
    lines += ["", "  [[datasets.subsets]]", f"  image_dir = {json.dumps(str(root / 'reg' / REG[0]))}", "  is_reg = true"]
    lines += [f"  {k} = {_toml_value(v)}" for k, v in (subset_extra or {}).get(REG[0], {}).items()]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Run:
    returncode: int
    output: str  # stdout and stderr together
    records: list[dict] = field(default_factory=list)
    output_dir: Path | None = None

    def check(self) -> "Run":
        assert self.returncode == 0, f"training failed ({self.returncode}):\n{self.output[-6000:]}"
        return self


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(sd, command: str, args: list[str], out: Path, *, schedule: bool = True, launcher: list[str] | None = None, stock: bool = False) -> Run:
    """Run the wrapper (``python -m kohya_multiplier COMMAND``) or, with ``stock``, the bare script."""
    out.mkdir(parents=True, exist_ok=True)
    schedule_path = out / "schedule.jsonl"
    if stock:
        program = [str(Path(sd.root) / f"{command}.py")]
    else:
        program = ["-m", "kohya_multiplier", command, "--sd-scripts", str(sd.root)]
        if schedule:
            program += ["--multiplier_schedule", str(schedule_path)]
    head = [*launcher] if launcher else [sd.python]
    full = [*head, *program, *model_args(sd), "--output_dir", str(out), *args]
    result = subprocess.run(full, capture_output=True, text=True, env=sd.env(), cwd=str(out), timeout=TRAIN_TIMEOUT)
    output = result.stdout + "\n" + result.stderr
    (out / "train.log").write_text(" ".join(full) + "\n\n" + output)
    return Run(result.returncode, output, read_records(schedule_path), out)


def dry_run(args: list[str], schedule: Path) -> tuple[list[dict], subprocess.CompletedProcess]:
    """``kohya-multiplier plan ... --schedule FILE`` from this repository, in the test's Python."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "kohya_multiplier", "plan", *args, "--schedule", str(schedule)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return read_records(schedule), result


def canonical(records: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def per_epoch(records: list[dict]) -> Counter:
    return Counter(r["epoch"] for r in records)


def printed_int(output: str, label: str) -> int:
    """A number sd-scripts prints as ``label / <Japanese>: N`` (or ``label: N``)."""
    match = re.search(re.escape(label) + r"[^:\n]*:\s*(\d+)", output)
    assert match, f"{label!r} not in the output"
    return int(match.group(1))


def safetensors_header(path: Path) -> dict:
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(size))


def safetensors_tensor_bytes(path: Path) -> tuple[dict, bytes]:
    """(tensor entries without metadata, the raw tensor data): what training produced, minus timestamps."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
        data = handle.read()
    header.pop("__metadata__", None)
    return header, data
