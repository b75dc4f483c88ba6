"""Entry point for patched sd-scripts checkouts (``kohya-multiplier patch DIR``).

The patch appends a few lines to sd-scripts' ``library/config_util.py`` that import this module
and call :func:`activate` when kohya-multiplier is installed. Every training script imports
config_util before it parses its arguments or builds a dataset, so ``python train_network.py ...``
and ``accelerate launch train_network.py ...`` (the kohya_ss GUI's way) get the same hooks as the
``kohya-multiplier train_network`` wrapper. Under the wrapper, the session already exists and this
does nothing.
"""

from __future__ import annotations

import multiprocessing
import sys

from kohya_multiplier.errors import EXIT_USER_ERROR, UserError
from kohya_multiplier.sdscripts import session as _session

SCHEDULE_OPTIONS = ("--multiplier_schedule", "--multiplier-schedule")


def activate() -> None:
    if _session.current() is not None:
        return  # the wrapper (or an earlier import) installed everything
    if multiprocessing.parent_process() is not None:
        return  # a spawned DataLoader worker: its dataset arrives pickled, hooks included
    schedule = _take_schedule_option(sys.argv)
    session = _session.start(schedule)

    from library import train_util

    from kohya_multiplier.sdscripts import inject

    inject.install(session)
    train_util.prepare_dataset_args = _exit_on_user_error(train_util.prepare_dataset_args)


def _take_schedule_option(argv: list[str]) -> str | None:
    """Remove ``--multiplier_schedule FILE`` from argv (the script's parser would reject it)."""
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in SCHEDULE_OPTIONS:
            if eq:
                del argv[i]
                return value
            if i + 1 < len(argv):
                value = argv[i + 1]
                del argv[i : i + 2]
                return value
    return None


def _exit_on_user_error(prepare_dataset_args):
    """Without the wrapper's CLI around it, print a user error as one line and exit with status 2."""

    def guarded(*args, **kwargs):
        try:
            return prepare_dataset_args(*args, **kwargs)
        except UserError as error:
            print(f"kohya-multiplier: error: {error}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None

    guarded.__wrapped__ = prepare_dataset_args
    return guarded
