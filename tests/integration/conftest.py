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

from harness import USABLE_CHECKOUTS, TinyModel  # noqa: E402
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
USABLE_CHECKOUTS[:] = [label for label, _, _, problem in CHECKOUTS if not problem]


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


def _tiny_model(sd: SdScripts, tmp_path_factory, family: str, script: str, env: dict, files: dict[str, str], *,
                hub_cache: bool = False) -> TinyModel:
    """The family's tiny model (built once per session and checkout) and the arguments that load it:
    ``files`` maps each sd-scripts option to a file or folder the builder wrote. With ``hub_cache``,
    runs also find the tokenizers in the builder's offline Hugging Face cache (for scripts that
    ignore --tokenizer_cache_dir)."""
    key = (str(sd.root), family)
    if key not in _tiny_models:
        folder = _build_tiny_model(sd, family, script, env, tmp_path_factory)
        args = [item for option, name in files.items() for item in (option, str(folder / name))]
        run_env = {**env, "HF_HUB_CACHE": str(folder / "hub")} if hub_cache else env
        _tiny_models[key] = TinyModel(family, folder, args, run_env)
    return _tiny_models[key]


@pytest.fixture(scope="session")
def tiny_sdxl(sd, tmp_path_factory) -> TinyModel:
    """A tiny SDXL single-file checkpoint and its two CLIP tokenizers (tiny_sdxl.py)."""
    files = {
        "--pretrained_model_name_or_path": "sdxl.safetensors",
        "--tokenizer_cache_dir": "tokenizers",
    }
    return _tiny_model(sd, tmp_path_factory, "sdxl", "sdxl_train_network.py", TINY_SDXL_ENV, files)


@pytest.fixture(scope="session")
def tiny_flux(sd, tmp_path_factory) -> TinyModel:
    """A tiny FLUX.1-dev model, AutoEncoder, CLIP-L and T5 with their tokenizers (tiny_flux.py)."""
    files = {
        "--pretrained_model_name_or_path": "flux.safetensors",
        "--ae": "ae.safetensors",
        "--clip_l": "clip_l.safetensors",
        "--t5xxl": "t5xxl.safetensors",
        "--tokenizer_cache_dir": "tokenizers",
    }
    return _tiny_model(sd, tmp_path_factory, "flux", "flux_train_network.py", TINY_FLUX_ENV, files)


@pytest.fixture(scope="session")
def tiny_anima(sd, tmp_path_factory) -> TinyModel:
    """A tiny Anima DiT (with its LLM adapter), Qwen-Image VAE and Qwen3 folder with the real Qwen3
    tokenizer (tiny_anima.py); the T5 tokenizer is the one sd-scripts ships (its default)."""
    files = {
        "--pretrained_model_name_or_path": "anima.safetensors",
        "--vae": "vae.safetensors",
        "--qwen3": "qwen3",
    }
    return _tiny_model(sd, tmp_path_factory, "anima", "anima_train_network.py", TINY_ANIMA_ENV, files)


@pytest.fixture(scope="session")
def tiny_lumina(sd, tmp_path_factory) -> TinyModel:
    """A tiny Lumina Image 2.0 NextDiT, Gemma2 with its tokenizer, and AutoEncoder (tiny_lumina.py)."""
    files = {
        "--pretrained_model_name_or_path": "lumina.safetensors",
        "--gemma2": "gemma2.safetensors",
        "--ae": "ae.safetensors",
        "--tokenizer_cache_dir": "tokenizers",
    }
    return _tiny_model(sd, tmp_path_factory, "lumina", "lumina_train_network.py", TINY_LUMINA_ENV, files)


@pytest.fixture(scope="session")
def tiny_sd3(sd, tmp_path_factory) -> TinyModel:
    """A tiny SD3 (medium layout) MMDiT, VAE, CLIP-L, CLIP-G and T5 with their tokenizers (tiny_sd3.py)."""
    # sd3_train.py ignores --tokenizer_cache_dir: it finds the same tokenizers in this offline hub cache.
    files = {
        "--pretrained_model_name_or_path": "sd3.safetensors",
        "--vae": "vae.safetensors",
        "--clip_l": "clip_l.safetensors",
        "--clip_g": "clip_g.safetensors",
        "--t5xxl": "t5xxl.safetensors",
        "--tokenizer_cache_dir": "tokenizers",
    }
    return _tiny_model(sd, tmp_path_factory, "sd3", "sd3_train_network.py", TINY_SD3_ENV, files, hub_cache=True)


@pytest.fixture(scope="session")
def tiny_hunyuan(sd, tmp_path_factory) -> TinyModel:
    """A tiny HunyuanImage-2.1 DiT, VAE, Qwen2.5-VL and byT5 with their tokenizers (tiny_hunyuan.py).

    sd-scripts' text encoder loaders load the tokenizers by hub id only, so the runs get the
    offline-built hub cache through HF_HUB_CACHE; its tokenize strategy reads --tokenizer_cache_dir.
    """
    files = {
        "--pretrained_model_name_or_path": "dit.safetensors",
        "--vae": "vae.safetensors",
        "--text_encoder": "qwen2_5_vl.safetensors",
        "--byt5": "byt5.safetensors",
        "--tokenizer_cache_dir": "tokenizers",
    }
    return _tiny_model(sd, tmp_path_factory, "hunyuan", "hunyuan_image_train_network.py", TINY_HUNYUAN_ENV, files, hub_cache=True)


# CI time (45 minutes for three checkouts on a 2-core machine): on the oldest layout (v0.9.x), CI
# runs the dataset-path tests only, where v0.9's own classes differ (registration, metadata rules,
# buckets, the SD1.x/SDXL scripts); workers, launchers, resume and the self-check run on the newer
# checkouts, whose hooks they share. Outside CI every test runs on every checkout.
OLDEST_LAYOUT_IN_CI = {"test_train_network.py", "test_train_db.py", "test_fine_tuning.py", "test_sdxl.py",
                       "test_stock_training.py", "test_stock_registration.py", "test_textual_inversion.py",
                       "test_locate.py", "test_revision_by_code.py"}
NOT_ON_THE_OLDEST_LAYOUT_IN_CI = ("workers", "accelerate", "resume", "two_processes")


def _skipped_on_the_oldest_layout_in_ci(item) -> bool:
    if not os.environ.get("CI") or not hasattr(item, "callspec") or "sd" not in item.callspec.params:
        return False
    _label, _checkout, revision, problem = item.callspec.params["sd"]
    if problem or revision is None or revision.layout != locate.LAYOUT_V09:
        return False
    return item.path.name not in OLDEST_LAYOUT_IN_CI or any(word in item.name for word in NOT_ON_THE_OLDEST_LAYOUT_IN_CI)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "sd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
        if _skipped_on_the_oldest_layout_in_ci(item):
            item.add_marker(pytest.mark.skip(reason="CI time: on v0.9.x CI runs the dataset-path tests only; "
                                                    "this one runs there outside CI"))
