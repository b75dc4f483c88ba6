"""sd-scripts' training config file (``--config_file FILE``), as sd-scripts reads it. Torch-free.

The kohya_ss GUI writes one for every run: a TOML whose tables (any names) hold sd-scripts'
command-line options, among them ``dataset_config``. sd-scripts flattens all tables into one set
of values (a key outside any table counts too), appends ``.toml`` when the name lacks it, and uses
the values as defaults: an option given on the command line wins. ``plan --config_file`` reads it
the same way, so the dry run shows the exact run the GUI is about to launch.
"""

from __future__ import annotations

import sys
from typing import Any

from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.multipliers import describe_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Options the dry run uses, with the type sd-scripts' parser gives them.
_INT = int
_FLOAT = float
_STR = str
_BOOL = bool
OPTION_TYPES: dict[str, type] = {
    "dataset_config": _STR,
    "train_data_dir": _STR,
    "reg_data_dir": _STR,
    "in_json": _STR,
    "train_batch_size": _INT,
    "resolution": _STR,
    "enable_bucket": _BOOL,
    "min_bucket_reso": _INT,
    "max_bucket_reso": _INT,
    "bucket_reso_steps": _INT,
    "bucket_no_upscale": _BOOL,
    "dataset_repeats": _INT,
    "caption_extension": _STR,
    "cache_info": _BOOL,
    "validation_split": _FLOAT,
    "validation_seed": _INT,
    "skip_image_resolution": _STR,
    "seed": _INT,
    "max_train_epochs": _INT,
    "max_train_steps": _INT,
    "gradient_accumulation_steps": _INT,
}


def config_file_path(value: str) -> str:
    return value if value.endswith(".toml") else value + ".toml"


def read_training_config(value: str) -> dict[str, Any]:
    """The options of the file that the dry run uses, checked for their types (one-line errors)."""
    path = config_file_path(value)
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise UserError("not found", file=path, key="--config_file") from None
    except OSError as error:
        raise UserError(f"cannot be read: {error.strerror or error}", file=path) from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"is not valid TOML: {error}", file=path) from None
    flat: dict[str, Any] = {}
    for name, value_ in raw.items():
        if isinstance(value_, dict):
            flat.update(value_)
        else:
            flat[name] = value_
    found: dict[str, Any] = {}
    for key, kind in OPTION_TYPES.items():
        if key not in flat or flat[key] is None:
            continue
        found[key] = _checked(flat[key], kind, path, key)
    return found  # paths stay as written: sd-scripts opens them relative to the working directory


def _checked(value: Any, kind: type, path: str, key: str) -> Any:
    if kind is _BOOL:
        if isinstance(value, bool):
            return value
        raise UserError(f"must be true or false, not {describe_value(value)}", file=path, key=key)
    if kind is _INT:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"must be an integer, not {describe_value(value)}", file=path, key=key)
    if kind is _FLOAT:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"must be a number, not {describe_value(value)}", file=path, key=key)
    if isinstance(value, (list, tuple)) and key in ("resolution", "skip_image_resolution"):
        return ",".join(str(v) for v in value)
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise UserError(f"must be a string, not {describe_value(value)}", file=path, key=key)


def apply_defaults(args: Any, values: dict[str, Any]) -> None:
    """Fill the namespace's options the command line left unset (None) from the file."""
    for key, value in values.items():
        if key == "dataset_config":
            if getattr(args, "config", None) is None:
                args.config = value
            continue
        if getattr(args, key, None) is None:
            setattr(args, key, value)
