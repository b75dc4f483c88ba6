"""The `kohya-multiplier` command: dispatches to one module per sub-command.

Training sub-commands (``train_network``, ``train_db``, ...) take sd-scripts' own arguments
untouched and are handed to the integration layer; every other sub-command is an argparse parser
registered by its module in ``kohya_multiplier.commands``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kohya_multiplier import __version__
from kohya_multiplier.errors import EXIT_USER_ERROR, UserError

# Sub-command name -> module in kohya_multiplier.commands that defines register(subparsers).
COMMAND_MODULES = {
    "plan": "plan",
    "example": "example",
    "configure": "configure",
    "balance": "balance",
    "schedule-diff": "schedule_diff",
    "patch": "patch",
    "unpatch": "patch",
    "status": "patch",
    "scripts": "scripts",
    "check": "check",
    "report": "report",
}


def is_training_command(word: str) -> bool:
    """``kohya-multiplier SCRIPT ...``: any training script of the checkout (checked when it runs)."""
    from kohya_multiplier.sdscripts.scripts import looks_like_script_name

    return word not in COMMAND_MODULES and looks_like_script_name(word)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kohya-multiplier",
        description="Fractional per-subset multipliers for kohya-ss/sd-scripts.",
        epilog="Training: kohya-multiplier SCRIPT [--sd-scripts DIR] <sd-scripts arguments>, where SCRIPT is a "
        "training script of the checkout (train_network, train_db, sdxl_train_network, flux_train_network, ...; "
        "`kohya-multiplier scripts` lists them)",
    )
    parser.add_argument("--version", action="version", version=f"kohya-multiplier {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered = set()
    for module_name in COMMAND_MODULES.values():
        if module_name in registered:
            continue
        registered.add(module_name)
        try:
            module = importlib.import_module(f"kohya_multiplier.commands.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"kohya_multiplier.commands.{module_name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and is_training_command(argv[0]):
            from kohya_multiplier.sdscripts.launch import run_training

            return run_training(argv[0], argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return EXIT_USER_ERROR
        return int(args.handler(args) or 0)
    except UserError as error:
        print(f"kohya-multiplier: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
