"""``kohya-multiplier musubi SCRIPT ...``: run an unmodified musubi-tuner training script with multipliers.

The wrapper takes the script's own arguments plus two of its own, removed before the script sees
them: ``--multiplier_schedule FILE`` (the batches trained, as ``plan --schedule`` writes them) and
``--multiplier_epoch_offset K`` (serve the plan of epoch e + K in musubi's epoch e: how a run
continued with ``--resume`` trains what the uninterrupted run would have, since musubi restarts
its epochs at 1). It installs the hooks (``hooks.py``) and runs the script's module in this process
as ``__main__``, so ``accelerate launch -m kohya_multiplier musubi wan_train_network ...`` works as
``accelerate launch src/musubi_tuner/wan_train_network.py ...`` does.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys

from kohya_multiplier.checkouts import musubi as installs
from kohya_multiplier.errors import UserError, warn_once
from kohya_multiplier.runtime.options import take_options

OWN_OPTIONS = {"--multiplier_schedule": "schedule", "--multiplier-schedule": "schedule",
               "--multiplier_epoch_offset": "offset", "--multiplier-epoch-offset": "offset"}


def split_own_options(argv: list[str]) -> tuple[dict, list[str]]:
    """({schedule, offset}, the rest for the script)."""
    return take_options(argv, OWN_OPTIONS)


def epoch_offset(value: str | None) -> int:
    if value is None:
        return 0
    try:
        offset = int(value)
    except ValueError:
        offset = -1
    if offset < 0:
        raise UserError(f"must be a whole number of epochs >= 0, not {value!r}", key="--multiplier_epoch_offset")
    return offset


def run_musubi(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        raise UserError("usage: kohya-multiplier musubi SCRIPT <its arguments>, SCRIPT one of "
                        + ", ".join(sorted(installs.SCRIPTS)))
    module = installs.script_module(argv[0])
    own, script_args = split_own_options(argv[1:])
    offset = epoch_offset(own["offset"])
    install = installs.find_install()
    if importlib.util.find_spec(module) is None:
        raise UserError(f"this musubi-tuner ({install.version}) has no {module}", key="SCRIPT")
    release, differs = install.revision()
    if release is None:
        warn_once(f"musubi-tuner {install.version} is untested: its {differs} differs from v0.3.4; the run-time checks "
                  "stop the run in one line if a hook misses")
    from kohya_multiplier.musubi import hooks

    run = hooks.MusubiRun(schedule_path=own["schedule"], epoch_offset=offset)
    hooks.install(run)
    saved_argv = sys.argv
    sys.argv = [module, *script_args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
    return 0
