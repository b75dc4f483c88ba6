"""``kohya-multiplier train_network ...``: run an unmodified sd-scripts training script with multipliers.

The wrapper takes exactly the script's own arguments plus two of its own, removed before the script
sees them: ``--sd-scripts DIR`` (or ``KOHYA_SD_SCRIPTS``, or the user config from
``kohya-multiplier configure``) and ``--multiplier_schedule FILE``. It puts the checkout on
``sys.path``, installs the hooks of :mod:`kohya_multiplier.sdscripts.inject` and runs the script in
this process as ``__main__``, so ``accelerate launch -m kohya_multiplier train_network ...`` works
as ``accelerate launch train_network.py ...`` does.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from pathlib import Path

from kohya_multiplier.errors import UserError
from kohya_multiplier.sdscripts import compat, locate, scripts
from kohya_multiplier.sdscripts import session as _session

# Set in the environment of a re-executed wrapper, so that it never re-executes twice.
_REEXEC_ENV = "KOHYA_MULTIPLIER_REEXECUTED"


def split_own_options(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(--sd-scripts value, --multiplier_schedule value, the rest for the script)."""
    names = {
        "--sd-scripts": "sd_scripts",
        "--sd_scripts": "sd_scripts",
        "--multiplier_schedule": "schedule",
        "--multiplier-schedule": "schedule",
    }
    found = {"sd_scripts": None, "schedule": None}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in names:
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise UserError("needs a value", key=name)
                value = argv[i + 1]
                i += 1
            found[names[name]] = value
        else:
            rest.append(arg)
        i += 1
    return found["sd_scripts"], found["schedule"], rest


def run_training(script_word: str, argv: list[str]) -> int:
    """Run the checkout's training script ``script_word`` (``train_network`` or ``train_network.py``)."""
    sd_scripts, schedule, script_args = split_own_options(list(argv))
    checkout = locate.resolve_checkout(sd_scripts)
    script = scripts.require_trainable(checkout.root, script_word).path  # refusals before any warning
    revision = locate.require_supported(checkout.root)
    _reexecute_if_torch_missing(checkout, script.name, argv)

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


def _reexecute_if_torch_missing(checkout: locate.Checkout, script_filename: str, argv: list[str]) -> None:
    """Run sd-scripts' own interpreter when this one cannot import torch (the package was installed
    elsewhere, e.g. with pipx): same command, with this package on its PYTHONPATH."""
    if importlib.util.find_spec("torch") is not None or os.environ.get(_REEXEC_ENV):
        return
    python = checkout.python
    if not python.exists() or Path(sys.executable).resolve() == python.resolve():
        raise UserError(
            f"torch is not importable from {sys.executable}; install kohya-multiplier into the Python that runs "
            f"sd-scripts, or give it with `kohya-multiplier configure --python PY`"
        )
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    env[_REEXEC_ENV] = "1"
    command = script_filename[: -len(".py")] if script_filename.endswith(".py") else script_filename
    args = [str(python), "-m", "kohya_multiplier", command, "--sd-scripts", str(checkout.root), *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(python), args, env)
