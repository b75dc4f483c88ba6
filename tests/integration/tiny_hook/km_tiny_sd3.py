"""Test-only: the tiny SD3 model's sizes and what sd-scripts hard-codes for SD3 that must shrink to
them. Active only when KOHYA_MULTIPLIER_TINY_SD3=1 (sitecustomize.py merges :func:`shrinks`).

The sizes are the single source of truth: ``tiny_sd3.py`` builds the model from them, and every
process of a training run shrinks sd-scripts' configs to them.

What sd-scripts hard-codes, and how it shrinks here:
- ``library.sd3_utils`` builds CLIP-L and CLIP-G from literal ``CLIPTextConfig(hidden_size=768 /
  1280, ...)`` calls: the config each call gets is replaced by the tiny one of the same encoder;
- ``library.flux_utils.load_t5xxl`` (which SD3 loads T5-XXL with) builds its ``T5Config`` from a
  literal JSON: the T5 sizes are replaced;
- ``library.sd3_models.SDVAE`` builds ``VAEEncoder()`` / ``VAEDecoder()`` with their default widths:
  the defaults become the tiny ones (4 levels keep the 8x downscale, 16 latent channels stay);
- ``library.strategy_sd3.Sd3TextEncodingStrategy.concat_encodings`` pads the CLIP outputs to the
  literal T5-XXL width 4096 before joining them with T5's: it runs unchanged on T5's output padded
  to 4096, and the result is cut back to the tiny T5 width (what the real code gives with 4096
  replaced by that width).
The MMDiT needs no shrink: sd-scripts reads its depth (width = 64 x depth), patch size, position
grid and input widths from the checkpoint.
"""

from __future__ import annotations

import os

SD3_ENV = "KOHYA_MULTIPLIER_TINY_SD3"

SD3_CLIP_L = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
SD3_CLIP_G = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
# T5's width is the MMDiT's context width; the CLIP-L and CLIP-G outputs, side by side, are padded
# to it (as 768 + 1280 are padded to 4096), so it must be at least their sum.
SD3_T5 = dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2)
SD3_CONTEXT_WIDTH = SD3_T5["d_model"]
SD3_REAL_CONTEXT_WIDTH = 4096  # T5-XXL's, a literal in strategy_sd3
assert SD3_CLIP_L["hidden_size"] + SD3_CLIP_G["hidden_size"] <= SD3_CONTEXT_WIDTH
# MMDiT (SD3 medium layout: no qk norm, no extra self-attention blocks). Width 64 x depth, depth heads.
SD3_DEPTH = 2
SD3_PATCH_SIZE = 2
SD3_POS_EMBED_MAX_SIZE = 32  # patches per side; the largest bucket (256 px) is 16
SD3_ADM_IN_CHANNELS = SD3_CLIP_L["projection_dim"] + SD3_CLIP_G["projection_dim"]  # both pooled outputs
SD3_VAE = dict(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1)  # GroupNorm uses 32 groups


def _shrink_clip_configs(module):
    real = module.CLIPTextConfig
    by_width = {768: SD3_CLIP_L, 1280: SD3_CLIP_G}  # how sd-scripts' two calls differ

    def CLIPTextConfig(*args, **kwargs):  # noqa: N802 - stands in for the class sd-scripts calls
        tiny = by_width.get(kwargs.get("hidden_size"))
        if tiny is not None:
            kwargs.update(tiny)
        return real(*args, **kwargs)

    module.CLIPTextConfig = CLIPTextConfig


def _shrink_t5_config(module):
    real = module.T5Config

    def T5Config(*args, **kwargs):  # noqa: N802
        kwargs.update(SD3_T5)
        return real(*args, **kwargs)

    module.T5Config = T5Config


def _shrink_vae(module):
    real_encoder, real_decoder = module.VAEEncoder, module.VAEDecoder

    class VAEEncoder(real_encoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**SD3_VAE, **kwargs})

    class VAEDecoder(real_decoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**SD3_VAE, **kwargs})

    for tiny, real in ((VAEEncoder, real_encoder), (VAEDecoder, real_decoder)):
        tiny.__module__, tiny.__qualname__ = real.__module__, real.__qualname__
    module.VAEEncoder, module.VAEDecoder = VAEEncoder, VAEDecoder


def _shrink_context_width(module):
    import torch

    strategy = module.Sd3TextEncodingStrategy
    real = strategy.concat_encodings

    def concat_encodings(self, lg_out, t5_out, lg_pooled):
        if t5_out is not None:
            t5_out = torch.nn.functional.pad(t5_out, (0, SD3_REAL_CONTEXT_WIDTH - t5_out.shape[-1]))
        context, pooled = real(self, lg_out, t5_out, lg_pooled)
        return context[..., :SD3_CONTEXT_WIDTH], pooled

    strategy.concat_encodings = concat_encodings


def shrinks() -> dict:
    """sd-scripts module name -> the function that shrinks it; empty unless SD3_ENV is "1"."""
    if os.environ.get(SD3_ENV) != "1":
        return {}
    return {
        "library.sd3_utils": _shrink_clip_configs,
        "library.flux_utils": _shrink_t5_config,
        "library.sd3_models": _shrink_vae,
        "library.strategy_sd3": _shrink_context_width,
    }
