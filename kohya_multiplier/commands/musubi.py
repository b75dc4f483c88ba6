"""`kohya-multiplier musubi SCRIPT ...`: train with musubi-tuner's own script and planned datasets."""

from __future__ import annotations

import argparse

from kohya_multiplier.checkouts import musubi as installs


def register(subparsers) -> None:
    text = "run a musubi-tuner LoRA training script with multipliers (in the Python that has musubi-tuner)"
    parser = subparsers.add_parser(
        "musubi", help=text,
        description=text + ". Takes the script's own arguments, plus --multiplier_schedule FILE (record the trained "
        "batches) and --multiplier_epoch_offset K (continue a resumed run at its epoch K+1).",
        epilog="scripts: " + ", ".join(sorted(installs.SCRIPTS)),
    )
    parser.add_argument("script", help="e.g. wan_train_network")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the script's arguments")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from kohya_multiplier.musubi.launch import run_musubi

    return run_musubi([args.script, *args.arguments])
