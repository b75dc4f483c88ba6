"""Work-arounds for environments sd-scripts runs in. Imports nothing heavy until needed."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_META_REGISTRATIONS = "torchvision._meta_registrations"


def _torchvision_ops_loaded() -> bool:
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - the lookup itself is the test
    except (AttributeError, RuntimeError):
        return False
    return True


class _EmptyModuleLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module):
        module.__doc__ = "Left empty by kohya-multiplier: torchvision's compiled ops did not load."


class _SkipBrokenMetaRegistrations(importlib.abc.MetaPathFinder):
    """Replaces torchvision._meta_registrations by an empty module when torchvision's C ops are absent.

    A torchvision wheel built for another torch (e.g. PyPI's CUDA torchvision beside a CPU torch)
    cannot load its compiled ops, and its ``_meta_registrations`` then fails the whole
    ``import torchvision`` with "operator torchvision::nms does not exist". sd-scripts only uses the
    pure-Python ``torchvision.transforms``, which work without those ops. With a matching
    torchvision the ops are there and this finder steps aside.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _META_REGISTRATIONS or _torchvision_ops_loaded():
            return None
        return importlib.machinery.ModuleSpec(fullname, _EmptyModuleLoader())


def install_torchvision_workaround() -> None:
    """Idempotent; must run before torchvision is first imported."""
    if any(isinstance(f, _SkipBrokenMetaRegistrations) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _SkipBrokenMetaRegistrations())
