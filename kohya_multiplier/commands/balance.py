"""``kohya-multiplier balance CONFIG.toml``: set multipliers from images-per-epoch targets.

Targets: ``--per-epoch N`` (every training subset, or every subject with ``--group-by parent``),
``images_per_epoch = N`` in a subset's table (wins over ``--per-epoch`` for that subset), and
``--ratio SELECTOR=FRACTION`` (a set of subsets sharing a fixed fraction of each epoch). Prints the
before/after table; batches per epoch come from the real planner on the real bucket assignment, so
they equal what ``plan`` shows. ``--write`` edits the TOML in place (comments, order and formatting
kept) after copying it to ``CONFIG.toml.bak``; without it nothing is changed.

``images_per_epoch`` is balance's own key: sd-scripts rejects unknown keys, so ``--write`` turns it
into ``multiplier = m`` at the same place and keeps the target in the comment after it
(``# images_per_epoch = 25 (kohya-multiplier balance)``), which later ``balance`` runs read back.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np

from kohya_multiplier.balance import solve as bal
from kohya_multiplier import progress
from kohya_multiplier.balance import toml_edit
from kohya_multiplier.errors import UserError
from kohya_multiplier.writer import InputPaths, OutputFiles, check_outputs, input_paths, with_config_folders

KEY = "images_per_epoch"
_TABLE_RE = re.compile(r"^datasets\[(\d+)\]\.subsets\[(\d+)\]")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "balance",
        help="set subset multipliers from images-per-epoch targets (prints a before/after table; --write edits the TOML)",
        description="Compute each subset's multiplier from a target number of images per epoch, or from a share "
        "of the epoch, and show what changes. Nothing is written without --write.",
    )
    parser.add_argument("config", nargs="?", metavar="CONFIG.toml",
                        help="sd-scripts dataset config (.toml; .json is read but cannot be written)")
    parser.add_argument("--per-epoch", type=float, metavar="N", default=None,
                        help="images per epoch for every training subset (per subject with --group-by parent); "
                        "a subset's own images_per_epoch in the TOML wins")
    parser.add_argument("--ratio", action="append", default=[], metavar="SELECTOR=FRACTION",
                        help="subsets sharing a fixed fraction of every epoch, e.g. reg=10%% (all regularization "
                        "subsets) or 'style_*,extra=0.2'; SELECTOR is reg, train, a subset or parent-folder name, "
                        "or a shell pattern; FRACTION may be EPOCH:FRACTION points for a share that changes over "
                        "training (reg=1:10%%,20:2%%: written as a multiplier schedule); repeatable")
    parser.add_argument("--group-by", choices=bal.GROUP_BY, default="subset",
                        help="parent: the subsets under one parent folder are one subject sharing --per-epoch "
                        "(default: subset)")
    parser.add_argument("--epochs", type=int, default=10, metavar="N", help="epochs for the total steps (default 10)")
    parser.add_argument("--write", action="store_true",
                        help="edit the TOML in place (keeps comments and layout; backup CONFIG.toml.bak first)")
    from kohya_multiplier.commands.dataset_options import add_dataset_arguments

    add_dataset_arguments(parser, dataset_config=False, seed=False)
    parser.set_defaults(handler=run)


# ----------------------------------------------------------------------------------------------
# Reading the config with balance's own key


@dataclass
class Loaded:
    config: Any  # TrainingConfig
    targets: dict[tuple[int, int], tuple[float, str]]  # (dataset, subset) in the file -> (target, source)
    toml_text: str | None  # the file's text when it is TOML (for --write)


def _strip_targets(raw: Any, file: str) -> dict[tuple[int, int], tuple[float, str]]:
    """Remove ``images_per_epoch`` from the parsed config (the reader rejects unknown keys) and
    return the per-subset targets."""
    targets: dict[tuple[int, int], tuple[float, str]] = {}
    if not isinstance(raw, dict):
        return targets
    general = raw.get("general")
    if isinstance(general, dict) and KEY in general:
        raise UserError(f"{KEY} is read per subset: put it in [[datasets.subsets]], or use --per-epoch for all",
                        file=file, where="general", key=KEY)
    datasets = raw.get("datasets")
    if not isinstance(datasets, list):
        return targets
    for d, dataset in enumerate(datasets):
        if not isinstance(dataset, dict):
            continue
        if KEY in dataset:
            raise UserError(f"{KEY} is read per subset: put it in [[datasets.subsets]], or use --per-epoch for all",
                            file=file, where=f"datasets[{d}]", key=KEY)
        subsets = dataset.get("subsets")
        if not isinstance(subsets, list):
            continue
        for s, table in enumerate(subsets):
            if isinstance(table, dict) and KEY in table:
                where = f"datasets[{d}].subsets[{s}]"
                if isinstance(table.get("image_dir"), str):
                    where += f" ({table['image_dir']})"
                value = bal.positive_target(table.pop(KEY), key=KEY, where=where, file=file)
                targets[(d, s)] = (value, KEY)
    return targets


_SCHEDULE_KEYS = ("start_epoch", "end_epoch", "total_images_per_epoch")


def _refuse_schedules(raw: Any, file: str) -> None:
    """balance solves constant rates: on a scheduled dataset it would write numbers over the
    user's schedules, so it refuses, naming the first table that schedules."""
    tables = [("general", raw.get("general"))] if isinstance(raw, dict) else []
    for d, dataset in enumerate(raw.get("datasets") or [] if isinstance(raw, dict) else []):
        if isinstance(dataset, dict):
            tables.append((f"datasets[{d}]", dataset))
            for s, table in enumerate(dataset.get("subsets") or []):
                tables.append((f"datasets[{d}].subsets[{s}]", table))
    for where, table in tables:
        if not isinstance(table, dict):
            continue
        key = next((k for k in ("multiplier", KEY) if isinstance(table.get(k), dict)), None)
        key = key or next((k for k in _SCHEDULE_KEYS if k in table), None)
        if key is not None:
            raise UserError(
                "balance solves constant rates and would write numbers over this schedule; balance the config without "
                "it and add the schedule afterwards (`kohya-multiplier plan` shows what a schedule trains)",
                file=file, where=where, key=key,
            )


def load(path: str | None, options) -> Loaded:
    from kohya_multiplier.dataset import config as cfg
    if path is None:
        return Loaded(cfg.load_training_config(None, options), {}, None)
    raw = cfg.read_config_file(path)
    _refuse_schedules(raw, str(path))
    targets = _strip_targets(raw, str(path))
    text = None
    if str(path).lower().endswith(".toml"):
        text = toml_edit.read_text(path)
        document = toml_edit.parse(text, file=str(path))
        for d, s, table in toml_edit.subset_tables(document):
            if (d, s) not in targets and "multiplier" in table:
                remembered = bal.target_from_comment(toml_edit.value_comment(table, "multiplier"))
                if remembered is not None:
                    targets[(d, s)] = (remembered, "comment")
    config = cfg.config_from_dict(raw, file=str(path), options=options)
    return Loaded(config, targets, text)


# ----------------------------------------------------------------------------------------------
# Batches per epoch from the real planner


def epoch_length(dataset, multipliers: list[float]) -> int:
    """Batches per epoch of a dataset with the given per-subset multipliers: the planner's L on
    the same input ``plan`` builds (``plan_input``: images of the subsets with multiplier > 0,
    sd-scripts' bucket assignment)."""
    from kohya_multiplier.planner.dataset_plan import DatasetPlan
    from kohya_multiplier.planner.plan_input import build_plan_input

    subset_of_image, paths, resolutions = _bucketed_images(dataset)
    taking_part = {i for i, m in enumerate(multipliers) if m > 0}  # trial multipliers, not the config's
    plan_input = build_plan_input(
        (s, path, resolution) for s, path, resolution in zip(subset_of_image, paths, resolutions) if s in taking_part)
    if len(plan_input) == 0:
        return 0
    return int(DatasetPlan(dataset, 0, plan_input, multipliers).epoch_length)


def _as_trained_today(dataset, multipliers: list[float]) -> tuple[int, list[float]]:
    """(batches per epoch, images per epoch of each subset) as the config trains now. A dataset
    without multipliers is stock sd-scripts, which repeats its regularization images by its own
    rule (kohya_multiplier.dataset.regularization), not by their num_repeats."""
    from kohya_multiplier.planner.dataset_plan import DatasetPlan

    if dataset.uses_multiplier:
        return epoch_length(dataset, multipliers), [max(m, 0.0) * len(s.images) for m, s in zip(multipliers, dataset.subsets)]
    dataset_plan = DatasetPlan(dataset, 0)  # its input carries each image's stock repeats
    plan_input = dataset_plan.plan_input
    per_subset = np.bincount(plan_input.subset_of_image, weights=plan_input.image_repeats, minlength=len(dataset.subsets))
    return (int(dataset_plan.epoch_length) if len(plan_input) else 0), [float(n) for n in per_subset]


def _bucketed_images(dataset) -> tuple[list[int], list[str], list[tuple[int, int]]]:
    """(subset index, path, bucket resolution) of every image of the dataset, excluded subsets
    included (balance may bring them back), bucketed once by the dataset's layout."""
    cached = getattr(dataset, "_balance_bucketed", None)
    if cached is not None:
        return cached
    from kohya_multiplier.planner.plan_input import dataset_bucket_ids

    entries = [(index, image) for index, subset in enumerate(dataset.subsets) for image in subset.images]
    paths = [e.path for _, e in entries]
    if entries:
        ids, sizes = dataset_bucket_ids(dataset, [e for _, e in entries])
        resolutions = [sizes[int(i)] for i in ids]
    else:
        resolutions = []
    result = ([i for i, _ in entries], paths, resolutions)
    try:
        dataset._balance_bucketed = result
    except AttributeError:
        pass
    return result


# ----------------------------------------------------------------------------------------------
# The command


def _display_names(config) -> dict[tuple[int, int], str]:
    counts: dict[str, int] = {}
    for dataset in config.datasets:
        for subset in dataset.subsets:
            counts[subset.name] = counts.get(subset.name, 0) + 1
    names = {}
    for dataset in config.datasets:
        for position, subset in enumerate(dataset.subsets):
            name = subset.name
            if counts[name] > 1:
                name = _relative(subset.image_dir)
            names[(dataset.index, position)] = name
    return names


def _relative(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _group_names(config) -> dict[str, str]:
    from kohya_multiplier.report.schedule_diff import parent_folder_namer

    dirs = [s.image_dir for d in config.datasets for s in d.subsets]
    namer = parent_folder_namer(os.path.join(p, "x") for p in {os.path.dirname(p) for p in dirs})
    return {parent: namer(os.path.join(parent, "x")) for parent in {os.path.dirname(p) for p in dirs}}


def _file_position(subset) -> tuple[int, int] | None:
    found = _TABLE_RE.match(subset.table or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def _number(value: float, digits: int = 6) -> str:
    value = float(value) + 0.0
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = f"{value:.{digits}g}"
    return text


def _table(header: list[str], rows: list[list[str]], left: set[int]) -> list[str]:
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header))]
    out = []
    for cells in [header] + rows:
        out.append("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    return out


def run(args: argparse.Namespace) -> int:
    from kohya_multiplier.commands.dataset_options import options_from_args

    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"must be at least 1, got {args.epochs}", key="--epochs")
    if args.per_epoch is not None:
        bal.positive_target(args.per_epoch, key="--per-epoch")
    ratios = [bal.parse_ratio(text) for text in args.ratio]
    options = options_from_args(args)
    if args.write and args.config is None:
        raise UserError("--write edits a dataset config file; give CONFIG.toml", key="--write")
    if args.write and not str(args.config).lower().endswith(".toml"):
        raise UserError("--write edits TOML dataset configs only", file=str(args.config), key="--write")

    loaded = load(args.config, options)
    config = loaded.config
    write_inputs = with_config_folders(input_paths(str(args.config)), config) if args.write else None
    if args.write:  # before any work: the config's folder writable, the backup not on an input
        check_outputs({"--write (its backup)": str(toml_edit.backup_path(Path(args.config))), "--write": str(args.config)},
                      InputPaths(None, write_inputs.folders, write_inputs.metadata_files))
    subsets, specs = _balance_subsets(config, loaded.targets, args.group_by)

    if args.per_epoch is None and not ratios and not loaded.targets:
        raise UserError("nothing to balance: give --per-epoch N, --ratio SELECTOR=FRACTION, "
                        f"or {KEY} in a subset's table", key="--per-epoch")
    assignments = bal.solve(subsets, per_epoch=args.per_epoch, ratios=[r.at(1) for r in ratios], group_by=args.group_by)
    schedules = _scheduled_multipliers(subsets, args, ratios, assignments)

    steps, before_images = _steps_before_and_after(config, subsets, assignments)
    print(render(config, subsets, assignments, steps, args.epochs, group_by=args.group_by, before_images=before_images))
    if schedules:
        print(_schedule_lines(subsets, schedules))
    return _apply(args, loaded, specs, assignments, write_inputs, schedules)


def _scheduled_multipliers(subsets, args, ratios, assignments) -> dict[int, dict[str, float]]:
    """For shares that change over training (--ratio SELECTOR=EPOCH:FRACTION,...): each subset
    whose multiplier differs between the points, as {epoch: multiplier} (the table shows the first
    point). Every epoch then trains the first epoch's total; the schedules set the mix."""
    epochs = sorted({epoch for ratio in ratios for epoch, _ in ratio.points})
    if not epochs:
        return {}
    solved = {epochs[0]: assignments}
    for epoch in epochs[1:]:
        solved[epoch] = bal.solve(subsets, per_epoch=args.per_epoch, ratios=[r.at(epoch) for r in ratios], group_by=args.group_by)
    schedules = {}
    for index in range(len(subsets)):
        values = {str(epoch): float(_number(solved[epoch][index].multiplier, 10)) for epoch in epochs}
        if len(set(values.values())) > 1:
            schedules[index] = values
    return schedules


def _schedule_lines(subsets, schedules) -> str:
    lines = ["", "scheduled (every epoch trains the first epoch's total; the schedule sets the mix):"]
    for index, values in schedules.items():
        points = ", ".join(f"{epoch} = {_number(value, 6)}" for epoch, value in values.items())
        lines.append(f"  {subsets[index].name}: multiplier = {{ {points} }}")
    return "\n".join(lines)


def _balance_subsets(config, targets: dict, group_by: str) -> tuple[list[bal.BalanceSubset], list[tuple]]:
    """Every subset as the solver sees it, and (dataset, position, spec, place in the file, target)."""
    names = _display_names(config)
    groups = _group_names(config)

    subsets: list[bal.BalanceSubset] = []
    specs = []
    for dataset in config.datasets:
        for position, spec in enumerate(dataset.subsets):
            file_position = _file_position(spec)
            target = targets.get(file_position) if file_position else None
            parent = os.path.dirname(spec.image_dir)
            subsets.append(bal.BalanceSubset(
                dataset=dataset.index,
                index=position,
                name=names[(dataset.index, position)],
                images=len(spec.images),
                multiplier=float(spec.effective_multiplier),
                is_reg=bool(spec.is_reg),
                explicit=spec.multiplier is not None,
                num_repeats=int(spec.num_repeats),
                group=groups.get(parent, "") if group_by == "parent" else "",
                images_per_epoch=target[0] if target else None,
                aliases=(spec.name, _relative(spec.image_dir), groups.get(parent, "")),
            ))
            specs.append((dataset, position, spec, file_position, target))

    return subsets, specs


def _steps_before_and_after(config, subsets, assignments) -> tuple[list[bal.DatasetSteps], list[float]]:
    """Batches per epoch of each dataset today and with the new multipliers (the real planner), and
    each subset's images per epoch as the config trains today."""
    steps: list[bal.DatasetSteps] = []
    before_images: list[float] = []  # per subset, images per epoch as the config trains today
    offset = 0
    for dataset in progress.track(config.datasets, len(config.datasets), "planning"):
        count = len(dataset.subsets)
        before = [s.multiplier for s in subsets[offset:offset + count]]
        after = [a.multiplier for a in assignments[offset:offset + count]]
        today_length, today_images = _as_trained_today(dataset, before)
        steps.append(bal.DatasetSteps(dataset.index, dataset.batch_size, today_length, epoch_length(dataset, after)))
        before_images.extend(today_images)
        offset += count

    return steps, before_images


def _apply(args: argparse.Namespace, loaded, specs, assignments, write_inputs, schedules=None) -> int:
    """Say what would change, and with --write change the config (a backup kept)."""
    edits, folder_renames = _edits(specs, assignments, schedules or {})
    changed = [a for a in assignments if a.changed]
    if not edits and not folder_renames:
        print("\nmultipliers already match the targets; nothing to change")
        return 0
    if folder_renames:
        print("\nthese subsets come from folder names; rename the folders to apply the new multipliers:")
        for old, new in folder_renames:
            print(f"  {old} -> {new}")
        if args.write:
            raise UserError("--write edits dataset config files only; rename the folders listed above", key="--write")
        return 0
    if loaded.toml_text is None:
        print(f"\n--write edits TOML configs only: set the new multipliers in {args.config} by hand")
        return 0
    if not args.write:
        print(f"\nnot written: run again with --write to update {args.config} "
              f"({len(edits)} subset table{'s' if len(edits) != 1 else ''}; a backup is kept)")
        if any(target is not None and target[1] == KEY for *_, target in specs):
            print(f"{KEY} trains as it is (a count per epoch, resolved from the images there); --write turns it into a "
                  "multiplier of today's image count")
        return 0
    new_text = toml_edit.edit_text(loaded.toml_text, edits, file=str(args.config))
    backup = write_with_backup(args.config, new_text, inputs=write_inputs)
    print(f"\nwrote {args.config}: {len(edits)} subset table{'s' if len(edits) != 1 else ''} changed "
          f"({len(changed)} multiplier{'s' if len(changed) != 1 else ''}); backup: {backup}")
    return 0


def write_with_backup(path: str | os.PathLike, new_text: str, *, inputs=None, key: str = "--write") -> Path:
    """Keep the file's bytes in a fresh backup, then replace the file with ``new_text``; both through
    the one writer, so a failure leaves the config as it was and no empty backup. A config that is a
    symbolic link keeps its link: the file it points to is edited. ``inputs``: what must not be
    written (the image folders), checked before anything is written.

    Bytes are written as given (no newline translation) so unchanged lines stay byte-identical."""
    path = Path(path)
    old = path.read_bytes()
    backup = toml_edit.backup_path(path)
    folders = InputPaths(None, inputs.folders, inputs.metadata_files) if inputs is not None else None
    backup_key = f"{key} (its backup)"
    with OutputFiles({backup_key: str(backup), key: str(path)}, folders) as outputs:
        outputs.write(backup_key, old, exclusive=True)
        outputs.write(key, new_text.encode("utf-8"))
    return backup


def _edits(specs, assignments, schedules):
    edits: list[toml_edit.SubsetEdit] = []
    renames: list[tuple[str, str]] = []
    for index, ((dataset, position, spec, file_position, target), assignment) in enumerate(zip(specs, assignments)):
        translate = target is not None and target[1] == KEY  # the key must leave the file
        if index in schedules and file_position is not None:
            d, s = file_position
            edits.append(toml_edit.SubsetEdit(d, s, "multiplier", schedules[index], replaces=(KEY, "num_repeats")))
            continue
        if index in schedules:
            raise UserError(f"{spec.table}: a schedule goes in the dataset config; this subset comes from a folder name",
                            key="--ratio")
        if not assignment.changed and not translate:
            continue
        if file_position is None:
            folder = spec.image_dir
            base = os.path.basename(folder)
            rest = base.split("_", 1)[1] if "_" in base else base
            renames.append((_relative(folder), _relative(os.path.join(os.path.dirname(folder),
                                                                      f"{_number(assignment.multiplier, 10)}_{rest}"))))
            continue
        comment = (lambda old, value=target[0]: bal.marker_comment(value, old)) if target is not None else None
        d, s = file_position
        edits.append(toml_edit.SubsetEdit(d, s, "multiplier", assignment.multiplier,
                                          replaces=(KEY, "num_repeats"), comment=comment))
    return edits, renames


def render(config, subsets, assignments, steps, epochs: int, *, before_images: list[float], group_by: str = "subset") -> str:
    """The before/after table; ``before_images``: each subset's images per epoch today."""
    lines: list[str] = []
    offset = 0
    for dataset, step in zip(config.datasets, steps):
        count = len(dataset.subsets)
        rows = []
        for s, a, today in zip(subsets[offset:offset + count], assignments[offset:offset + count], before_images[offset:offset + count]):
            old = s.multiplier
            old_text = _number(old) if s.explicit else f"{_number(old)} ({'auto' if s.is_reg and s.num_repeats >= 1 and old != s.num_repeats else 'repeats'})"
            if a.changed:
                new_text = _number(a.multiplier, 10)
            elif a.rule.startswith("auto"):
                new_text = f"{_number(a.multiplier)} (auto)"
            else:
                new_text = "="
            rows.append([
                s.name + (" [reg]" if s.is_reg else ""),
                str(s.images),
                old_text,
                new_text,
                _number(today, 5),
                _number(a.images_per_epoch, 5),
                a.rule,
            ])
        offset += count
        today_total = sum(before_images[offset - count:offset])
        after_images = sum(a.images_per_epoch for a in assignments[offset - count:offset])
        rows.append(["total", str(sum(s.images for s in subsets[offset - count:offset])), "", "",
                     _number(today_total, 6), _number(after_images, 6), ""])
        lines.append(f"dataset {dataset.index}: batch size {dataset.batch_size}"
                     + (", subjects grouped by parent folder" if group_by == "parent" else ""))
        lines.extend(_table(["subset", "images", "multiplier", "new", "images/epoch", "new", "target"], rows, {0, 6}))
        lines.append(f"batches per epoch: {step.batches_before} -> {step.batches_after}")
        lines.append("")
    before, after = bal.total_steps(steps, epochs)
    lines.append(f"total steps for {epochs} epoch{'s' if epochs != 1 else ''}: {before} -> {after}"
                 + (" (all datasets)" if len(steps) > 1 else "")
                 + "; divide by gradient accumulation steps and GPUs when you use them")
    return "\n".join(lines)
