"""``kohya-multiplier train_network ...``: run an unmodified sd-scripts training script with multipliers.

The wrapper takes exactly the script's own arguments plus two of its own, removed before the script
sees them: ``--sd-scripts DIR`` (or ``KOHYA_SD_SCRIPTS``, or the user config from
``kohya-multiplier configure``) and ``--multiplier_schedule FILE``. It puts the checkout on
``sys.path``, installs the hooks of :mod:`kohya_multiplier.sdscripts.inject` and runs the script in
this process as ``__main__``, so ``accelerate launch -m kohya_multiplier train_network ...`` works
as ``accelerate launch train_network.py ...`` does.
"""

from __future__ import annotations

import runpy
import sys

from kohya_multiplier.errors import UserError
from kohya_multiplier.runtime.options import take_options
from kohya_multiplier.sdscripts import compat
from kohya_multiplier.checkouts import interpreter, locate, scripts
from kohya_multiplier.sdscripts import session as _session


def split_own_options(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(--sd-scripts value, --multiplier_schedule value, the rest for the script)."""
    names = {
        "--sd-scripts": "sd_scripts",
        "--sd_scripts": "sd_scripts",
        "--multiplier_schedule": "schedule",
        "--multiplier-schedule": "schedule",
    }
    found, rest = take_options(argv, names)
    return found["sd_scripts"], found["schedule"], rest


def run_training(script_word: str, argv: list[str]) -> int:
    """Run the checkout's training script ``script_word`` (``train_network`` or ``train_network.py``)."""
    sd_scripts, schedule, script_args = split_own_options(list(argv))
    checkout = locate.resolve_checkout(sd_scripts)
    script = scripts.require_trainable(checkout.root, script_word).path  # refusals before any warning
    revision = locate.require_supported(checkout.root)
    interpreter.reexecute_if_torch_missing(checkout, script.name, argv)

    compat.install_torchvision_workaround()
    root = str(checkout.root)
    if root not in sys.path:
        sys.path.insert(0, root)  # train_network, networks.*, library.*
    session = _session.start(schedule, revision=revision.verdict(), layout=revision.layout, script_path=str(script))

    from kohya_multiplier.sdscripts import inject, spawn_main, worker_watch

    inject.install(session)
    spawn_main.install_in_parent(str(script))
    worker_watch.install()
    saved_argv = sys.argv
    sys.argv = [str(script), *script_args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        code = stop.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
    return 0
