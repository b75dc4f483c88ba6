"""Test-only: the tiny Wan 2.1 DiT's sizes, and what sitecustomize.py changes in musubi-tuner to build it.

Active only when KOHYA_MULTIPLIER_TINY_WAN=1 (sitecustomize.py merges :func:`shrinks`). The sizes
here are the single source of truth: ``tiny_wan.py`` builds its checkpoint and caches from them,
and the training processes build the same shapes through the shrinks below.

What musubi-tuner hard-codes for Wan, and how it is shrunk:

- the DiT sizes come from ``wan.configs.WAN_CONFIGS[--task]`` (EasyDicts: 1536 channels, 30
  blocks, 12 heads for t2v-1.3B; text_len 512 from the shared config), which ``load_wan_model``
  passes to ``WanModel``; every config in ``WAN_CONFIGS`` is updated with :data:`WAN_CONFIG`
  right after ``musubi_tuner.wan.configs`` has executed (the per-task modules hold the same
  objects, so they see it too);
- the T5 context width (4096, umT5-XXL) is ``WanModel``'s default ``text_dim``, which
  ``load_wan_model`` never passes; ``model.WanModel`` is replaced by a subclass that sets it (it
  keeps the real class name; networks/lora_wan.py targets ``WanAttentionBlock``, left as is);
- ``wan/modules/t5.py`` evaluates ``torch.cuda.current_device()`` as a default argument when its
  class is defined, which raises on a CPU-only torch ("Torch not compiled with CUDA enabled") and
  so fails ``import musubi_tuner.wan_train_network``; while that module executes on a machine
  without CUDA, ``torch.cuda.current_device`` answers 0, the value it has on a one-GPU machine
  (only a default: the trainer passes its own device).

The VAE and T5 are not built: training reads latents and T5 outputs from caches (written by
``tiny_wan.py`` with musubi's own cache writers) and loads them only for sample prompts.
"""

import importlib.abc
import importlib.machinery
import os
import sys

WAN_ENV = "KOHYA_MULTIPLIER_TINY_WAN"

# head dim 32 / 2 = 16, which the 3D RoPE splits into 8 + 4 + 4 (each even).
WAN_CONFIG = dict(dim=32, ffn_dim=64, freq_dim=32, num_heads=2, num_layers=2, text_len=16)
WAN_TEXT_DIM = 32  # T5 context width: the caches' varlen_t5 tensors are [tokens <= text_len, WAN_TEXT_DIM]
# What the Wan 2.1 VAE gives (vae_stride (4, 8, 8), z_dim 16); not shrunk, the caches follow it.
WAN_LATENT_CHANNELS = 16
WAN_VAE_STRIDE = (4, 8, 8)

_T5_MODULE = "musubi_tuner.wan.modules.t5"


def _same_name(cls, real):
    cls.__module__ = real.__module__
    cls.__qualname__ = real.__qualname__
    cls.__name__ = real.__name__
    return cls


def _shrink_wan_configs(module):
    for config in module.WAN_CONFIGS.values():
        config.update(WAN_CONFIG)


def _shrink_wan_model(module):
    real = module.WanModel

    class WanModel(real):
        def __init__(self, *args, **kwargs):
            kwargs["text_dim"] = WAN_TEXT_DIM
            super().__init__(*args, **kwargs)

    module.WanModel = _same_name(WanModel, real)


class _CpuCurrentDeviceFinder(importlib.abc.MetaPathFinder):
    """Lets wan/modules/t5.py define its class on a CPU-only torch (see the module docstring)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _T5_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        real_exec = spec.loader.exec_module

        def exec_module(module):
            import torch

            if torch.cuda.is_available():
                return real_exec(module)
            real_current_device = torch.cuda.current_device
            torch.cuda.current_device = lambda: 0
            try:
                real_exec(module)
            finally:
                torch.cuda.current_device = real_current_device

        spec.loader.exec_module = exec_module
        return spec


def shrinks() -> dict:
    """musubi-tuner module name -> function(module), when this process asked for the tiny Wan."""
    if os.environ.get(WAN_ENV) != "1":
        return {}
    if not any(isinstance(finder, _CpuCurrentDeviceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CpuCurrentDeviceFinder())
    return {"musubi_tuner.wan.configs": _shrink_wan_configs, "musubi_tuner.wan.modules.model": _shrink_wan_model}
