"""`kohya-multiplier example`: generate the example dataset and plan it."""

from __future__ import annotations

import argparse
import os

from kohya_multiplier.commands import plan
from kohya_multiplier.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "example",
        help="generate a small example dataset with multipliers and show its plan",
        description="Write an example dataset (subjects of 12 to 300 images, regularization images) and its "
        "dataset.toml into DIR, then plan it as `kohya-multiplier plan DIR/dataset.toml` would.",
    )
    parser.add_argument("directory", nargs="?", default=None, help="where to write it (default ./example-data)")
    parser.add_argument("--dir", dest="target", metavar="DIR", default=None,
                        help="where to write it: a new or empty folder, or one an earlier `example` made "
                        "(default ./example-data)")
    parser.add_argument("--epochs", type=int, default=8, metavar="N", help="epochs to plan (default 8)")
    parser.add_argument("--seed", type=int, default=None, metavar="S")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from kohya_multiplier.example import generate

    if args.target is not None and args.directory is not None and args.target != args.directory:
        raise UserError("give the folder once: as DIR or as --dir DIR", key="--dir")
    config_path = generate(args.target or args.directory or "example-data")
    print(f"example dataset written to {os.path.relpath(os.path.dirname(config_path))}/ ; its config: {os.path.relpath(config_path)}")
    print(f"planning it: kohya-multiplier plan {os.path.relpath(config_path)} --epochs {args.epochs}\n")
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    plan.register(subparsers)
    plan_args = ["plan", config_path, "--epochs", str(args.epochs)]
    if args.seed is not None:
        plan_args += ["--seed", str(args.seed)]
    return plan.run(parser.parse_args(plan_args))
