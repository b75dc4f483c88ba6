"""No output ever overwrites an input.

Every option that writes a file (``plan --schedule/--plot/--html``, ``balance --write``'s backup,
training's ``--multiplier_schedule``, ``example``) checks its path here first, before any work:
it is refused, with the one-line error, when it is

* a directory (or a path ending in a separator),
* the dataset config itself (also through a link or another spelling of the same path), or
* anything inside a configured image folder (images, captions, ``multiply.txt``, sd-scripts'
  latent and text-encoder caches, sub-folders): a subset's ``image_dir``, or with DreamBooth
  folders the ``--train_data_dir`` / ``--reg_data_dir`` trees, or
* a fine-tuning subset's ``metadata_file`` (or ``--in_json``).

The inputs are read from the config file's text alone (``image_dir`` strings, resolved against
the current directory as sd-scripts resolves them), so the check costs no image reading and can
run before the config is interpreted. Pure Python: shared by the commands and the training adapter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

from kohya_multiplier.errors import UserError

STDOUT = "-"


@dataclass(frozen=True)
class InputPaths:
    """What outputs must never touch: the config file and the image folder trees."""

    config_file: str | None
    folders: tuple[str, ...]
    metadata_files: tuple[str, ...] = ()  # fine-tuning metadata (metadata_file, --in_json)


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(os.path.expanduser(path))))


def input_paths(config_file: str | None = None, *, train_data_dir: str | None = None,
                reg_data_dir: str | None = None, image_dirs: Iterable[str] = (), in_json: str | None = None) -> InputPaths:
    """The inputs of a run: the config file, the ``image_dir`` of each of its subsets (read from the
    file; an unreadable file contributes no folders: reading it later gives the real error), the
    DreamBooth base folders (used only without a config file, as sd-scripts uses them), and
    ``image_dirs`` given directly."""
    folders = [str(d) for d in image_dirs]
    metadata: list[str] = []
    if config_file is not None:
        named_folders, metadata = _inputs_named_in(config_file)
        folders.extend(named_folders)
    else:
        folders.extend(d for d in (train_data_dir, reg_data_dir) if d)
        metadata.extend([in_json] if in_json else [])
    return InputPaths(config_file, tuple(dict.fromkeys(folders)), tuple(dict.fromkeys(metadata)))


def with_config_folders(inputs: InputPaths, config: Any) -> InputPaths:
    """``inputs`` plus the folders a read config's subsets train from (a fine-tuning subset's are
    those of the images its metadata names), first: the check once the config is read."""
    folders = [folder for dataset in config.datasets for subset in dataset.subsets for folder in subset.image_folders]
    return InputPaths(inputs.config_file, tuple(dict.fromkeys([*folders, *inputs.folders])), inputs.metadata_files)


def _inputs_named_in(config_file: str) -> tuple[list[str], list[str]]:
    """The ``image_dir`` and ``metadata_file`` strings of the config's subsets."""
    from kohya_multiplier.config import read_config_file

    try:
        raw = read_config_file(config_file)
    except UserError:
        return [], []
    found, metadata = [], []
    datasets = raw.get("datasets") if isinstance(raw, dict) else None
    for dataset in datasets if isinstance(datasets, list) else []:
        subsets = dataset.get("subsets") if isinstance(dataset, dict) else None
        for subset in subsets if isinstance(subsets, list) else []:
            if isinstance(subset, dict) and isinstance(subset.get("image_dir"), str):
                found.append(subset["image_dir"])
            if isinstance(subset, dict) and isinstance(subset.get("metadata_file"), str):
                metadata.append(subset["metadata_file"])
    return found, metadata


def check_output_path(path: str | None, *, key: str, inputs: InputPaths) -> None:
    """Raise a one-line UserError (naming ``key``) if writing ``path`` could destroy an input.

    ``None`` (option not given) and ``-`` (stdout) pass.
    """
    if path is None or path == STDOUT:
        return
    shown = str(path)
    if shown.endswith(("/", os.sep)) or os.path.isdir(shown):
        raise UserError("is a directory; give a file name", file=shown, key=key)
    target = _real(shown)
    if inputs.config_file is not None and target == _real(inputs.config_file):
        raise UserError("is the dataset config; writing it would destroy the config", file=shown, key=key)
    if any(target == _real(m) for m in inputs.metadata_files):
        raise UserError("is a fine-tuning metadata file of the dataset; writing it would destroy it", file=shown, key=key)
    for folder in inputs.folders:
        base = _real(folder)
        if target == base or target.startswith(base.rstrip(os.sep) + os.sep):
            raise UserError(
                f"is inside the image folder {folder}, which training reads (images, captions, multiply.txt, "
                "caches); write it elsewhere",
                file=shown,
                key=key,
            )


def check_outputs(outputs: dict[str, Any], inputs: InputPaths) -> None:
    """Check several ``{key: path}`` outputs; two options naming the same file are refused too."""
    seen: dict[str, str] = {}
    for key, path in outputs.items():
        check_output_path(path, key=key, inputs=inputs)
        if path is None or path == STDOUT:
            continue
        real = _real(str(path))
        if real in seen:
            raise UserError(f"is also given to {seen[real]}; give each output its own file", file=str(path), key=key)
        seen[real] = key


def check_training_output(path: str | None, options: Any, *, key: str = "--multiplier_schedule") -> None:
    """Training's ``--multiplier_schedule FILE``, checked against the run's dataset options
    (``dataset_config``, ``train_data_dir``, ``reg_data_dir`` of a ``CommandLineOptions``) before
    the recorder opens (and truncates) the file."""
    inputs = input_paths(getattr(options, "dataset_config", None), train_data_dir=getattr(options, "train_data_dir", None),
                         reg_data_dir=getattr(options, "reg_data_dir", None), in_json=getattr(options, "in_json", None))
    check_output_path(path, key=key, inputs=inputs)
