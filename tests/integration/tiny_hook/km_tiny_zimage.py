"""Test-only: the tiny Z-Image DiT's sizes, and what sitecustomize.py changes in musubi-tuner to build it.

Active only when KOHYA_MULTIPLIER_TINY_ZIMAGE=1 (sitecustomize.py merges :func:`shrinks`). The sizes
here are the single source of truth: ``tiny_zimage.py`` builds its checkpoint and caches from them,
and the training processes build the same shapes through the shrink below.

What musubi-tuner hard-codes for Z-Image, and how it is shrunk:

- the DiT sizes are module constants of ``zimage/zimage_config.py`` (3840 channels, 30 layers, 2
  noise and 2 context refiner layers, 30 heads, RoPE axes 32 + 48 + 48 = the head width) and the
  Qwen3-4B width of the text encoder output it embeds (``DEFAULT_TRANSFORMER_CAP_FEAT_DIM``, 2560).
  ``zimage_model.create_model`` reads them as ``zimage_config.<NAME>`` when ``load_zimage_model``
  builds the model, so they are set to :data:`ZIMAGE_CONFIG` right after
  ``musubi_tuner.zimage.zimage_config`` has executed (before ``zimage_model`` imports its
  ``ROPE_AXES_DIMS`` too). Left as they are: the RoPE table lengths, the 16 latent channels and
  the 2x2 patches (the caches follow the real VAE), and the timestep embedder's literal 256 x 1024
  MLP (about 0.3 M parameters, small enough);
- nothing of Z-Image needs CUDA at import. Qwen3 comes from ``transformers``, whose import pulls in
  torchvision; a torchvision built for another torch fails that import ("operator torchvision::nms
  does not exist"), which sitecustomize.py's torchvision work-around answers, as for every tiny
  family.

The VAE and the Qwen3 text encoder are never built: training reads latents and text encoder
outputs from caches (written by ``tiny_zimage.py`` with musubi's own cache writers) and loads them
only for sample prompts, which the tests do not ask for.
"""

import os

ZIMAGE_ENV = "KOHYA_MULTIPLIER_TINY_ZIMAGE"

# head width 32 / 2 = 16 = 4 + 6 + 6, the RoPE axes (each even: RoPE pairs channels).
ZIMAGE_CONFIG = dict(
    DEFAULT_TRANSFORMER_DIM=32,
    DEFAULT_TRANSFORMER_N_LAYERS=2,
    DEFAULT_TRANSFORMER_N_REFINER_LAYERS=1,
    DEFAULT_TRANSFORMER_N_HEADS=2,
    DEFAULT_TRANSFORMER_N_KV_HEADS=2,
    DEFAULT_TRANSFORMER_CAP_FEAT_DIM=32,  # the text encoder output width: the caches' llm_embed tensors
    ROPE_AXES_DIMS=[4, 6, 6],
)
# What the Z-Image VAE gives (16 channels, 8x down, float32 as zimage_cache_latents.py runs it);
# not shrunk, the caches follow it.
ZIMAGE_LATENT_CHANNELS = 16
ZIMAGE_VAE_STRIDE = 8
# Tokens the Qwen3 chat template adds around a caption ("<|im_start|>user\n" ... "<|im_end|>\n
# <|im_start|>assistant\n"); the caches' text lengths follow it (a made-up output, a plausible length).
ZIMAGE_TEMPLATE_TOKENS = 8


def _shrink_zimage_config(module):
    for name, value in ZIMAGE_CONFIG.items():
        if not hasattr(module, name):
            raise AttributeError(f"km_tiny_zimage: musubi's zimage_config has no {name} any more")
        setattr(module, name, list(value) if isinstance(value, list) else value)


def shrinks() -> dict:
    """musubi-tuner module name -> function(module), when this process asked for the tiny Z-Image."""
    if os.environ.get(ZIMAGE_ENV) != "1":
        return {}
    return {"musubi_tuner.zimage.zimage_config": _shrink_zimage_config}
