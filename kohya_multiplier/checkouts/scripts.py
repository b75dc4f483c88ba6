"""Which training scripts a checkout has, and which of them the wrapper can run. Torch-free.

Found in the configured checkout, not listed by hand: a top-level script is supported when it
builds its datasets through ``library/config_util`` (it calls ``BlueprintGenerator`` /
``generate_dataset_group_by_blueprint``, or imports a sibling script that does, as the
``*_train_network.py`` scripts import ``train_network``). Scripts with conditioning datasets
(ControlNet, LLLite) are supported the same way: sd-scripts' ControlNetDataset registers and serves
its images through a DreamBoothDataset, which the hooks make the planned dataset, and pairs each
served image with its conditioning image. Anything else named like a training script does not
build datasets the way the hooks expect and is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kohya_multiplier.errors import UserError

_BUILDS_DATASETS = re.compile(r"\bBlueprintGenerator\b|\bgenerate_dataset_group_by_blueprint\b")
_IMPORTS_SIBLING = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_][A-Za-z0-9_]*)\b", re.MULTILINE)
_CONDITIONING = re.compile(r"conditioning_data_dir|ControlNetSubset|ControlNetDataset|support_controlnet|lllite", re.IGNORECASE)
_TRAINING_NAME = re.compile(r"train|tune")

# Scripts the integration suite trains for real (README, "Supported scripts and revisions").
SUITE_TRAINS = {
    "train_network": ("c162e90", "main 48d368fa", "v0.11.1", "v0.9.1"),
    "train_db": ("c162e90", "main 48d368fa", "v0.11.1", "v0.9.1"),
    "sdxl_train_network": ("c162e90", "main 48d368fa", "v0.11.1", "v0.9.1"),
    "sdxl_train": ("c162e90", "main 48d368fa", "v0.11.1"),
    "flux_train_network": ("c162e90", "main 48d368fa", "v0.11.1"),
    "anima_train_network": ("c162e90", "v0.11.1"),
    "anima_train": ("c162e90", "v0.11.1"),
    "lumina_train_network": ("c162e90", "v0.11.1"),
    "lumina_train": ("c162e90", "v0.11.1"),
    "sd3_train_network": ("c162e90", "v0.11.1"),
    "sd3_train": ("c162e90", "v0.11.1"),
    "flux_train": ("c162e90", "v0.11.1"),
    "train_textual_inversion": ("c162e90", "v0.11.1"),
    "sdxl_train_textual_inversion": ("c162e90", "v0.11.1"),
    "hunyuan_image_train_network": ("c162e90", "v0.11.1"),
    "fine_tune": ("c162e90", "main 48d368fa", "v0.11.1", "v0.9.1"),  # fine-tuning (metadata_file) datasets
    "sdxl_train_control_net_lllite": ("c162e90", "v0.11.1"),  # conditioning (conditioning_data_dir) datasets
}


@dataclass(frozen=True)
class Script:
    name: str  # without .py
    path: Path
    supported: bool
    reason: str  # how it builds datasets, or why it is refused

    @property
    def suite_trains(self) -> tuple[str, ...]:
        return SUITE_TRAINS.get(self.name, ())


def read_text(path: Path) -> str:
    """A source file's text; empty when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def discover(root: Path) -> list[Script]:
    """Every top-level training script of the checkout, supported or not, by name."""
    root = Path(root)
    texts = {p.stem: read_text(p) for p in sorted(root.glob("*.py")) if p.is_file() and p.stem != "setup"}
    direct = {name for name, text in texts.items() if _BUILDS_DATASETS.search(text)}
    found = []
    for name, text in texts.items():
        conditioning = bool(_CONDITIONING.search(text)) or bool(re.search(r"control_?net", name))
        via = [m for m in _IMPORTS_SIBLING.findall(text) if m in direct and m != name]
        builds = name in direct or bool(via)
        if not builds and not _TRAINING_NAME.search(name):
            continue  # inference and tools: not training scripts
        if conditioning and builds:
            found.append(Script(name, root / f"{name}.py", True, "builds its conditioning (ControlNet/LLLite) datasets through "
                                + ("library/config_util" if name in direct else f"{via[0]}.py")))
        elif name in direct:
            found.append(Script(name, root / f"{name}.py", True, "builds its datasets through library/config_util"))
        elif via:
            found.append(Script(name, root / f"{name}.py", True, f"builds its datasets through {via[0]}.py"))
        else:
            found.append(Script(name, root / f"{name}.py", False, "does not build its datasets through library/config_util"))
    return found


def applies_loss_weights(path: Path) -> bool:
    """Whether the script multiplies each example's loss by ``batch["loss_weights"]`` (itself or
    through the sibling script it builds on); sdxl_train.py and fine_tune.py do not."""
    path = Path(path)
    text = read_text(path)
    if "loss_weights" in text:
        return True
    siblings = [m for m in _IMPORTS_SIBLING.findall(text) if (path.parent / f"{m}.py").is_file() and m != path.stem]
    return any("loss_weights" in read_text(path.parent / f"{m}.py") for m in siblings)


def looks_like_script_name(word: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.py)?", word)) and bool(_TRAINING_NAME.search(word))


def require_trainable(root: Path, word: str) -> Script:
    """The script ``word`` (``train_network`` or ``train_network.py``) of the checkout, or a one-line error."""
    name = word[: -len(".py")] if word.endswith(".py") else word
    by_name = {s.name: s for s in discover(root)}
    script = by_name.get(name)
    if script is None:
        if (Path(root) / f"{name}.py").is_file():
            raise UserError(f"{name}.py in {str(root)!r} is not a training script kohya-multiplier can run")
        raise UserError(f"{name}.py is not in the sd-scripts checkout {str(root)!r} (this revision lacks it)")
    if not script.supported:
        raise UserError(f"{name}.py cannot be run with multipliers: {script.reason}")
    return script
