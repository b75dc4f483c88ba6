"""Test-only start-up hook for sd-scripts processes of the integration tests. Never used by users.

The integration tests put this folder on PYTHONPATH, so Python imports this module at start-up in
every process of a run (the script, DataLoader workers, `accelerate launch` children). It does
nothing unless the test set one of its environment variables:

- KOHYA_MULTIPLIER_TINY_UNET="32,64,64,64": shrinks the block widths of sd-scripts'
  ``library.original_unet`` (module constants read when the UNet class is constructed) to those of
  the tiny SD1.x model built by ``tiny_sd.py``;
- KOHYA_MULTIPLIER_TINY_SDXL=1: shrinks what sd-scripts hard-codes for SDXL (U-Net constants and
  the literal arguments it gives its Transformer2DModel, the two text encoder configs, the VAE
  sizes) to the tiny model built by ``tiny_sdxl.py``;
- KOHYA_MULTIPLIER_TINY_FLUX=1: shrinks the FLUX, AutoEncoder, CLIP-L and T5 configs sd-scripts
  hard-codes to the tiny model built by ``tiny_flux.py``;
- KOHYA_MULTIPLIER_TINY_ANIMA=1: shrinks the Anima DiT, LLM adapter and Qwen-Image VAE configs
  sd-scripts hard-codes to the tiny model built by ``tiny_anima.py`` (sizes and shrinks in
  ``km_tiny_anima.py``);
- KOHYA_MULTIPLIER_TINY_LUMINA=1: shrinks the Lumina NextDiT, Gemma2 and AutoEncoder configs
  sd-scripts hard-codes to the tiny model built by ``tiny_lumina.py`` (sizes and shrinks in
  ``km_tiny_lumina.py``);
- KOHYA_MULTIPLIER_TINY_SD3=1: shrinks the CLIP-L, CLIP-G, T5, VAE and text-context sizes
  sd-scripts hard-codes for SD3 to the tiny model built by ``tiny_sd3.py`` (``km_tiny_sd3.py``);
- KOHYA_MULTIPLIER_TINY_HUNYUAN=1: shrinks the HunyuanImage-2.1 DiT, VAE, Qwen2.5-VL and byT5 sizes
  sd-scripts hard-codes to the tiny model built by ``tiny_hunyuan.py`` (sizes and shrinks in
  ``km_tiny_hunyuan.py``);
- KOHYA_MULTIPLIER_TINY_WAN=1, KOHYA_MULTIPLIER_TINY_ZIMAGE=1: shrink what musubi-tuner hard-codes
  for Wan 2.1 and Z-Image to the tiny models of ``tiny_wan.py`` and ``tiny_zimage.py`` (sizes and
  shrinks in ``km_tiny_wan.py``, ``km_tiny_zimage.py``);
- with any of them, for stock scripts run without our wrapper, it applies the same torchvision
  work-around as the product's launcher (see ``kohya_multiplier.sdscripts.compat``).

Each shrink runs right after the real sd-scripts module has executed, before anything builds a
model from it. The sizes below are the single source of truth: the model builders read them from
this module (it is importable as ``sitecustomize`` in their process).
"""

import dataclasses
import importlib
import importlib.abc
import importlib.machinery
import os
import sys

SD1_ENV = "KOHYA_MULTIPLIER_TINY_UNET"
SDXL_ENV = "KOHYA_MULTIPLIER_TINY_SDXL"
FLUX_ENV = "KOHYA_MULTIPLIER_TINY_FLUX"
FAMILY_MODULES = {
    "KOHYA_MULTIPLIER_TINY_ANIMA": "km_tiny_anima",
    "KOHYA_MULTIPLIER_TINY_LUMINA": "km_tiny_lumina",
    "KOHYA_MULTIPLIER_TINY_SD3": "km_tiny_sd3",
    "KOHYA_MULTIPLIER_TINY_HUNYUAN": "km_tiny_hunyuan",
    "KOHYA_MULTIPLIER_TINY_WAN": "km_tiny_wan",  # musubi-tuner's Wan 2.1 (see that module)
    "KOHYA_MULTIPLIER_TINY_ZIMAGE": "km_tiny_zimage",  # musubi-tuner's Z-Image (see that module)
    "KOHYA_MULTIPLIER_TEST_CPU_RANKS": "km_test_cpu_ranks",  # not a family: accelerate's GPU rule for DDP on CPU
}

# --- SDXL ---------------------------------------------------------------------------------------
SDXL_MODEL_CHANNELS = 32  # levels of 32, 64, 128 channels; GroupNorm uses 32 groups
# sd-scripts takes hidden_states[11] of text encoder 1, so it needs at least 11 layers.
SDXL_TEXT_ENCODER_1 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=11, num_attention_heads=4, projection_dim=32)
SDXL_TEXT_ENCODER_2 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
# The U-Net's cross-attention input is both encoders' hidden states side by side; its class-label
# input is text encoder 2's pooled projection plus 6 size embeddings of 256 (sdxl_train_util).
SDXL_CONTEXT_DIM = SDXL_TEXT_ENCODER_1["hidden_size"] + SDXL_TEXT_ENCODER_2["hidden_size"]
SDXL_ADM_IN_CHANNELS = SDXL_TEXT_ENCODER_2["projection_dim"] + 6 * 256
SDXL_TRANSFORMER_LAYERS = 1  # sd-scripts passes 2 and 10 as literals
# library/model_util.py builds the SDXL VAE from these; 4 levels keep the 8x downscale.
SDXL_VAE = dict(VAE_PARAMS_CH=32, VAE_PARAMS_CH_MULT=[1, 1, 1, 1])

# --- FLUX ---------------------------------------------------------------------------------------
FLUX_CLIP_L = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
FLUX_T5 = dict(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2)
# in_channels stays 64: 16 latent channels packed 2x2, which sd-scripts' FLUX code hard-codes.
# The head width (hidden_size / num_heads) must equal sum(axes_dim), each even for RoPE.
FLUX_PARAMS = dict(
    vec_in_dim=FLUX_CLIP_L["hidden_size"],  # CLIP-L pooled output
    context_in_dim=FLUX_T5["d_model"],
    hidden_size=64,
    num_heads=2,
    axes_dim=[8, 12, 12],
)
FLUX_DOUBLE_BLOCKS = 1  # sd-scripts reads the block counts from the checkpoint
FLUX_SINGLE_BLOCKS = 1
FLUX_AE = dict(ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1)  # z_channels stays 16


def _shrink_sd1_unet(module):
    widths = tuple(int(w) for w in os.environ[SD1_ENV].split(","))
    module.BLOCK_OUT_CHANNELS = widths
    module.TIMESTEP_INPUT_DIM = widths[0]
    module.TIME_EMBED_DIM = widths[0] * 4


def _shrink_sdxl_unet(module):
    module.MODEL_CHANNELS = SDXL_MODEL_CHANNELS
    module.TIME_EMBED_DIM = SDXL_MODEL_CHANNELS * 4
    module.CONTEXT_DIM = SDXL_CONTEXT_DIM
    module.ADM_IN_CHANNELS = SDXL_ADM_IN_CHANNELS
    real = module.Transformer2DModel

    # The U-Net passes cross_attention_dim=2048 and the layer counts as literals, so override
    # them per instance. The subclass keeps the class name: networks/lora.py finds its LoRA
    # targets by class name.
    class Transformer2DModel(real):
        def __init__(self, *args, **kwargs):
            kwargs["cross_attention_dim"] = SDXL_CONTEXT_DIM
            kwargs["num_transformer_layers"] = SDXL_TRANSFORMER_LAYERS
            super().__init__(*args, **kwargs)

    Transformer2DModel.__module__ = real.__module__
    Transformer2DModel.__qualname__ = real.__qualname__
    module.Transformer2DModel = Transformer2DModel


def _shrink_sdxl_text_configs(module):
    real = module.CLIPTextConfig
    by_width = {768: SDXL_TEXT_ENCODER_1, 1280: SDXL_TEXT_ENCODER_2}  # how sd-scripts tells them apart

    def CLIPTextConfig(*args, **kwargs):  # noqa: N802 - stands in for the class sd-scripts calls
        tiny = by_width.get(kwargs.get("hidden_size"))
        if tiny is not None:
            kwargs.update(tiny)
        return real(*args, **kwargs)

    module.CLIPTextConfig = CLIPTextConfig


def _shrink_sdxl_vae(module):
    for name, value in SDXL_VAE.items():
        setattr(module, name, value)


def _shrink_flux_models(module):
    for spec in module.configs.values():
        spec.params = dataclasses.replace(spec.params, **FLUX_PARAMS)
        spec.ae_params = dataclasses.replace(spec.ae_params, **FLUX_AE)


def _shrink_flux_text_configs(module):
    real_clip, real_t5 = module.CLIPConfig, module.T5Config

    def CLIPConfig(*args, **kwargs):  # noqa: N802
        kwargs.update(FLUX_CLIP_L)
        return real_clip(*args, **kwargs)

    def T5Config(*args, **kwargs):  # noqa: N802
        kwargs.update(FLUX_T5)
        return real_t5(*args, **kwargs)

    module.CLIPConfig = CLIPConfig
    module.T5Config = T5Config


def _shrinks() -> dict:
    """sd-scripts module name -> what to change in it, for the models this process asked for."""
    wanted = {}
    if os.environ.get(SD1_ENV):
        wanted["library.original_unet"] = [_shrink_sd1_unet]
    if os.environ.get(SDXL_ENV) == "1":
        wanted["library.sdxl_original_unet"] = [_shrink_sdxl_unet]
        wanted["library.sdxl_model_util"] = [_shrink_sdxl_text_configs]
        wanted["library.model_util"] = [_shrink_sdxl_vae]
    if os.environ.get(FLUX_ENV) == "1":
        wanted["library.flux_models"] = [_shrink_flux_models]
        wanted["library.flux_utils"] = [_shrink_flux_text_configs]
    # families whose sizes and shrinks live in their own module (km_tiny_<family>.py)
    for env, module in FAMILY_MODULES.items():
        if os.environ.get(env) == "1":
            for name, shrink in importlib.import_module(module).shrinks().items():
                wanted.setdefault(name, []).append(shrink)
    return wanted


class AfterImportFinder(importlib.abc.MetaPathFinder):
    """Runs the real module, then the functions given for it (shrinks, test-only moves) before
    anyone uses it."""

    def __init__(self, shrinks: dict):
        self.shrinks = shrinks

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.shrinks:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            for shrink in self.shrinks[fullname]:
                shrink(module)

        spec.loader.exec_module = exec_module
        return spec


_WANTED = _shrinks()
if _WANTED:
    sys.meta_path.insert(0, AfterImportFinder(_WANTED))
# KOHYA_MULTIPLIER_TEST_NO_COMPAT: the spawn tests prove the product's own work-around instead.
if _WANTED and not os.environ.get("KOHYA_MULTIPLIER_TEST_NO_COMPAT"):
    try:
        from kohya_multiplier.sdscripts.compat import install_torchvision_workaround
    except ImportError:  # the package is not on the path: stock runs in a bare checkout
        pass
    else:
        install_torchvision_workaround()

if os.environ.get("KOHYA_MULTIPLIER_TEST_MOVE"):
    import km_test_moves  # noqa: F401 - test-only: makes one hook miss (see that module)

if os.environ.get("KOHYA_MULTIPLIER_TEST_ADD_IMAGE"):
    import km_test_grow  # noqa: F401 - test-only: a folder gains an image during start-up (see that module)

if os.environ.get("KOHYA_MULTIPLIER_TEST_SPAWN"):
    import km_test_spawn  # noqa: F401 - test-only: DataLoader workers started by spawn (see that module)
