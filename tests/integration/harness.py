"""Datasets, training runs and dry runs for the integration tests."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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


# Every run: CPU-friendly precision and optimizer, a fixed output name, plain logging (the rich
# handler draws from the global `random` that sd-scripts also shuffles with).
COMMON_TRAIN_ARGS = [
    "--mixed_precision", "no",
    "--optimizer_type", "AdamW",
    "--learning_rate", "1e-4",
    "--save_model_as", "safetensors",
    "--output_name", "out",
    "--console_log_simple",
]

# Set to a file name to collect one JSON line per training run (wall time, peak RSS).
METRICS_ENV = "KOHYA_MULTIPLIER_RUN_METRICS"

# The labels of the configured checkouts the suite runs on (conftest.py fills it at collection).
USABLE_CHECKOUTS: list[str] = []
NEWEST_TESTED = "c162e90"


def one_checkout_only(sd, what: str) -> None:
    """Skip ``what`` on all but one checkout (the newest tested revision when configured, else the
    first): for checks whose code path is the same at every revision, to keep CI inside its budget."""
    chosen = NEWEST_TESTED if NEWEST_TESTED in USABLE_CHECKOUTS else (USABLE_CHECKOUTS or [sd.label])[0]
    if sd.label != chosen:
        pytest.skip(f"CI time: {what} runs on one checkout only ({chosen})")


def model_args(sd) -> list[str]:
    return [
        "--pretrained_model_name_or_path", str(sd.tiny_dir / "model"),
        "--tokenizer_cache_dir", str(sd.tiny_dir / "tokenizers"),
        *COMMON_TRAIN_ARGS,
    ]


@dataclass
class TinyModel:
    """A tiny model built for one checkout: the arguments that load it and the environment that
    makes sd-scripts build its shapes (tiny_hook/sitecustomize.py)."""

    family: str  # "sdxl", "flux"
    folder: Path
    args: list[str]
    env: dict[str, str]


LORA_ARGS = ["--network_module", "networks.lora", "--network_dim", "4", "--network_alpha", "1"]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):  # an inline table (a schedule: { 1 = 0.5, 4 = 1.5 })
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
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
    wall_s: float | None = None
    peak_rss_mb: float | None = None  # the largest process of the run (the script or a worker)

    def check(self) -> "Run":
        assert self.returncode == 0, f"training failed ({self.returncode}):\n{self.output[-6000:]}"
        return self


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(
    sd,
    command: str,
    args: list[str],
    out: Path,
    *,
    schedule: bool = True,
    launcher: list[str] | None = None,
    stock: bool = False,
    tiny: TinyModel | None = None,
    env: dict | None = None,
) -> Run:
    """Run the wrapper (``python -m kohya_multiplier COMMAND``) or, with ``stock``, the bare script.

    The model is the checkout's tiny SD1.x model unless ``tiny`` names another one; ``env`` adds
    environment variables (the test-only hooks of tiny_hook/).
    """
    out.mkdir(parents=True, exist_ok=True)
    schedule_path = out / "schedule.jsonl"
    if stock:
        program = [str(Path(sd.root) / f"{command}.py")]
    else:
        program = ["-m", "kohya_multiplier", command, "--sd-scripts", str(sd.root)]
        if schedule:
            program += ["--multiplier_schedule", str(schedule_path)]
    head = [*launcher] if launcher else [sd.python]
    model = [*tiny.args, *COMMON_TRAIN_ARGS] if tiny else model_args(sd)
    full = [*head, *program, *model, "--output_dir", str(out), *args]
    env = sd.env(**(tiny.env if tiny else {}), **(env or {}))
    returncode, output, wall, peak_rss_mb = _run_measured(full, env=env, cwd=out)
    (out / "train.log").write_text(" ".join(full) + "\n\n" + output + f"\n\nwall {wall:.1f} s, peak RSS {peak_rss_mb:.0f} MB\n")
    metrics = os.environ.get(METRICS_ENV)
    if metrics:
        line = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], "checkout": sd.label, "command": command,
                "stock": stock, "rc": returncode, "wall_s": round(wall, 1), "peak_rss_mb": round(peak_rss_mb)}
        with open(metrics, "a") as handle:
            handle.write(json.dumps(line) + "\n")
    return Run(returncode, output, read_records(schedule_path), out, wall, peak_rss_mb)


def _run_measured(command: list[str], *, env: dict, cwd: Path) -> tuple[int, str, float, float]:
    """(exit status, stdout then stderr, wall seconds, peak RSS in MB) of one run, killed after TRAIN_TIMEOUT.

    os.wait4 gives the child's own resource usage; its maximum RSS covers the child and the
    processes it waited for (DataLoader workers).
    """
    stdout_path, stderr_path = cwd / "stdout.tmp", cwd / "stderr.tmp"
    killed = []
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=str(cwd), start_new_session=True)

        def kill_run() -> None:
            killed.append(True)
            try:
                os.killpg(process.pid, 9)
            except ProcessLookupError:
                pass

        killer = threading.Timer(TRAIN_TIMEOUT, kill_run)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # interrupted test: the run has its own session, so stop it here
            kill_run()
            raise
        finally:
            killer.cancel()
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    output = stdout_path.read_text(errors="replace") + "\n" + stderr_path.read_text(errors="replace")
    stdout_path.unlink()
    stderr_path.unlink()
    if killed:
        output += f"\n[killed after {TRAIN_TIMEOUT} s]"
    return process.returncode, output, wall, usage.ru_maxrss / 1024


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


def images_per_subject(records: list[dict]) -> Counter:
    """How often each image folder (subject) was trained, from schedule records."""
    return Counter(Path(image).parent.name for record in records for image in record["images"])


def assert_subject_counts(records: list[dict], epochs: int) -> None:
    """The multipliers of :func:`write_config` reached training: integer part exact, fraction
    rounded per epoch, zero excluded, multiply.txt read."""
    counts = images_per_subject(records)
    assert counts["carol"] == 0, "a subset with multiplier 0 was trained"
    assert counts["bob"] == 2 * SUBJECTS["bob"][0] * epochs, counts
    assert counts["alice"] == SUBJECTS["alice"][0] // 2 * epochs, counts
    assert abs(counts["dave"] - 0.4 * SUBJECTS["dave"][0] * epochs) <= 1, counts
    assert counts[REG[0]] > 0, counts


def assert_lora_metadata_has_multipliers(path: Path, records: list[dict], epochs: int) -> None:
    """sd-scripts' ss_* metadata of a LoRA says the multipliers, not the integer repeats."""
    metadata = safetensors_header(path)["__metadata__"]
    dirs = json.loads(metadata["ss_dataset_dirs"])
    assert dirs["alice"] == {"n_repeats": 0.5, "img_count": SUBJECTS["alice"][0]}, dirs
    assert dirs["bob"]["n_repeats"] == 2, dirs
    assert dirs["dave"]["n_repeats"] == float(DAVE_MULTIPLY_TXT), dirs
    assert "carol" not in dirs, dirs
    assert int(metadata["ss_num_batches_per_epoch"]) == len(records) // epochs
    if "ss_datasets" in metadata:
        subsets = json.loads(metadata["ss_datasets"])[0]["subsets"]
        assert {s["image_dir"].split("/")[-1]: s["num_repeats"] for s in subsets}["alice"] == 0.5


def safetensors_tensors(path: Path) -> dict[str, bytes]:
    """Every tensor of a safetensors file as its raw bytes, by name."""
    header, data = safetensors_tensor_bytes(path)
    return {name: data[entry["data_offsets"][0] : entry["data_offsets"][1]] for name, entry in header.items()}


def assert_schedule_is_the_dry_run(run: Run, planned: list[dict], epochs: int) -> None:
    """The run trained exactly the dry run's batches, and each subject as often as its multiplier says."""
    assert planned, "the dry run planned nothing"
    assert canonical(run.records) == canonical(planned)
    assert_subject_counts(run.records, epochs)


def assert_epochs_have_the_printed_length(run: Run, planned: list[dict], epochs: int, batch_size: int = 2) -> None:
    """Every epoch has the plan's length, and sd-scripts prints that length, the epochs and the steps."""
    length = len(planned) // epochs
    assert per_epoch(run.records) == {e: length for e in range(1, epochs + 1)}
    assert printed_int(run.output, "num batches per epoch") == length
    assert printed_int(run.output, "num epochs") == epochs
    assert printed_int(run.output, "total optimization steps") == epochs * length
    assert all(1 <= len(r["images"]) <= batch_size for r in run.records)


def train_and_plan(sd, command: str, config: Path, out: Path, extra: list[str], *, tiny: TinyModel | None = None,
                   epochs: int, seed: int) -> tuple[Run, list[dict]]:
    """Train ``command`` on ``config`` for ``epochs`` with ``--seed seed`` and plan the same epochs
    dry: the run (checked) and the dry run's records."""
    args = ["--dataset_config", str(config), "--seed", str(seed), "--max_train_epochs", str(epochs), *extra]
    run = train(sd, command, args, out, tiny=tiny).check()
    planned, _ = dry_run([str(config), "--seed", str(seed), "--epochs", str(epochs)], out / "dry-run.jsonl")
    return run, planned
