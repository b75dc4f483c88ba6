"""``kohya-multiplier schedule-diff A.jsonl B.jsonl``: how two schedules differ.

Exit status like diff(1): 0 when the schedules are identical, 1 when they differ, 2 on bad input.
"""

from __future__ import annotations

import argparse
import os

from kohya_multiplier.report import schedule_diff as sd
EXIT_DIFFERENT = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "schedule-diff",
        help="compare two schedules (JSON Lines) per epoch and per subset",
        description="Compare two schedules written by `plan --schedule` or by a training run, per epoch "
        "and per subset. Exit status: 0 identical, 1 different, 2 bad input.",
    )
    parser.add_argument("a", metavar="A.jsonl", help="first schedule (e.g. what the dry run promised)")
    parser.add_argument("b", metavar="B.jsonl", help="second schedule (e.g. what training did)")
    parser.add_argument("--config", metavar="CONFIG.toml",
                        help="dataset config mapping images to subsets (default: an image's parent folder)")
    parser.add_argument("--common-epochs", action="store_true",
                        help="compare only the epochs both schedules hold (e.g. a run stopped early)")
    parser.add_argument("--relative", action="store_true",
                        help="compare image paths relative to each schedule's common folder "
                        "(schedules made on different machines)")
    parser.add_argument("--all", action="store_true", dest="show_all", help="list identical epochs too")
    parser.add_argument("--by-epoch", action="store_true",
                        help="list each subset's counts in every epoch where they differ")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing; only the exit status")
    parser.set_defaults(handler=run)


def _config_namer(path: str, a, b):
    from kohya_multiplier.dataset.types import CommandLineOptions
    from kohya_multiplier.dataset.config import load_training_config

    config = load_training_config(path, CommandLineOptions())
    counts: dict[str, int] = {}
    for dataset in config.datasets:
        for subset in dataset.subsets:
            counts[subset.name] = counts.get(subset.name, 0) + 1
    several = len(config.datasets) > 1
    mapping: dict[str, str] = {}
    for dataset in config.datasets:
        for subset in dataset.subsets:
            label = str(subset.name) if counts[subset.name] == 1 else _relative(subset.image_dir)
            if several:
                label = f"{dataset.index}:{label}"
            for image in subset.images:
                mapping.setdefault(os.path.normpath(os.path.abspath(str(image.path))), label)
    unmapped = {p for schedule in (a, b) for p in schedule.paths if os.path.normpath(os.path.abspath(p)) not in mapping}
    fallback = sd.parent_folder_namer(unmapped)
    return sd.mapping_namer(mapping, fallback)


def _relative(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def run(args: argparse.Namespace) -> int:
    a = sd.read_schedule(args.a)
    b = sd.read_schedule(args.b)
    namer = _config_namer(args.config, a, b) if args.config and not args.relative else None
    diff = sd.compare(a, b, namer=namer, common_epochs_only=args.common_epochs, relative=args.relative)
    if not args.quiet:
        print(sd.summarize_file("A", args.a, a))
        print(sd.summarize_file("B", args.b, b))
        print(sd.format_diff(diff, show_all=args.show_all, per_epoch=args.by_epoch))
    return 0 if diff.identical else EXIT_DIFFERENT
