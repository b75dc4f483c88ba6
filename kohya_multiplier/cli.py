"""The `kohya-multiplier` command: dispatches to one module per sub-command.

Training sub-commands (``train_network``, ``train_db``, ...) take sd-scripts' own arguments
untouched and are handed to the integration layer; every other sub-command is an argparse parser
registered by its module in ``kohya_multiplier.commands``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from kohya_multiplier import __version__
from kohya_multiplier.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, safe_text
from kohya_multiplier.writer import Interrupted

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
    "musubi": "musubi",
}


def is_training_command(word: str) -> bool:
    """``kohya-multiplier SCRIPT ...``: any training script of the checkout (checked when it runs)."""
    from kohya_multiplier.checkouts.scripts import looks_like_script_name

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
    """Run one command inside the one error boundary: whatever fails, one line and a status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _dispatch(argv)
        sys.stdout.flush()
        return status
    except UserError as error:
        return _fail(str(error))
    except Interrupted as interrupt:
        return _fail(f"interrupted; {', '.join(safe_text(p) for p in interrupt.unchanged)} left unchanged",
                     status=EXIT_INTERRUPTED, prefix="kohya-multiplier: ")
    except KeyboardInterrupt:
        return _fail("interrupted; no output file was changed", status=EXIT_INTERRUPTED, prefix="kohya-multiplier: ")
    except (BrokenPipeError, ValueError) as error:
        if isinstance(error, ValueError) and not _stdout_closed():
            raise
        _silence_stdout()
        return _fail("standard output was closed before the output was complete")
    except OSError as error:
        if error.filename is None and _is_stdout_error(error):
            _silence_stdout()
            return _fail(f"cannot write to standard output: {error.strerror or error}")
        return _fail(describe_os_error(error))
    except RecursionError:
        return _fail("an input is nested too deeply to read (a config, metadata or schedule file)")
    except OverflowError as error:
        return _fail(f"a number in an input is out of range: {error}")
    except UnicodeError as error:
        return _fail(f"text that is not valid UTF-8 (or cannot be written as it): {error}")


def _dispatch(argv: list[str]) -> int:
    if argv and is_training_command(argv[0]):
        from kohya_multiplier.sdscripts.launch import run_training

        return run_training(argv[0], argv[1:])
    if len(argv) > 1 and argv[0] == "musubi" and argv[1] not in ("-h", "--help"):
        from kohya_multiplier.musubi.launch import run_musubi  # its arguments are the script's, untouched

        return run_musubi(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    return int(args.handler(args) or 0)


def describe_os_error(error: OSError) -> str:
    """``PATH: the system's reason`` (no space, read-only, permission, name too long)."""
    reason = error.strerror or str(error)
    names = [n for n in (error.filename, error.filename2) if n is not None]
    return ": ".join([*(os.fsdecode(n) if isinstance(n, bytes) else str(n) for n in names), reason])


def _fail(message: str, *, status: int = EXIT_USER_ERROR, prefix: str = "kohya-multiplier: error: ") -> int:
    try:
        print(f"{prefix}{safe_text(message)}", file=sys.stderr, flush=True)
    except OSError:
        pass
    return status


def _stdout_closed() -> bool:
    return getattr(sys.stdout, "closed", False)


def _is_stdout_error(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EBADF)


def _silence_stdout() -> None:
    """Point stdout at the null device, so Python's flush at exit does not print a second error."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
