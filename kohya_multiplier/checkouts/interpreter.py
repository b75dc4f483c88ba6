"""The checkout's own interpreter: a wrapper started by a Python without torch (installed with pipx,
say) runs again under the Python that runs sd-scripts."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from kohya_multiplier.errors import UserError
from kohya_multiplier.checkouts import locate

# Set in the environment of a re-executed wrapper, so that it never re-executes twice.
_REEXEC_ENV = "KOHYA_MULTIPLIER_REEXECUTED"


def reexecute_if_torch_missing(checkout: locate.Checkout, script_filename: str, argv: list[str]) -> None:
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
