"""Test-only: DataLoader workers started by ``spawn``, as on Windows and macOS.

Imported by this folder's sitecustomize.py when KOHYA_MULTIPLIER_TEST_SPAWN is set: makes spawn
the default start method in every process of the run. With KOHYA_MULTIPLIER_TEST_SPAWN=fail, a
spawned worker cannot import kohya-multiplier's dataset module (so it dies while unpickling the
dataset), for the test that a failing worker ends the run with its error instead of a hang.
"""

import importlib.abc
import multiprocessing
import os
import sys

multiprocessing.set_start_method("spawn", force=True)


class _FailInWorker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        # a spawned child unpickles the dataset before it knows its parent: it is still "inheriting"
        child = multiprocessing.parent_process() is not None or getattr(multiprocessing.current_process(), "_inheriting", False)
        if fullname == "kohya_multiplier.sdscripts.dataset" and child:
            raise ImportError("test-only failure of a spawned DataLoader worker (KOHYA_MULTIPLIER_TEST_SPAWN=fail)")
        return None


if os.environ.get("KOHYA_MULTIPLIER_TEST_SPAWN") == "fail":
    sys.meta_path.insert(0, _FailInWorker())
