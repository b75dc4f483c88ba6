"""Hooks kohya-multiplier into an imported sd-scripts, before its training script runs.

Every hook is put where the code that uses the name looks it up (``hookpoints.py``), so the v0.11
split of train_util.py is followed, and every hook is recorded on the session so that the
self-check (``selfcheck.py``) can verify, once the datasets are built and before any model loads,
that each one took effect. train_util's classes stay bound to themselves (only callers' names are
replaced), so everything keeps pickling into ``spawn`` workers:

- ``ConfigSanitizer.SUBSET_ASCENDABLE_SCHEMA`` gains ``multiplier`` (in place: scripts build their
  sanitizer later), so subsets, datasets and [general] accept it;
- ``prepare_dataset_args`` (every script calls it before it builds a dataset or loads a model;
  train_util at v0.9/v0.10, accelerator_setup at v0.11) also reads the dataset config with
  kohya-multiplier's core loader: the same validation and one-line errors as the dry run;
- ``generate_dreambooth_subsets_config_by_subdirs`` reads ``0.25_name`` folders;
- ``DreamBoothDataset``, ``FineTuningDataset`` and ``ControlNetDataset``, where
  ``generate_dataset_group_by_blueprint`` looks them up, become the planned datasets (the
  ControlNet one plans through its internal DreamBoothDataset), and ``generate_dataset_group_by_blueprint`` itself runs the self-check on what
  it built;
- ``collator_class`` a collator that hands the shared epoch Value to the datasets;
- with ``--multiplier_schedule``, accelerate's DataLoader wrappers record each trained batch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from kohya_multiplier.errors import EXIT_USER_ERROR, UserError, warn_once
from kohya_multiplier.dataset.loss_weights import LOSS_SCALE_TXT
from kohya_multiplier.dataset.reading import parse_json, parse_toml
from kohya_multiplier.dataset.multipliers import MULTIPLY_TXT, folder_subset_table, parse_folder_name
from kohya_multiplier.runtime import recorder
from kohya_multiplier.sdscripts import hookpoints
from kohya_multiplier.checkouts.scripts import read_text
from kohya_multiplier.sdscripts import session as _session

# What in a user's input asks for kohya-multiplier: keys of a dataset config, files in an image folder.
_RATE_KEYS = ("multiplier", "loss_weight", "images_per_epoch")
_WINDOW_KEYS = ("start_epoch", "end_epoch")
_EXTENSION_KEYS = (*_RATE_KEYS, *_WINDOW_KEYS, "total_images_per_epoch")
_EXTENSION_FILES = (MULTIPLY_TXT, LOSS_SCALE_TXT)


def installed() -> bool:
    """Whether this process already has the hooks (the wrapper installed them before the patched
    checkout's hook runs)."""
    dataset = sys.modules.get("kohya_multiplier.sdscripts.dataset")
    return dataset is not None and dataset.PlannedDataset.km_session is not None


def install(session: _session.Session) -> None:
    from library import config_util, train_util  # train_util also loads every module it re-exports

    from kohya_multiplier.sdscripts import dataset, selfcheck

    hooks = session.hooks
    dataset.bind_session(session)
    session.planned_dataset_classes = (
        dataset.MultiplierDreamBoothDataset, dataset.MultiplierFineTuningDataset, dataset.MultiplierControlNetDataset
    )
    _extend_schema(config_util, session)
    original = train_util.prepare_dataset_args  # wherever this revision defines it (train_util re-exports it at v0.11)
    hooks.append(
        hookpoints.everywhere(
            "reading the dataset config", "prepare_dataset_args", original, _hook_prepare_dataset_args(original, session)
        )
    )
    hooks.append(
        hookpoints.everywhere(
            "0.25_name folders",
            "generate_dreambooth_subsets_config_by_subdirs",
            config_util.generate_dreambooth_subsets_config_by_subdirs,
            _make_subdirs_reader(session),
        )
    )
    build = config_util.generate_dataset_group_by_blueprint
    hooks.append(
        hookpoints.in_caller_globals("the planned dataset", "DreamBoothDataset", build, dataset.MultiplierDreamBoothDataset)
    )
    hooks.append(
        hookpoints.in_caller_globals(
            "the planned fine-tuning dataset", "FineTuningDataset", build, dataset.MultiplierFineTuningDataset
        )
    )
    if dataset.MultiplierControlNetDataset is not None:
        hooks.append(
            hookpoints.in_caller_globals(
                "the planned conditioning dataset", "ControlNetDataset", build, dataset.MultiplierControlNetDataset
            )
        )
    hooks.append(hookpoints.everywhere("the self-check", "generate_dataset_group_by_blueprint", build, selfcheck.checked_build(build, session)))
    collator = train_util.collator_class  # every revision re-exports it there
    hooks.append(hookpoints.everywhere("the epoch collator", "collator_class", collator, dataset.epoch_collator_class(collator)))
    if session.record:
        recorder.install_dataloader_hook()  # the file opens once checked, in read_dataset_config


# --- schema ----------------------------------------------------------------------------------


def _extend_schema(config_util, session: _session.Session) -> None:
    from voluptuous import Invalid

    def rate_value(value):
        # The core loader checks the value (a number or a schedule) with the dry run's messages;
        # this stops voluptuous from rejecting the key ("extra keys not allowed") and tells the
        # self-check the config asks for multipliers (should the config reading hook ever miss).
        if isinstance(value, bool) or not isinstance(value, (int, float, list, dict)):
            raise Invalid("must be a number or a schedule")
        session.multiplier_requested = True
        return value

    def epoch_value(value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("must be a whole epoch")
        session.multiplier_requested = True
        return value

    schema = config_util.ConfigSanitizer.SUBSET_ASCENDABLE_SCHEMA
    for key in _RATE_KEYS:
        schema[key] = rate_value
    for key in _WINDOW_KEYS:
        schema[key] = epoch_value
    # A scheduled dataset's total; at dataset level, and so also in [general]
    config_util.ConfigSanitizer.DATASET_ASCENDABLE_SCHEMA["total_images_per_epoch"] = rate_value


# --- the dataset config, read by the core before any model loads --------------------------------


def _hook_prepare_dataset_args(original, session: _session.Session):
    def prepare_dataset_args(args, *more, **kwargs):
        result = original(args, *more, **kwargs)
        try:
            read_dataset_config(args, session)
        except UserError as error:
            # One line and status 2 under any launcher (the wrapper, a patched checkout, accelerate).
            print(f"kohya-multiplier: error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None
        return result

    prepare_dataset_args.__wrapped__ = original
    return prepare_dataset_args


def read_dataset_config(args: Any, session: _session.Session) -> None:
    from kohya_multiplier.dataset.config import load_training_config
    from kohya_multiplier.writer import check_training_output
    from kohya_multiplier.planner.plan_input import planner_seed

    session.config_read = True
    options = _session.options_from_sd_args(args, session)
    if session.record:  # never over an input (the config, an image folder), checked before the file opens
        check_training_output(session.schedule_path, options)
        recorder.start(session.schedule_path, truncate=_session.is_main_rank())
    if getattr(args, "dataset_class", None):
        return  # the user's own dataset class: nothing to plan
    if options.dataset_config is None and options.train_data_dir is None and options.in_json is None:
        return  # no dataset the core can read
    session.seed = planner_seed(getattr(args, "seed", None))
    if not session.record and not _asks_for_extension(options):
        return  # stock sd-scripts: nothing to plan or weigh, so nothing of the dataset is read twice
    try:
        config = load_training_config(options.dataset_config, options)
    except UserError:
        if _asks_for_extension(options):
            raise
        # No multiplier anywhere: sd-scripts reads the config exactly as it always does.
        warn_once("the dataset config uses no multiplier or loss weight and kohya-multiplier cannot plan it; sd-scripts trains it unchanged")
        return
    session.config, session.options = config, options
    session.planned = any(d.uses_multiplier for d in config.datasets)
    session.weighted = any(d.uses_loss_weight for d in config.datasets)
    if session.weighted:
        _require_script_applies_loss_weights(session)
    if (session.planned or session.weighted or session.record) and _session.is_main_rank():
        _print_balance(config, session, args, seed_given=getattr(args, "seed", None) is not None)


def _require_script_applies_loss_weights(session: _session.Session) -> None:
    from kohya_multiplier.checkouts.scripts import applies_loss_weights

    script = session.script_path
    if script and os.path.isfile(script) and not applies_loss_weights(Path(script)):
        raise UserError(
            f"{os.path.basename(script)} ignores per-example loss weights, so loss_weight (or loss_scale.txt) other than 1 "
            "cannot be applied; remove it, or train with a script that applies them (e.g. train_network.py, train_db.py)",
            file=session.config.source,
        )


def _asks_for_extension(options) -> bool:
    """Whether the user's input asks for a multiplier or a loss weight anywhere (key, fractional
    folder, multiply.txt, loss_scale.txt): then a config the core cannot read must stop the run,
    not train without them."""
    if options.dataset_config is not None:
        try:
            with open(options.dataset_config, "rb") as handle:
                raw = handle.read()
            shown = options.dataset_config
            data = (parse_json(raw.decode("utf-8-sig"), file=shown) if shown.lower().endswith(".json")
                    else parse_toml(raw.decode("utf-8"), file=shown))
        except (OSError, ValueError, UnicodeDecodeError, UserError):  # unreadable, or nested too deeply
            text = read_text(Path(options.dataset_config))
            return any(key in text for key in _EXTENSION_KEYS)
        tables = [data.get("general") or {}]
        dirs = []
        for dataset in data.get("datasets") or []:
            if isinstance(dataset, dict):
                tables.append(dataset)
                for subset in dataset.get("subsets") or []:
                    if isinstance(subset, dict):
                        tables.append(subset)
                        if isinstance(subset.get("image_dir"), str):
                            dirs.append(subset["image_dir"])
        if any(isinstance(t, dict) and key in t for t in tables for key in _EXTENSION_KEYS):
            return True
        return any(os.path.isfile(os.path.join(d, name)) for d in dirs for name in _EXTENSION_FILES)
    for base in (options.train_data_dir, options.reg_data_dir):
        if base and os.path.isdir(base):
            for name in os.listdir(base):
                parsed = parse_folder_name(name)
                if parsed is not None and parsed[1] is not None:
                    return True
                if any(os.path.isfile(os.path.join(base, name, file)) for file in _EXTENSION_FILES):
                    return True
    return False



def _print_balance(config, session: _session.Session, args: Any, *, seed_given: bool) -> None:
    """The dry run's notes and balance table, printed once at start; the plans stay on the session,
    for the datasets to compare with what sd-scripts found."""
    from kohya_multiplier.runtime.balance import print_balance

    plans = print_balance(config, session.seed, getattr(args, "max_train_epochs", None), seed_given=seed_given)
    session.plans.update(plans)  # each dataset takes its plan over when sd-scripts finds the same images


# --- DreamBooth folders (no dataset config) ----------------------------------------------------


def _make_subdirs_reader(session: _session.Session):
    def reader(train_data_dir: str | None = None, reg_data_dir: str | None = None):
        subsets = _dreambooth_subsets_by_subdirs(train_data_dir, reg_data_dir)
        if any("multiplier" in entry for entry in subsets):
            session.multiplier_requested = True
        return subsets

    return reader


def _dreambooth_subsets_by_subdirs(train_data_dir: str | None = None, reg_data_dir: str | None = None):
    """sd-scripts' folder reading (``<repeats>_<class tokens>``), extended to ``0.25_name`` folders.

    Same entries, same order (the file system's), same skipping as sd-scripts; a decimal prefix
    gives a ``multiplier`` instead of ``num_repeats``.
    """

    def generate(base_dir: str | None, is_reg: bool):
        if base_dir is None or not Path(base_dir).is_dir():
            return []
        subsets = []
        for subdir in Path(base_dir).iterdir():
            if not subdir.is_dir():
                continue
            parsed = parse_folder_name(subdir.name)
            if parsed is None:
                warn_once(f"ignored folder without a repeat prefix (such as 10_name or 0.25_name): {subdir}")
                continue
            entry = folder_subset_table(str(subdir), parsed, is_reg)  # with a multiplier, num_repeats keeps its default
            if entry is not None:
                subsets.append(entry)
        return subsets

    return generate(train_data_dir, False) + generate(reg_data_dir, True)
