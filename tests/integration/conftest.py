"""Integration tests: real sd-scripts training on CPU with a tiny offline model.

Checkouts come from ``KOHYA_SD_SCRIPTS`` or the user config of ``kohya-multiplier configure``
(``sd_scripts`` and every ``[checkouts.NAME]``); each test runs once per checkout, in that
checkout's Python (``<checkout>/venv`` by default). Without a checkout every test here is skipped
with the reason. The code under test is this repository: subprocesses get it on PYTHONPATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kohya_multiplier.checkouts import locate

INTEGRATION_DIR = Path(__file__).resolve().parent
REPO_ROOT = INTEGRATION_DIR.parents[1]
sys.path.insert(0, str(INTEGRATION_DIR))

from harness import TinyModel  # noqa: E402
from tiny_sd import TINY_UNET_ENV, tiny_unet_env_value  # noqa: E402

# What tiny_hook/sitecustomize.py reads to shrink sd-scripts' hard-coded SDXL and FLUX sizes.
TINY_SDXL_ENV = {"KOHYA_MULTIPLIER_TINY_SDXL": "1"}
TINY_FLUX_ENV = {"KOHYA_MULTIPLIER_TINY_FLUX": "1"}
TINY_ANIMA_ENV = {"KOHYA_MULTIPLIER_TINY_ANIMA": "1"}
TINY_LUMINA_ENV = {"KOHYA_MULTIPLIER_TINY_LUMINA": "1"}
TINY_SD3_ENV = {"KOHYA_MULTIPLIER_TINY_SD3": "1"}  # tiny_hook/km_tiny_sd3.py
TINY_HUNYUAN_ENV = {"KOHYA_MULTIPLIER_TINY_HUNYUAN": "1"}

NO_CHECKOUT = (
    "no sd-scripts checkout configured: set KOHYA_SD_SCRIPTS or run "
    "`kohya-multiplier configure --sd-scripts DIR` (see the README, 'Developer set-up for the integration suite')"
)


class SdScripts:
    """One configured checkout, with its tiny model."""

    def __init__(self, label: str, checkout: locate.Checkout, revision: locate.Revision):
        self.label = label
        self.root = checkout.root
        self.python = str(checkout.python)
        self.revision = revision
        self.tiny_dir: Path | None = None

    @property
    def has_validation_split(self) -> bool:
        return self.revision.layout in (locate.LAYOUT_STRATEGIES, locate.LAYOUT_SPLIT)

    def env(self, **extra: str) -> dict:
        env = dict(os.environ)
        for name in ("KOHYA_SD_SCRIPTS", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(name, None)
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            # One thread: tiny runs are 3x faster on 2 cores (torch and OpenCV oversubscribe otherwise).
            OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(INTEGRATION_DIR / "tiny_hook"), str(REPO_ROOT)]),
            PYTHONHASHSEED="0",
            PYTHONUNBUFFERED="1",
            **{TINY_UNET_ENV: tiny_unet_env_value()},
        )
        env.update(extra)
        return env


def _discover() -> list[tuple[str, locate.Checkout, locate.Revision | None, str | None]]:
    try:
        found = locate.configured_checkouts()
    except Exception as error:  # noqa: BLE001 - a broken config must skip, not error, the suite
        return [("config", None, None, f"cannot read the kohya-multiplier config: {error}")]
    seen, result = set(), []
    for label, checkout in found.items():
        if checkout.root in seen:
            continue
        seen.add(checkout.root)
        revision = locate.detect_revision(checkout.root)
        problem = None
        if not revision.supported:
            problem = f"{checkout.root}: revision {revision.name} is not supported"
        elif not Path(checkout.python).exists():
            problem = f"{checkout.root}: its Python {checkout.python} does not exist"
        name = revision.name.split()[0] if revision.tested else label
        result.append((name, checkout, revision, problem))
    return result


CHECKOUTS = _discover()


def pytest_generate_tests(metafunc):
    if "sd" in metafunc.fixturenames:
        params = CHECKOUTS or [("none", None, None, NO_CHECKOUT)]
        metafunc.parametrize("sd", params, ids=[p[0] for p in params], indirect=True, scope="session")


_ready: dict[str, SdScripts] = {}


@pytest.fixture(scope="session")
def sd(request, tmp_path_factory) -> SdScripts:
    label, checkout, revision, problem = request.param
    if problem:
        pytest.skip(problem)
    key = str(checkout.root)
    if key not in _ready:
        env = SdScripts(label, checkout, revision)
        probe = subprocess.run(
            [env.python, "-c", "import torch, diffusers, transformers, accelerate, voluptuous"],
            capture_output=True, text=True, env=env.env(), timeout=300,
        )
        if probe.returncode != 0:
            pytest.skip(f"{checkout.python} cannot import sd-scripts' requirements: {probe.stderr.strip().splitlines()[-1:]}")
        tiny = tmp_path_factory.mktemp(f"tiny-{label}")
        built = subprocess.run(
            [env.python, str(INTEGRATION_DIR / "tiny_sd.py"), str(tiny)],
            capture_output=True, text=True, env=env.env(), timeout=600,
        )
        if built.returncode != 0:
            pytest.fail(f"building the tiny model failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}")
        env.tiny_dir = tiny
        _ready[key] = env
    return _ready[key]


_tiny_models: dict[tuple[str, str], TinyModel] = {}


def _build_tiny_model(sd: SdScripts, family: str, script: str, env: dict, tmp_path_factory) -> Path:
    """Build ``tiny_<family>.py``'s model once per session and checkout, in the checkout's Python."""
    if not (Path(sd.root) / script).is_file():
        pytest.skip(f"sd-scripts {sd.revision.name} has no {script}")
    folder = tmp_path_factory.mktemp(f"tiny-{family}-{sd.label}")
    built = subprocess.run(
        [sd.python, str(INTEGRATION_DIR / f"tiny_{family}.py"), str(sd.root), str(folder)],
        capture_output=True, text=True, env=sd.env(**env), timeout=600,
    )
    if built.returncode != 0:
        pytest.fail(f"building the tiny {family} model failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}")
    return folder


@pytest.fixture(scope="session")
def tiny_sdxl(sd, tmp_path_factory) -> TinyModel:
    """A tiny SDXL single-file checkpoint and its two CLIP tokenizers (tiny_sdxl.py)."""
    key = (str(sd.root), "sdxl")
    if key not in _tiny_models:
        folder = _build_tiny_model(sd, "sdxl", "sdxl_train_network.py", TINY_SDXL_ENV, tmp_path_factory)
        args = [
            "--pretrained_model_name_or_path", str(folder / "sdxl.safetensors"),
            "--tokenizer_cache_dir", str(folder / "tokenizers"),
        ]
        _tiny_models[key] = TinyModel("sdxl", folder, args, TINY_SDXL_ENV)
    return _tiny_models[key]


@pytest.fixture(scope="session")
def tiny_flux(sd, tmp_path_factory) -> TinyModel:
    """A tiny FLUX.1-dev model, AutoEncoder, CLIP-L and T5 with their tokenizers (tiny_flux.py)."""
    key = (str(sd.root), "flux")
    if key not in _tiny_models:
        folder = _build_tiny_model(sd, "flux", "flux_train_network.py", TINY_FLUX_ENV, tmp_path_factory)
        args = [
            "--pretrained_model_name_or_path", str(folder / "flux.safetensors"),
            "--ae", str(folder / "ae.safetensors"),
            "--clip_l", str(folder / "clip_l.safetensors"),
            "--t5xxl", str(folder / "t5xxl.safetensors"),
            "--tokenizer_cache_dir", str(folder / "tokenizers"),
        ]
        _tiny_models[key] = TinyModel("flux", folder, args, TINY_FLUX_ENV)
    return _tiny_models[key]


@pytest.fixture(scope="session")
def tiny_anima(sd, tmp_path_factory) -> TinyModel:
    """A tiny Anima DiT (with its LLM adapter), Qwen-Image VAE and Qwen3 folder with the real Qwen3
    tokenizer (tiny_anima.py); the T5 tokenizer is the one sd-scripts ships (its default)."""
    key = (str(sd.root), "anima")
    if key not in _tiny_models:
        folder = _build_tiny_model(sd, "anima", "anima_train_network.py", TINY_ANIMA_ENV, tmp_path_factory)
        args = [
            "--pretrained_model_name_or_path", str(folder / "anima.safetensors"),
            "--vae", str(folder / "vae.safetensors"),
            "--qwen3", str(folder / "qwen3"),
        ]
        _tiny_models[key] = TinyModel("anima", folder, args, TINY_ANIMA_ENV)
    return _tiny_models[key]


@pytest.fixture(scope="session")
def tiny_lumina(sd, tmp_path_factory) -> TinyModel:
    """A tiny Lumina Image 2.0 NextDiT, Gemma2 with its tokenizer, and AutoEncoder (tiny_lumina.py)."""
    key = (str(sd.root), "lumina")
    if key not in _tiny_models:
        folder = _build_tiny_model(sd, "lumina", "lumina_train_network.py", TINY_LUMINA_ENV, tmp_path_factory)
        args = [
            "--pretrained_model_name_or_path", str(folder / "lumina.safetensors"),
            "--gemma2", str(folder / "gemma2.safetensors"),
            "--ae", str(folder / "ae.safetensors"),
            "--tokenizer_cache_dir", str(folder / "tokenizers"),
        ]
        _tiny_models[key] = TinyModel("lumina", folder, args, TINY_LUMINA_ENV)
    return _tiny_models[key]


@pytest.fixture(scope="session")
def tiny_sd3(sd, tmp_path_factory) -> TinyModel:
    """A tiny SD3 (medium layout) MMDiT, VAE, CLIP-L, CLIP-G and T5 with their tokenizers (tiny_sd3.py)."""
    key = (str(sd.root), "sd3")
    if key not in _tiny_models:
        folder = _build_tiny_model(sd, "sd3", "sd3_train_network.py", TINY_SD3_ENV, tmp_path_factory)
        args = [
            "--pretrained_model_name_or_path", str(folder / "sd3.safetensors"),
            "--vae", str(folder / "vae.safetensors"),
            "--clip_l", str(folder / "clip_l.safetensors"),
            "--clip_g", str(folder / "clip_g.safetensors"),
            "--t5xxl", str(folder / "t5xxl.safetensors"),
            "--tokenizer_cache_dir", str(folder / "tokenizers"),
        ]
        # sd3_train.py ignores --tokenizer_cache_dir: it finds the same tokenizers in this offline hub cache.
        env = {**TINY_SD3_ENV, "HF_HUB_CACHE": str(folder / "hub")}
        _tiny_models[key] = TinyModel("sd3", folder, args, env)
    return _tiny_models[key]


@pytest.fixture(scope="session")
def tiny_hunyuan(sd, tmp_path_factory) -> TinyModel:
    """A tiny HunyuanImage-2.1 DiT, VAE, Qwen2.5-VL and byT5 with their tokenizers (tiny_hunyuan.py).

    sd-scripts' text encoder loaders load the tokenizers by hub id only, so the runs get the
    offline-built hub cache through HF_HUB_CACHE; its tokenize strategy reads --tokenizer_cache_dir.
    """
    key = (str(sd.root), "hunyuan")
    if key not in _tiny_models:
        folder = _build_tiny_model(sd, "hunyuan", "hunyuan_image_train_network.py", TINY_HUNYUAN_ENV, tmp_path_factory)
        args = [
            "--pretrained_model_name_or_path", str(folder / "dit.safetensors"),
            "--vae", str(folder / "vae.safetensors"),
            "--text_encoder", str(folder / "qwen2_5_vl.safetensors"),
            "--byt5", str(folder / "byt5.safetensors"),
            "--tokenizer_cache_dir", str(folder / "tokenizers"),
        ]
        env = {**TINY_HUNYUAN_ENV, "HF_HUB_CACHE": str(folder / "hub")}
        _tiny_models[key] = TinyModel("hunyuan", folder, args, env)
    return _tiny_models[key]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "sd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
