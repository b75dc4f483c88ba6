"""Loading the developer scripts of scripts/ (their names have dashes) as modules, for the tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def load_script(name: str):
    """A developer script of scripts/ (``plan-hashes.py``, ``import-graph.py``) as a module."""
    path = Path(__file__).resolve().parent.parent / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
