"""Test-only: the tiny HunyuanImage-2.1 sizes, and the shrinks that make sd-scripts build them.

Imported by this folder's sitecustomize.py when KOHYA_MULTIPLIER_TINY_HUNYUAN=1 is set, and by
tiny_hunyuan.py, which builds the tiny model from the same sizes (this module is the single source
of truth). Never used by users.

sd-scripts hard-codes HunyuanImage-2.1's sizes in four places, shrunk here right after the real
module has executed:

- ``library.hunyuan_image_models``: ``HYImageDiffusionTransformer.__init__`` sets its sizes as
  literal locals (width 3584, 28 heads, 20 double and 40 single blocks, 2D RoPE of [64, 64], text
  width 3584, the byT5 mapper's 2048). Nothing outside the method can reach them, so its source is
  recompiled with these literals replaced (each must occur exactly once: a changed upstream
  fails loudly here instead of building a different model); the rest of the method, its class and
  its module stay sd-scripts' own.
- ``library.hunyuan_image_vae``: ``HunyuanVAE2D.__init__`` passes its channel widths and block
  counts as keywords to ``Encoder`` and ``Decoder``; those two names are wrapped (subclasses that
  keep the class name) to pass tiny ones. The 64 latent channels and the 32x downscale stay.
- ``library.hunyuan_image_text_encoder``: the Qwen2.5-VL and byT5 configs are JSON literals inside
  the loaders, built with ``Qwen2_5_VLConfig(**config)`` / ``T5Config(**config)``; those names are
  wrapped to override the sizes. byT5 keeps d_model 1472: sd-scripts hard-codes 1472 for the
  zero byT5 embedding of a caption without quoted text, and the DiT's byT5 mapper reads it.
"""

from __future__ import annotations

import inspect
import os
import textwrap

ENV = "KOHYA_MULTIPLIER_TINY_HUNYUAN"

# --- Qwen2.5-VL (the VLM text encoder) ----------------------------------------------------------
# Its hidden states [-3] are used, so it needs at least 2 layers. Head width 16: the multimodal
# RoPE sections (temporal, height, width) must add up to half of it.
QWEN_VOCAB = 320  # the offline byte-level tokenizer (tiny_hunyuan.py) has 259 tokens
QWEN_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_window_layers=3,
    vocab_size=QWEN_VOCAB,
)
QWEN_MROPE_SECTION = [2, 3, 3]
# The vision tower is loaded (its weights are in the checkpoint) but never run on captions.
QWEN_VISION = dict(
    depth=1, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=QWEN_TEXT["hidden_size"], fullatt_block_indexes=[0]
)

# --- byT5 -----------------------------------------------------------------------------------------
BYT5 = dict(d_ff=32, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1)  # d_model stays 1472
BYT5_D_MODEL = 1472

# --- the DiT ------------------------------------------------------------------------------------
# Head width 64 / 2 = 32 = the sum of the 2D RoPE dimensions. Its text input is Qwen's hidden state.
DIT_HIDDEN = 64
DIT_HEADS = 2
DIT_DOUBLE_BLOCKS = 1
DIT_SINGLE_BLOCKS = 1
DIT_ROPE = [16, 16]
DIT_BYT5_MAPPER = 32
# literal in sd-scripts' HYImageDiffusionTransformer.__init__ -> what the tiny model has instead
DIT_LITERALS = {
    "self.rope_dim_list = [64, 64]": f"self.rope_dim_list = {DIT_ROPE!r}",
    "self.hidden_size = 3584": f"self.hidden_size = {DIT_HIDDEN}",
    "self.heads_num = 28": f"self.heads_num = {DIT_HEADS}",
    "mm_double_blocks_depth = 20": f"mm_double_blocks_depth = {DIT_DOUBLE_BLOCKS}",
    "mm_single_blocks_depth = 40": f"mm_single_blocks_depth = {DIT_SINGLE_BLOCKS}",
    "text_states_dim = 3584": f"text_states_dim = {QWEN_TEXT['hidden_size']}",
    "out_dim=2048, hidden_dim=2048": f"out_dim={DIT_BYT5_MAPPER}, hidden_dim={DIT_BYT5_MAPPER}",
    # recompiled outside its class, the method has no __class__ cell for the zero-argument super()
    "super().__init__()": "super(HYImageDiffusionTransformer, self).__init__()",
}

# --- the VAE ------------------------------------------------------------------------------------
# Six levels keep the 32x downscale. GroupNorm uses 32 groups; the encoder's last width must be a
# multiple of 2 x 64 latent channels, and each 2x step may at most quadruple or quarter the width.
# No residual blocks in the encoder's levels (the decoder gets one each, its +1): the encoder runs
# in float16, which is slow on CPU; its middle blocks and every down/upsampling stay.
VAE_BLOCK_OUT_CHANNELS = (32, 32, 32, 32, 32, 128)
VAE_LAYERS_PER_BLOCK = 0


def _shrink_dit(module):
    cls = module.HYImageDiffusionTransformer
    source = textwrap.dedent(inspect.getsource(cls.__init__))
    for old, new in DIT_LITERALS.items():
        count = source.count(old)
        if count != 1:
            raise RuntimeError(f"km_tiny_hunyuan: {old!r} occurs {count} times in HYImageDiffusionTransformer.__init__, not once")
        source = source.replace(old, new)
    namespace: dict = {}
    exec(compile(source, f"<HYImageDiffusionTransformer.__init__ shrunk by {__name__}>", "exec"), module.__dict__, namespace)
    init = namespace["__init__"]
    init.__qualname__ = cls.__init__.__qualname__
    cls.__init__ = init


def _shrink_vae(module):
    real_encoder, real_decoder = module.Encoder, module.Decoder

    class Encoder(real_encoder):
        def __init__(self, *args, **kwargs):
            kwargs["block_out_channels"] = VAE_BLOCK_OUT_CHANNELS
            kwargs["num_res_blocks"] = VAE_LAYERS_PER_BLOCK
            super().__init__(*args, **kwargs)

    class Decoder(real_decoder):
        def __init__(self, *args, **kwargs):
            kwargs["block_out_channels"] = list(reversed(VAE_BLOCK_OUT_CHANNELS))
            kwargs["num_res_blocks"] = VAE_LAYERS_PER_BLOCK
            super().__init__(*args, **kwargs)

    for tiny, real in ((Encoder, real_encoder), (Decoder, real_decoder)):
        tiny.__module__, tiny.__qualname__ = real.__module__, real.__qualname__
    module.Encoder, module.Decoder = Encoder, Decoder


def qwen_text_config(text_config: dict) -> dict:
    """sd-scripts' Qwen2.5-VL text config with the tiny sizes."""
    layers = QWEN_TEXT["num_hidden_layers"]
    rope = dict(text_config.get("rope_scaling") or {}, mrope_section=QWEN_MROPE_SECTION)
    return {**text_config, **QWEN_TEXT, "layer_types": ["full_attention"] * layers, "rope_scaling": rope}


def _shrink_text_encoders(module):
    real_qwen, real_t5 = module.Qwen2_5_VLConfig, module.T5Config

    def Qwen2_5_VLConfig(*args, **kwargs):  # noqa: N802 - stands in for the class sd-scripts calls
        kwargs = qwen_text_config(kwargs)  # top level: older transformers read the text sizes there
        kwargs["text_config"] = qwen_text_config(kwargs.get("text_config") or {})
        kwargs["vision_config"] = {**(kwargs.get("vision_config") or {}), **QWEN_VISION}
        return real_qwen(*args, **kwargs)

    def T5Config(*args, **kwargs):  # noqa: N802
        if kwargs.get("d_model") != BYT5_D_MODEL:
            raise RuntimeError(f"km_tiny_hunyuan: sd-scripts' byT5 config has d_model {kwargs.get('d_model')}, not {BYT5_D_MODEL}")
        kwargs.update(BYT5)
        return real_t5(*args, **kwargs)

    module.Qwen2_5_VLConfig = Qwen2_5_VLConfig
    module.T5Config = T5Config


def shrinks() -> dict:
    """sd-scripts module name -> the function that shrinks it; empty unless KOHYA_MULTIPLIER_TINY_HUNYUAN=1."""
    if os.environ.get(ENV) != "1":
        return {}
    return {
        "library.hunyuan_image_models": _shrink_dit,
        "library.hunyuan_image_vae": _shrink_vae,
        "library.hunyuan_image_text_encoder": _shrink_text_encoders,
    }
