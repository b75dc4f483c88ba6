"""DataLoader workers started by ``spawn`` (Windows, macOS; Linux when forced) in a wrapped run.

A spawned worker re-imports the parent's main module as ``__mp_main__`` before it unpickles the
dataset. For a wrapped run that main module is the sd-scripts script, whose imports (diffusers,
transformers, torchvision) run before any code of ours, so a work-around the wrapper installed in
the main process (``compat``) would be missing there: such a worker dies on ``import
torchvision``. The wrapper therefore has spawned children import this module as their main
instead: it installs the same work-arounds, then runs the script as ``__mp_main__``, exactly as
multiprocessing would have, and takes over its globals (objects pickled as ``__main__.X`` resolve).
"""

from __future__ import annotations

import os
import runpy

from kohya_multiplier.sdscripts import compat

SCRIPT_ENV = "KOHYA_MULTIPLIER_SPAWN_SCRIPT"


def install_in_parent(script_path: str) -> None:
    """Make spawned children of this process start through this module. Idempotent."""
    import multiprocessing.spawn as spawn

    os.environ[SCRIPT_ENV] = os.path.abspath(script_path)  # children inherit the environment
    original = spawn.get_preparation_data
    if getattr(original, "__wrapped__", None) is not None:
        return

    def get_preparation_data(name):
        data = original(name)
        main_path = data.get("init_main_from_path")
        if main_path and os.path.abspath(main_path) == os.environ.get(SCRIPT_ENV):
            del data["init_main_from_path"]
            data["init_main_from_name"] = __name__
        return data

    get_preparation_data.__wrapped__ = original
    spawn.get_preparation_data = get_preparation_data


if __name__ == "__mp_main__":
    compat.install_torchvision_workaround()
    _script = os.environ.get(SCRIPT_ENV)
    if _script:
        globals().update(runpy.run_path(_script, run_name="__mp_main__"))
