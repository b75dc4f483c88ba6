"""Test-only: the tiny Lumina Image 2.0 sizes and the shrinks that make sd-scripts build them.

Active only with KOHYA_MULTIPLIER_TINY_LUMINA=1 (sitecustomize.py merges :func:`shrinks` into its
own). The sizes below are the single source of truth: ``tiny_lumina.py`` reads them from here.

What sd-scripts hard-codes for Lumina, and how it is shrunk:
- ``library.lumina_models.LuminaParams.get_2b_config()`` (the only config ``load_lumina_model``
  builds NextDiT from: width 2304, 26 layers, 24 heads, caption width 2304): replaced by a class
  method returning :data:`LUMINA_PARAMS`;
- ``library.lumina_util.load_gemma2`` builds Gemma2 from a literal dict (gemma-2-2b: width 2304,
  26 layers, a 256,000-token vocabulary): the ``Gemma2Config`` name it calls is wrapped to
  override :data:`LUMINA_GEMMA2`;
- ``library.lumina_util.load_ae`` builds the FLUX AutoEncoder from
  ``flux_models.configs["schnell"].ae_params``: every FLUX config's ``ae_params`` takes
  :data:`LUMINA_AE` (z_channels stays 16, the latent channels NextDiT's in_channels expects).
"""

from __future__ import annotations

import dataclasses
import os

LUMINA_ENV = "KOHYA_MULTIPLIER_TINY_LUMINA"

# The tokenizer's pieces (tiny_lumina.py) must fit in this vocabulary. sd-scripts takes
# hidden_states[-2], so 2 layers are the fewest that keep it a real intermediate layer.
LUMINA_GEMMA2 = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    query_pre_attn_scalar=16,
    vocab_size=512,
)
# NextDiT: the head width (dim / n_heads) must equal sum(axes_dims), each even for RoPE; the
# caption embedder takes Gemma2's hidden states; in_channels is the AutoEncoder's 16 latent channels.
LUMINA_PARAMS = dict(
    patch_size=2,
    in_channels=16,
    dim=64,
    n_layers=1,
    n_heads=2,
    n_kv_heads=1,
    axes_dims=[8, 12, 12],
    axes_lens=[300, 512, 512],
    qk_norm=True,
    cap_feat_dim=LUMINA_GEMMA2["hidden_size"],
)
LUMINA_AE = dict(ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1)  # 4 levels keep the 8x downscale


def _shrink_lumina_models(module):
    params = module.LuminaParams

    def get_2b_config(cls):
        return cls(**LUMINA_PARAMS)

    params.get_2b_config = classmethod(get_2b_config)


def _shrink_lumina_util(module):
    real = module.Gemma2Config

    def Gemma2Config(*args, **kwargs):  # noqa: N802 - stands in for the class sd-scripts calls
        kwargs.update(LUMINA_GEMMA2)
        return real(*args, **kwargs)

    module.Gemma2Config = Gemma2Config


def _shrink_flux_ae(module):
    for spec in module.configs.values():
        spec.ae_params = dataclasses.replace(spec.ae_params, **LUMINA_AE)


def shrinks() -> dict:
    """sd-scripts module name -> the function that shrinks it, when the Lumina test asked for it."""
    if os.environ.get(LUMINA_ENV) != "1":
        return {}
    return {
        "library.lumina_models": _shrink_lumina_models,
        "library.lumina_util": _shrink_lumina_util,
        "library.flux_models": _shrink_flux_ae,
    }
