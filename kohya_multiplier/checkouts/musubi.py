"""The installed musubi-tuner, without importing it: where it is, which revision its hooked code is,
and which of its training scripts run with multipliers.

A revision is recognised by the source of every function the adapter (``kohya_multiplier/musubi``)
hooks or relies on: each is hashed as written, and the hashes are compared with those of the tested
releases. An install whose hooked code differs is "untested": the run goes on with a warning, and
the adapter's run-time checks stop it in one line if a hook misses.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from kohya_multiplier.errors import UserError

PACKAGE = "musubi_tuner"

# (file under the package, qualified name) of every function the adapter hooks or whose behaviour
# it relies on.
HOOKED = (
    ("dataset/image_video_dataset.py", "BaseDataset.__getitem__"),
    ("dataset/image_video_dataset.py", "BaseDataset.set_current_epoch"),
    ("dataset/image_video_dataset.py", "BaseDataset.get_metadata"),
    ("dataset/image_video_dataset.py", "ImageDataset.prepare_for_training"),
    ("dataset/image_video_dataset.py", "ImageDataset.shuffle_buckets"),
    ("dataset/image_video_dataset.py", "ImageDataset.__getitem__"),
    ("dataset/image_video_dataset.py", "VideoDataset.prepare_for_training"),
    ("dataset/image_video_dataset.py", "VideoDataset.shuffle_buckets"),
    ("dataset/image_video_dataset.py", "VideoDataset.__getitem__"),
    ("dataset/image_video_dataset.py", "DatasetGroup.__init__"),
    ("dataset/bucket.py", "BucketSelector.__init__"),
    ("dataset/bucket.py", "BucketSelector.get_bucket_resolution"),
    ("dataset/bucket.py", "BucketBatchManager.__init__"),
    ("dataset/bucket.py", "BucketBatchManager.shuffle"),
    ("dataset/bucket.py", "BucketBatchManager.__getitem__"),
    ("dataset/config_utils.py", "generate_dataset_group_by_blueprint"),
    ("dataset/config_utils.py", "load_user_config"),
    ("training/accelerator_setup.py", "collator_class.__call__"),
    ("training/trainer_base.py", "NetworkTrainer.train"),
    ("training/trainer_base.py", "NetworkTrainer._init_session"),
    ("training/trainer_base.py", "NetworkTrainer._build_dataset"),
    ("training/trainer_base.py", "NetworkTrainer._run_training_loop"),
    ("training/trainer_base.py", "NetworkTrainer._build_optimizer_and_dataloader"),
    ("training/trainer_base.py", "NetworkTrainer.process_batch"),
)

# The tested releases: release -> {qualified name: hash of its source} (hooked_hashes of its package).
KNOWN: dict[str, dict[str, str]] = {
    "v0.3.4 (30c658c)": {
        "BaseDataset.__getitem__": "1ac7d109a57fbb6a",
        "BaseDataset.set_current_epoch": "a91cf06e6a031e38",
        "BaseDataset.get_metadata": "b96c35adf68035cf",
        "ImageDataset.prepare_for_training": "01c6c31ee75623d2",
        "ImageDataset.shuffle_buckets": "ff93361bb64a78b3",
        "ImageDataset.__getitem__": "70005bf5519e5614",
        "VideoDataset.prepare_for_training": "8d4eff19d5adc0ba",
        "VideoDataset.shuffle_buckets": "ff93361bb64a78b3",
        "VideoDataset.__getitem__": "70005bf5519e5614",
        "DatasetGroup.__init__": "697fd3af8cbd63c9",
        "BucketSelector.__init__": "eb15e7048f8df7eb",
        "BucketSelector.get_bucket_resolution": "99347b1234fe3a2a",
        "BucketBatchManager.__init__": "6b7387b487cbd5e8",
        "BucketBatchManager.shuffle": "c619a0d049ff3cf7",
        "BucketBatchManager.__getitem__": "30b845408a91d0ff",
        "generate_dataset_group_by_blueprint": "f0562168d69144cd",
        "load_user_config": "7a0ac18628a6d19e",
        "collator_class.__call__": "97ea1a9c912c0996",
        "NetworkTrainer.train": "f48f0a420a1569e9",
        "NetworkTrainer._init_session": "3b1f825840979647",
        "NetworkTrainer._build_dataset": "84dcab0feb175d2a",
        "NetworkTrainer._run_training_loop": "cfac522ea27baf0b",
        "NetworkTrainer._build_optimizer_and_dataloader": "f3b7b2d3ea1b8f6f",
        "NetworkTrainer.process_batch": "74319a9f35cfa9b4",
    },
}

# The LoRA training scripts (each a NetworkTrainer of training/trainer_base.py, which builds its
# datasets through dataset/config_utils.py) and what each trains.
SCRIPTS = {
    "wan_train_network": "Wan 2.1 / 2.2", "hv_train_network": "HunyuanVideo", "hv_1_5_train_network": "HunyuanVideo 1.5",
    "fpack_train_network": "FramePack", "flux_kontext_train_network": "FLUX.1 Kontext", "flux_2_train_network": "FLUX.2",
    "qwen_image_train_network": "Qwen-Image (and Edit, Layered)", "zimage_train_network": "Z-Image",
    "kandinsky5_train_network": "Kandinsky 5", "hidream_o1_train_network": "HiDream-O1", "ideogram4_train_network": "Ideogram 4",
    "krea2_train_network": "Krea 2",
}
TRAINED_BY_THE_SUITE = ("wan_train_network", "zimage_train_network")
# musubi's caching scripts read the same dataset config: wrapped, they see it without our keys.
CACHING_SUFFIXES = ("cache_latents", "cache_text_encoder_outputs", "cache_pixel")


@dataclass(frozen=True)
class MusubiInstall:
    root: Path  # the musubi_tuner package folder
    version: str  # what its metadata says, or "unknown"

    def hashes(self) -> dict[str, str]:
        return hooked_hashes(self.root)

    def revision(self) -> tuple[str | None, str | None]:
        """(the tested release it matches, or None; the first hooked function that differs from
        the newest tested release, or None)."""
        mine = self.hashes()
        for release, known in KNOWN.items():
            if known and mine == known:
                return release, None
        newest = next(iter(KNOWN.values()))
        differs = next((name for name in newest if mine.get(name) != newest[name]), None)
        return None, differs


def find_install() -> MusubiInstall:
    """The musubi_tuner package this Python imports; a one-line error when there is none."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("musubi-tuner is not installed in this Python: install kohya-multiplier into musubi-tuner's "
                        "environment (pip install kohya-multiplier, with that venv active)")
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        from importlib.metadata import version

        found = version("musubi-tuner")
    except Exception:  # not installed as a distribution (a checkout on sys.path)
        found = "unknown"
    return MusubiInstall(root, found)


def configured_python() -> Path | None:
    """The musubi-tuner Python ``configure --musubi`` remembered, or None."""
    from kohya_multiplier.checkouts.locate import read_user_config

    value = read_user_config(required=False).get("musubi_python")
    return Path(value) if isinstance(value, str) and value else None


def version_in(python: Path) -> str:
    """The musubi-tuner version that ``python`` imports; a one-line error when it has none."""
    import subprocess

    if not python.exists():
        raise UserError(f"{str(python)!r} does not exist", key="--musubi")
    probe = "import importlib.metadata as m, musubi_tuner; print(m.version('musubi-tuner'))"
    try:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UserError(f"cannot run {python}: {error}", key="--musubi") from None
    if done.returncode != 0:
        raise UserError(f"{python} cannot import musubi_tuner: install musubi-tuner in that environment", key="--musubi")
    return done.stdout.strip() or "unknown"


def hooked_hashes(root: Path) -> dict[str, str]:
    """{qualified name: sha256 of its source, 16 hex digits} of each hooked function ("missing"
    when the file or the function is not there)."""
    trees: dict[str, tuple[str, ast.Module] | None] = {}
    result = {}
    for file, name in HOOKED:
        if file not in trees:
            trees[file] = _parse(root / file)
        parsed = trees[file]
        source = _function_source(*parsed, name) if parsed is not None else None
        result[name] = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16] if source is not None else "missing"
    return result


def _parse(path: Path) -> tuple[str, ast.Module] | None:
    try:
        text = path.read_text(encoding="utf-8")
        return text, ast.parse(text)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _function_source(text: str, tree: ast.Module, qualified: str) -> str | None:
    body = tree.body
    node = None
    for part in qualified.split("."):
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part), None)
        if node is None:
            return None
        body = node.body
    return ast.get_source_segment(text, node)


def script_module(word: str) -> str:
    """The module of a LoRA training or caching script given as ``wan_train_network``,
    ``wan_train_network.py`` or ``musubi_tuner.wan_train_network``; a one-line error for others."""
    name = os.path.basename(word)
    name = name[: -len(".py")] if name.endswith(".py") else name
    name = name.split(".")[-1]
    if name.endswith(CACHING_SUFFIXES):
        return f"{PACKAGE}.{name}"
    if name not in SCRIPTS:
        raise UserError(f"{word!r} is not a musubi-tuner script kohya-multiplier runs: a caching script "
                        "(..._cache_latents, ..._cache_text_encoder_outputs) or one of " + ", ".join(sorted(SCRIPTS)), key="SCRIPT")
    return f"{PACKAGE}.{name}"
