"""Test-only start-up hook for sd-scripts processes of the integration tests. Never used by users.

The integration tests put this folder on PYTHONPATH, so Python imports this module at start-up in
every process of a run (the script, DataLoader workers, `accelerate launch` children). It does
nothing unless the test set KOHYA_MULTIPLIER_TINY_UNET:

- it shrinks the block widths of sd-scripts' ``library.original_unet`` (module constants read when
  the UNet class is constructed) to those of the tiny model built by ``tiny_sd.py``;
- for stock scripts run without our wrapper, it applies the same torchvision work-around as the
  product's launcher (see ``kohya_multiplier.sdscripts.compat``).
"""

import importlib.abc
import importlib.machinery
import os
import sys

_WIDTHS = os.environ.get("KOHYA_MULTIPLIER_TINY_UNET")
_TARGET = "library.original_unet"


def _shrink(module):
    widths = tuple(int(w) for w in _WIDTHS.split(","))
    module.BLOCK_OUT_CHANNELS = widths
    module.TIMESTEP_INPUT_DIM = widths[0]
    module.TIME_EMBED_DIM = widths[0] * 4


class _ShrinkUNetFinder(importlib.abc.MetaPathFinder):
    """Runs the real module, then overrides its width constants before anyone uses them."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            _shrink(module)

        spec.loader.exec_module = exec_module
        return spec


if _WIDTHS:
    sys.meta_path.insert(0, _ShrinkUNetFinder())
    try:
        from kohya_multiplier.sdscripts.compat import install_torchvision_workaround
    except ImportError:  # the package is not on the path: stock runs in a bare checkout
        pass
    else:
        install_torchvision_workaround()
