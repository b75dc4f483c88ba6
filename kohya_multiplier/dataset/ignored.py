"""Say what was ignored, once, before the table (issue 11, point 5).

Each function returns the note (or notes) that ``TrainingConfig.notes`` carries; ``plan`` and
training print the notes once, before the balance table:

* DreamBooth folders sd-scripts drops: no repeat prefix it accepts (``alice``, ``x_alice``,
  ``-0.5_alice``) or an integer prefix below 1 (``0_alice``, ``-2_alice``);
* a ``multiply.txt`` that loses to a multiplier or num_repeats set in the subset's own table, or
  to a multiplier inherited from its dataset or ``[general]``;
* a regularization subset that inherits a dataset-level or ``[general]`` multiplier, so the
  automatic regularization rule does not apply to it;
* command-line options the config overrides (sd-scripts' precedence: a value in the config wins).
"""

from __future__ import annotations

from typing import Any, Mapping

from kohya_multiplier.dataset.schedules import describe_rate
from kohya_multiplier.dataset.multipliers import MULTIPLY_TXT, format_number


def dropped_folder(path: str, repeats: int | None) -> str:
    if repeats is None:
        reason = "the folder name has no repeat prefix sd-scripts accepts, such as 10_name or 0.25_name"
    else:
        reason = f"its repeat prefix {repeats} is below 1"
    return f"{path}: ignored: {reason} (sd-scripts ignores it too)"


def lost_multiply_txt(prefix: str, where: str, origin: str, multiplier, num_repeats: int) -> str:
    """A multiply.txt the precedence rules overrule (origin: the level that decided)."""
    level = {"subset": "its own table", "folder name": "its folder name", "dataset": "its [[datasets]] table",
             "general": "[general]"}.get(origin, origin)
    setting = f"multiplier {describe_rate(multiplier)}" if multiplier is not None else f"num_repeats {num_repeats}"
    return f"{prefix}{where}: {MULTIPLY_TXT} ignored: {setting} from {level} wins"


def inherited_regularization(prefix: str, where: str, origin: str, multiplier) -> str:
    level = "[general]" if origin == "general" else "its [[datasets]] table"
    return (f"{prefix}{where}: regularization subset takes multiplier {describe_rate(multiplier)} from {level}, not the "
            "automatic regularization rule (which applies only to regularization subsets without any multiplier; "
            "num_repeats = 1 in its own table brings the rule back)")


# sd-scripts' command-line option -> the config key that overrides it, and the levels that can set it.
_OVERRIDES = (
    ("train_batch_size", "batch_size", ("general", "datasets")),
    ("resolution", "resolution", ("general", "datasets")),
    ("enable_bucket", "enable_bucket", ("general", "datasets")),
    ("min_bucket_reso", "min_bucket_reso", ("general", "datasets")),
    ("max_bucket_reso", "max_bucket_reso", ("general", "datasets")),
    ("bucket_reso_steps", "bucket_reso_steps", ("general", "datasets")),
    ("bucket_no_upscale", "bucket_no_upscale", ("general", "datasets")),
    ("validation_split", "validation_split", ("general", "datasets")),
    ("validation_seed", "validation_seed", ("general", "datasets")),
    ("skip_image_resolution", "skip_image_resolution", ("general", "datasets")),
    ("caption_extension", "caption_extension", ("general", "datasets", "subsets")),
    ("cache_info", "cache_info", ("general", "datasets", "subsets")),
)


# sd-scripts' argparse defaults: training sees them as values even when the user gave none, so an
# option at its default (or a flag that is off) is not named as overridden.
_SD_DEFAULTS = {"train_batch_size": 1, "min_bucket_reso": 256, "max_bucket_reso": 1024, "bucket_reso_steps": 64,
                "validation_split": 0.0, "caption_extension": ".caption"}


def overridden_options(raw: Any, options: Any, prefix: str) -> list[str]:
    """One note naming every command-line option that the config overrides, and where (options at
    sd-scripts' default value, and flags that are off, count as not given)."""
    if not isinstance(raw, Mapping):
        return []
    general = raw.get("general") if isinstance(raw.get("general"), Mapping) else {}
    datasets = [d for d in raw.get("datasets") or [] if isinstance(d, Mapping)] if isinstance(raw.get("datasets"), list) else []
    found = []
    for option, key, levels in _OVERRIDES:
        value = getattr(options, option, None)
        if value is None or value is False or (option in _SD_DEFAULTS and value == _SD_DEFAULTS[option]):
            continue
        places = []
        if "general" in levels and general.get(key) is not None:
            places.append("[general]")
        for index, dataset in enumerate(datasets):
            if dataset.get(key) is not None:
                places.append(f"datasets[{index}]")
            elif "subsets" in levels:
                subsets = dataset.get("subsets") if isinstance(dataset.get("subsets"), list) else []
                places.extend(f"datasets[{index}].subsets[{s}]" for s, sub in enumerate(subsets)
                              if isinstance(sub, Mapping) and sub.get(key) is not None)
        if places:
            shown = "on" if value is True else str(value)
            found.append(f"--{option} {shown} (by {key} in {', '.join(places)})")
    if not found:
        return []
    return [f"{prefix}the config overrides " + "; ".join(found) + " (as in sd-scripts, a value in the config wins)"]
