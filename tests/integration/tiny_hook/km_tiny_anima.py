"""Test-only: the tiny Anima model's sizes, and what sitecustomize.py changes in sd-scripts to build them.

Active only when KOHYA_MULTIPLIER_TINY_ANIMA=1 (sitecustomize.py merges :func:`shrinks`). The sizes
here are the single source of truth: ``tiny_anima.py`` builds its checkpoints from them, and the
training processes build the same shapes through the shrinks below.

What sd-scripts hard-codes for Anima, and how it is shrunk:

- the DiT config is a literal dict inside ``anima_utils.load_anima_model`` (2048 channels, 28
  blocks, 16 heads, AdaLN-LoRA dim 256); ``anima_models.Anima`` is replaced by a subclass that
  overrides those arguments (each replacement keeps the real class name, as networks/lora_anima.py
  picks its targets by class name);
- the LLM adapter (Qwen3 hidden states -> T5-token space) is built inside ``Anima.__init__`` with
  literal dims 1024 and 6 layers; ``anima_models.LLMAdapter`` is replaced by a subclass that
  overrides them (its blocks, the LoRA targets ``LLMAdapterTransformerBlock``, keep their class);
- the Qwen-Image VAE config is a JSON literal inside ``qwen_image_autoencoder_kl.load_vae``
  (base_dim 96, dim_mult [1, 2, 4, 4], 2 res blocks); ``AutoencoderKLQwenImage`` is replaced by a
  subclass that overrides those three (3 down-samplings stay: the 8x spatial scale and z_dim 16
  are what the latent caches and the DiT expect).

The Qwen3 text encoder needs no shrink: ``--qwen3 DIR`` loads it with transformers from the
folder's own config.json, which tiny_anima.py writes with :data:`QWEN3` sizes.
"""

import os

ANIMA_ENV = "KOHYA_MULTIPLIER_TINY_ANIMA"

# Qwen3 text encoder: the real vocabulary (the tokenizer's ids reach 151,668), tiny everything else.
QWEN3 = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8
)
# LLM adapter: its source is the Qwen3 hidden state; its output is the DiT's cross-attention input.
# Its embedding keeps T5's 32,128 rows (sd-scripts hard-codes them; the ids come from T5's tokenizer).
ANIMA_LLM_ADAPTER = dict(source_dim=QWEN3["hidden_size"], target_dim=32, model_dim=32, num_layers=1, num_heads=2)
# DiT: head dim 64 / 2 = 32, which the 3D RoPE splits into 10 + 10 + 12 (each even).
ANIMA_DIT = dict(
    model_channels=64, num_blocks=1, num_heads=2, adaln_lora_dim=16, crossattn_emb_channels=ANIMA_LLM_ADAPTER["target_dim"]
)
ANIMA_VAE = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1)


def _same_name(cls, real):
    cls.__module__ = real.__module__
    cls.__qualname__ = real.__qualname__
    cls.__name__ = real.__name__
    return cls


def _shrink_anima_models(module):
    real_dit, real_adapter = module.Anima, module.LLMAdapter

    class Anima(real_dit):
        def __init__(self, *args, **kwargs):
            kwargs.update(ANIMA_DIT)
            super().__init__(*args, **kwargs)

    class LLMAdapter(real_adapter):
        def __init__(self, *args, **kwargs):
            kwargs.update(ANIMA_LLM_ADAPTER)
            super().__init__(*args, **kwargs)

    module.Anima = _same_name(Anima, real_dit)
    module.LLMAdapter = _same_name(LLMAdapter, real_adapter)


def _shrink_qwen_image_vae(module):
    real = module.AutoencoderKLQwenImage

    class AutoencoderKLQwenImage(real):
        def __init__(self, *args, **kwargs):
            kwargs.update(ANIMA_VAE)
            super().__init__(*args, **kwargs)

    module.AutoencoderKLQwenImage = _same_name(AutoencoderKLQwenImage, real)


def shrinks() -> dict:
    """sd-scripts module name -> function(module), when this process asked for the tiny Anima."""
    if os.environ.get(ANIMA_ENV) != "1":
        return {}
    return {"library.anima_models": _shrink_anima_models, "library.qwen_image_autoencoder_kl": _shrink_qwen_image_vae}
