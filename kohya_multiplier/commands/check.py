"""``kohya-multiplier check CONFIG``: fully decode every image a run will read.

Exit status: 0 when every image decodes, 1 when some image is unreadable or implausible (each listed
with its reason), 2 on bad input (including a missing Pillow).
"""

from __future__ import annotations

import argparse
import sys

from kohya_multiplier.commands.dataset_options import add_dataset_arguments, options_from_args, require_dataset_source
from kohya_multiplier.errors import UserError

EXIT_PROBLEMS = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check",
        help="decode every image of every subset with Pillow and list the unreadable or implausible ones",
        description="Fully decode every image of every subset (in parallel over the cores) and list each unreadable "
        "or implausible one with the reason: empty, undecodable, truncated, header size not the decoded size, too "
        "large, or an EXIF rotation sd-scripts does not apply. Exit status: 0 all fine, 1 problems found, 2 bad input.",
    )
    parser.add_argument("config", nargs="?", help="sd-scripts dataset config (.toml or .json); or give --train_data_dir")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="processes (default: every core)")
    parser.add_argument("--image-timeout", "--image_timeout", dest="image_timeout", type=float, default=None,
                        metavar="SECONDS", help="stop when one image shows no progress for this long (default 120)")
    add_dataset_arguments(parser)
    parser.set_defaults(handler=run)


def verify(config, *, workers: int | None = None, stream=None, image_timeout: float | None = None) -> int:
    """Check the images of a loaded config; print the problems and the summary; 0 or EXIT_PROBLEMS.
    A worker that dies or hangs: the summary of what was checked, then the one-line error."""
    from kohya_multiplier.dataset.image_check import DEFAULT_IMAGE_TIMEOUT, WorkerLost, check_images, config_image_paths, report_lines

    try:
        result = check_images(config_image_paths(config), workers=workers,
                              image_timeout=image_timeout or DEFAULT_IMAGE_TIMEOUT)
    except WorkerLost as lost:
        for line in report_lines(lost.result, stopped=True):
            print(line, file=stream or sys.stdout)
        raise
    for line in report_lines(result):
        print(line, file=stream or sys.stdout)
    return EXIT_PROBLEMS if result.problems else 0


def run(args: argparse.Namespace) -> int:
    from kohya_multiplier.dataset.config import load_training_config
    from kohya_multiplier.dataset.image_check import require_pillow

    if args.workers is not None and args.workers < 1:
        raise UserError(f"must be at least 1, got {args.workers}", key="--workers")
    if args.image_timeout is not None and not args.image_timeout > 0:
        raise UserError(f"must be a positive number of seconds, got {args.image_timeout}", key="--image-timeout")
    require_pillow()
    options = options_from_args(args)
    require_dataset_source(args.config, options)
    config = load_training_config(args.config, options)
    for note in config.notes:
        print(note)
    return verify(config, workers=args.workers, image_timeout=args.image_timeout)
