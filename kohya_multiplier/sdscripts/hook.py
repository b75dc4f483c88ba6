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
from pathlib import Path

from kohya_multiplier.sdscripts import session as _session

SCHEDULE_OPTIONS = ("--multiplier_schedule", "--multiplier-schedule")


def activate() -> None:
    if in_worker_process():
        return  # a DataLoader worker: its dataset arrives pickled, hooks included
    schedule = _take_schedule_option(sys.argv)
    from library import config_util

    from kohya_multiplier.sdscripts import inject, worker_watch
    from kohya_multiplier.checkouts import locate

    if inject.installed():
        return  # the wrapper (or an earlier import) installed everything
    revision = locate.detect_revision(Path(config_util.__file__).resolve().parents[1])
    session = _session.start(schedule, revision=revision.verdict(), layout=revision.layout, script_path=sys.argv[0] if sys.argv else None)
    inject.install(session)
    worker_watch.install()


def in_worker_process() -> bool:
    """A child process of multiprocessing, also while a spawned one is still importing the script
    as ``__mp_main__`` (before it knows its parent, it is marked as inheriting)."""
    if multiprocessing.parent_process() is not None:
        return True
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


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

