"""A prepared check for a machine with an NVIDIA GPU and PyTorch but no network.

    python scripts/cuda-check.py bundle --sd-scripts DIR --out FILE.tar.gz [--no-wheels]
                                        [--python-version 3.10,3.11,3.12] [--platform manylinux_2_28_x86_64]
    python scripts/cuda-check.py run BUNDLE_OR_DIR [--device cuda|cpu] [--out DIR] [--epochs N]

`bundle` (here, with network to PyPI) packs what such a machine may lack: the sd-scripts checkout's
tracked files, this repository's package and the integration suite's tiny-model builders, the CLIP
BPE merges, and the wheels sd-scripts needs beside PyTorch (resolved from the checkout's
requirements.txt; never torch, torchvision or what torch itself brings).

`run` (there, offline) unpacks the bundle, installs its wheels into a folder put first on
PYTHONPATH (the system's torch stays visible), builds the tiny SDXL and FLUX models as the
integration suite does, and trains a LoRA of each family twice: stock (a config without
multipliers, the bare sd-scripts script) and wrapped (`python -m kohya_multiplier`, with
multipliers), with bf16 mixed precision, SDPA and 2 persistent DataLoader workers. It prints per
family and mode: whether the wrapped run's schedule equals `kohya-multiplier plan --schedule`, the
batches per epoch, seconds per optimizer step after the first epoch, the wrapped/stock ratio and the
training process's peak GPU memory (peak RSS with --device cpu). Exit status: 0 when every wrapped
schedule equals its plan, 1 when one does not, 2 when the check cannot run (one line says why).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TOP = "km-cuda-check"  # the bundle's single top-level folder
# This repository's files the check needs on the target (the tiny models are built there, not shipped).
REPO_FILES = [
    "kohya_multiplier",
    "patches",
    "pyproject.toml",
    "scripts/cuda-check.py",
    "tests/integration/harness.py",
    "tests/integration/pngs.py",
    "tests/integration/tiny_sd.py",
    "tests/integration/tiny_sdxl.py",
    "tests/integration/tiny_flux.py",
    "tests/integration/tiny_hook",
]
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"  # the CLIP merges tiny_sd.py rebuilds the tokenizer from
# Requirements not imported by a LoRA training with AdamW (optional optimizers, TensorBoard logging),
# and bitsandbytes (CUDA binaries, optional): left out of the bundle.
DROPPED_REQUIREMENTS = {
    "bitsandbytes", "lion-pytorch", "schedulefree", "pytorch-optimizer", "prodigy-plus-schedule-free",
    "prodigyopt", "tensorboard",
}
# What a machine with PyTorch already has (torch's own dependencies, torchvision's Pillow, numpy),
# and downloads-only helpers: never bundled.
MACHINE_HAS = {
    "torch", "torchvision", "triton", "numpy", "pillow", "sympy", "mpmath", "networkx", "jinja2",
    "markupsafe", "setuptools", "hf-xet",
}
MACHINE_HAS_PREFIXES = ("nvidia-", "cuda-")
# kohya-multiplier's own dependencies beside numpy (pyproject.toml); tomli only matters on 3.10.
OWN_REQUIREMENTS = ["imagesize", "tomlkit", "tomli"]
# Server GPUs usually lack libGL, which opencv-python's cv2 needs; the headless build is the same cv2.
RENAMED_REQUIREMENTS = {"opencv-python": "opencv-python-headless"}

FAMILIES = {
    "sdxl": {
        "script": "sdxl_train_network",
        "env": {"KOHYA_MULTIPLIER_TINY_SDXL": "1"},
        "model_args": lambda m: ["--pretrained_model_name_or_path", str(m / "sdxl.safetensors"),
                                 "--tokenizer_cache_dir", str(m / "tokenizers")],
        "args": ["--network_module", "networks.lora", "--network_dim", "4", "--network_alpha", "1", "--cache_latents"],
    },
    "flux": {
        "script": "flux_train_network",
        "env": {"KOHYA_MULTIPLIER_TINY_FLUX": "1"},
        "model_args": lambda m: ["--pretrained_model_name_or_path", str(m / "flux.safetensors"), "--ae", str(m / "ae.safetensors"),
                                 "--clip_l", str(m / "clip_l.safetensors"), "--t5xxl", str(m / "t5xxl.safetensors"),
                                 "--tokenizer_cache_dir", str(m / "tokenizers")],
        # as tests/integration/test_flux.py: cached text encoder outputs need a transformer-only LoRA
        "args": ["--network_module", "networks.lora_flux", "--network_dim", "4", "--network_alpha", "1",
                 "--network_train_unet_only", "--cache_text_encoder_outputs", "--cache_latents",
                 "--guidance_scale", "1.0", "--timestep_sampling", "shift", "--discrete_flow_shift", "3.1582",
                 "--model_prediction_type", "raw", "--t5xxl_max_token_length", "64"],
    },
}
SEED = 42
TRAIN_TIMEOUT = 1800
METRICS_ENV = "KOHYA_MULTIPLIER_CHECK_METRICS"
TINY_HOOK_ENV = "KOHYA_MULTIPLIER_CHECK_TINY_HOOK"

# The start-up hook of every process of the check: the integration suite's tiny_hook (which shrinks
# sd-scripts' hard-coded sizes) run in this module's namespace, so that the model builders'
# `import sitecustomize as tiny` still finds its sizes; and, in the training process, optimizer-step
# times and peak memory written at exit. It measures without touching sd-scripts.
CHECK_HOOK = r'''
import atexit, importlib.abc, importlib.machinery, json, os, sys, time

_tiny_dir = os.environ.get("KOHYA_MULTIPLIER_CHECK_TINY_HOOK")
if _tiny_dir:
    _path = os.path.join(_tiny_dir, "sitecustomize.py")
    with open(_path, encoding="utf-8") as _handle:
        exec(compile(_handle.read(), _path, "exec"))

_metrics_path = os.environ.get("KOHYA_MULTIPLIER_CHECK_METRICS")
_step_times = {}  # id(optimizer) -> perf_counter() after each of its steps


def _after_step(optimizer, args, kwargs):
    _step_times.setdefault(id(optimizer), []).append(time.perf_counter())


class _AfterOptimizerModule(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torch.optim.optimizer":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            register = getattr(module, "register_optimizer_step_post_hook", None)  # torch >= 2.0
            if register is not None:
                register(_after_step)

        spec.loader.exec_module = exec_module
        return spec


def _peak_rss_bytes():
    try:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except ImportError:  # Windows
        try:
            import psutil
            return psutil.Process().memory_info().peak_wset
        except Exception:
            return None


def _write_metrics():
    import multiprocessing
    if multiprocessing.parent_process() is not None:  # a DataLoader worker
        return
    record = {"pid": os.getpid(), "argv0": sys.argv[0], "steps": max(_step_times.values(), key=len, default=[])}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        record["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
        record["cuda_peak_reserved"] = torch.cuda.max_memory_reserved()
    record["peak_rss"] = _peak_rss_bytes()
    with open(_metrics_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


if _metrics_path:
    sys.meta_path.insert(0, _AfterOptimizerModule())
    atexit.register(_write_metrics)
'''


class CheckError(Exception):
    """The check cannot run: one line for the user, exit status 2."""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)


# --- bundle ---------------------------------------------------------------------------------------

def _checkout_files(root: Path) -> list[str]:
    """The checkout's tracked files; without git (a zip download), every file but venvs and caches."""
    if (root / ".git").exists() and shutil.which("git"):
        listed = _run(["git", "-C", root, "ls-files", "-z"])
        if listed.returncode == 0:
            return [name for name in listed.stdout.split("\0") if name and (root / name).is_file()]
    skip = {".git", "venv", ".venv", "__pycache__"}
    return sorted(
        path.relative_to(root).as_posix() for path in root.rglob("*")
        if path.is_file() and not skip.intersection(path.relative_to(root).parts)
    )


def _requirements(root: Path) -> list[str]:
    """sd-scripts' requirements.txt minus what the check never imports, plus this package's own."""
    kept = []
    for line in (root / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue  # comments, `-e .` (sd-scripts itself, shipped as files)
        name = re.split(r"[\[<>=!~;\s]", line, maxsplit=1)[0]
        if _normalize(name) in DROPPED_REQUIREMENTS:
            continue
        renamed = RENAMED_REQUIREMENTS.get(_normalize(name))
        kept.append(renamed + line[len(name):] if renamed else line)
    return kept + OWN_REQUIREMENTS


def _resolve(python: str, requirements: list[str], work: Path, skip: set[str]) -> list[tuple[str, str, bool]]:
    """(name, version, pure Python) of every package pip resolves for the requirements, minus what a
    PyTorch machine has. pip reads only the metadata of torch, never its wheel."""
    req_file, report = work / "requirements.txt", work / "report.json"
    req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    resolved = _run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                     "--disable-pip-version-check", "--report", report, "-r", req_file], timeout=900)
    if resolved.returncode != 0:
        raise CheckError(f"cannot download: pip could not resolve sd-scripts' requirements (no network?): {_last_line(resolved.stderr)}")
    found = []
    for item in json.loads(report.read_text(encoding="utf-8"))["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if _normalize(name) in MACHINE_HAS | skip or _normalize(name).startswith(MACHINE_HAS_PREFIXES):
            continue
        url = item.get("download_info", {}).get("url", "")
        found.append((name, version, url.endswith("-none-any.whl")))
    return found


def _platform_tags(platform: str) -> list[str]:
    """pip matches --platform literally: a glibc 2.28 machine also takes every older manylinux tag."""
    match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if not match:
        return [platform]
    newest, arch = int(match.group(1)), match.group(2)
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = []
    for minor in range(newest, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{arch}")
    return tags


def _download(python: str, packages: list[tuple[str, str, bool]], dest: Path, versions: list[str], platform: str) -> list[str]:
    """Download the wheels; returns the compiled ones that have no build for one of the Pythons."""
    base = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--quiet", "-d", dest]
    pure = [f"{n}=={v}" for n, v, is_pure in packages if is_pure]
    binary = [f"{n}=={v}" for n, v, is_pure in packages if not is_pure]
    if pure:
        got = _run(base + pure, timeout=1800)
        if got.returncode != 0:
            raise CheckError(f"cannot download wheels: {_last_line(got.stderr)}")
    missing = []
    platforms = [arg for tag in _platform_tags(platform) for arg in ("--platform", tag)]
    # compiled wheels: one set per Python the target may run (abi3 wheels come once)
    for version in versions:
        job = base + [*platforms, "--python-version", version, "--implementation", "cp"]
        got = _run(job + binary, timeout=1800)
        if got.returncode == 0 or not binary:
            continue
        # one package without a build for this Python must not sink the others: there the run
        # uses the system's copy, or says which one is missing
        lacking = [r for r in binary if _run(job + [r], timeout=900).returncode != 0]
        if len(lacking) == len(binary):
            raise CheckError(f"cannot download wheels for Python {version}: {_last_line(got.stderr)}")
        missing += [f"{r} (Python {version})" for r in lacking]
    return missing


def _bpe_bytes(python: str, work: Path, allow_download: bool) -> bytes:
    """The CLIP BPE merges: from open_clip in the bundling Python, else from its downloaded wheel."""
    found = _run([python, "-c", "import importlib.util as u; s = u.find_spec('open_clip'); "
                  "print(list(s.submodule_search_locations)[0] if s else '')"])
    folder = found.stdout.strip()
    if found.returncode == 0 and folder and (Path(folder) / BPE_NAME).is_file():
        return (Path(folder) / BPE_NAME).read_bytes()
    if not allow_download:
        raise CheckError(f"{python} has no open_clip to take the CLIP BPE merges from (`pip install --no-deps open_clip_torch`)")
    got = _run([python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", work, "open_clip_torch"], timeout=900)
    wheels = sorted(work.glob("open_clip_torch-*.whl"))
    if got.returncode != 0 or not wheels:
        raise CheckError(f"cannot download open_clip_torch for the CLIP BPE merges: {_last_line(got.stderr)}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return wheel.read(f"open_clip/{BPE_NAME}")


def _add_tree(tar: tarfile.TarFile, source: Path, name: str) -> None:
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                tar.add(str(path), f"{name}/{path.relative_to(source).as_posix()}")
    else:
        tar.add(str(source), name)


def bundle(args) -> int:
    sd_root = Path(args.sd_scripts).resolve()
    if not (sd_root / "library" / "train_util.py").is_file() or not (sd_root / "requirements.txt").is_file():
        raise CheckError(f"{sd_root} is not an sd-scripts checkout (no library/train_util.py or requirements.txt)")
    out = Path(args.out).resolve()
    versions = [v.strip() for v in args.python_version.split(",") if v.strip()]
    python = args.pip_python or sys.executable
    with tempfile.TemporaryDirectory(prefix="km-cuda-bundle-") as scratch:
        work = Path(scratch)
        wheels_dir = work / "wheels"
        wheels_dir.mkdir()
        packages, missing = [], []
        if not args.no_wheels:
            skip = {_normalize(RENAMED_REQUIREMENTS.get(_normalize(n), n)) for n in args.skip}
            packages = _resolve(python, _requirements(sd_root), work, skip)
            print(f"bundling {len(packages)} wheels: {', '.join(f'{n}=={v}' for n, v, _ in packages)}", flush=True)
            missing = _download(python, packages, wheels_dir, versions, args.platform)
            if missing:
                print(f"warning: no wheel of {', '.join(missing)}: there the system's copy must do", flush=True)
        (work / BPE_NAME).write_bytes(_bpe_bytes(python, work, not args.no_wheels))
        files = _checkout_files(sd_root)
        commit = _run(["git", "-C", sd_root, "rev-parse", "HEAD"]).stdout.strip() if (sd_root / ".git").exists() and shutil.which("git") else ""
        manifest = {
            "sd_scripts_commit": commit or None,
            "sd_scripts_files": len(files),
            "wheels": [f"{n}=={v}" for n, v, _ in packages],
            "python_versions": versions if packages else [],
            "platform": args.platform if packages else None,
            "missing_wheels": missing,
            "built": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(str(work / "manifest.json"), f"{TOP}/manifest.json")
            tar.add(str(work / BPE_NAME), f"{TOP}/{BPE_NAME}")
            for name in files:
                tar.add(str(sd_root / name), f"{TOP}/sd-scripts/{name}", recursive=False)
            for name in REPO_FILES:
                _add_tree(tar, REPO_ROOT / name, f"{TOP}/kohya-multiplier/{name}")
            for wheel in sorted(wheels_dir.glob("*.whl")):
                tar.add(str(wheel), f"{TOP}/wheels/{wheel.name}")
        partial.replace(out)  # never a half-written bundle under the asked name
    print(f"bundle: {out} ({out.stat().st_size / 2**20:.1f} MB: sd-scripts {commit[:8] or 'without git'}, "
          f"{len(files)} files; {len(packages)} packages{' for Python ' + ', '.join(versions) if packages else ', no wheels'})")
    return 0


# --- run ------------------------------------------------------------------------------------------

def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _unpack(source: Path, out: Path) -> Path:
    """The bundle's top folder: ``source`` itself when it is an unpacked bundle, else extracted under out."""
    if source.is_dir():
        top = source if (source / "manifest.json").is_file() else source / TOP
        if not (top / "manifest.json").is_file():
            raise CheckError(f"{source} is not an unpacked bundle (no manifest.json)")
        return top
    if not source.is_file():
        raise CheckError(f"bundle {source} does not exist (make it with `cuda-check.py bundle`)")
    try:
        with tarfile.open(source, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(out, filter="data")
            else:  # Pythons before the extraction filters
                tar.extractall(out)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise CheckError(f"cannot unpack {source}: {error}")
    if not (out / TOP / "manifest.json").is_file():
        raise CheckError(f"{source} is not a cuda-check bundle (no {TOP}/manifest.json)")
    return out / TOP


def _install_wheels(top: Path, site: Path) -> str:
    """Install the bundled wheels into ``site`` (first on PYTHONPATH later). A wheel with no build
    for this Python is skipped when the system already has that package."""
    wheels = sorted((top / "wheels").glob("*.whl"))
    if not wheels:
        return "no wheels in the bundle: the system's packages are used"
    names = sorted({_normalize(w.name.split("-")[0]) for w in wheels})
    base = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", "--quiet",
            "--find-links", top / "wheels", "--target", site, "--upgrade"]
    done = _run(base + names, timeout=1800)
    if done.returncode == 0:
        return f"{len(names)} bundled packages installed"
    if "No module named pip" in done.stderr:
        raise CheckError(f"{sys.executable} has no pip to install the bundled wheels")
    used_system = []
    for name in names:
        if _run(base + [name], timeout=900).returncode != 0:
            module = {"opencv-python-headless": "cv2", "pyyaml": "yaml", "huggingface-hub": "huggingface_hub"}.get(name, name.replace("-", "_"))
            if _run([sys.executable, "-c", f"import {module}"]).returncode != 0:
                raise CheckError(f"the bundle has no {name} wheel for this Python ({sys.version.split()[0]}) and the system has none")
            used_system.append(name)
    return f"{len(names) - len(used_system)} bundled packages installed; the system's {', '.join(used_system)}"


def _environment(top: Path, out: Path, site: Path, device: str) -> dict:
    repo = top / "kohya-multiplier"
    hook = out / "hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(CHECK_HOOK, encoding="utf-8")
    env = dict(os.environ)
    for name in ("KOHYA_SD_SCRIPTS", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONPATH", METRICS_ENV):
        env.pop(name, None)
    tiny_hook = repo / "tests" / "integration" / "tiny_hook"
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
        # the check's hook first (it runs tiny_hook's sitecustomize), then tiny_hook's family modules,
        # this repository's package, and the bundled wheels ahead of the system's site-packages
        PYTHONPATH=os.pathsep.join(str(p) for p in (hook, tiny_hook, repo, site)),
        PYTHONHASHSEED="0", PYTHONUNBUFFERED="1",
        KOHYA_MULTIPLIER_CLIP_BPE=str(top / BPE_NAME),
        XDG_CONFIG_HOME=str(out / "config"),  # no user config of kohya-multiplier steers the runs
        **{TINY_HOOK_ENV: str(tiny_hook)},
    )
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env.setdefault("OMP_NUM_THREADS", "1")  # as the integration suite: small CPU runs oversubscribe otherwise
    return env


PROBE = r'''
import json, sys
import torch
# as the wrapper and tiny_hook do: a torchvision built for another torch still imports
from kohya_multiplier.sdscripts.compat import install_torchvision_workaround
install_torchvision_workaround()
info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "gpu": None, "bf16": False, "missing": []}
if info["cuda"]:
    info["gpu"] = torch.cuda.get_device_name(0)
    info["bf16"] = torch.cuda.is_bf16_supported()
if sys.argv[1] == "cpu":
    try:  # what mixed precision bf16 does on CPU: autocast forward and backward
        layer = torch.nn.Linear(8, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(torch.randn(4, 8)).float().sum().backward()
        info["bf16"] = layer.weight.grad is not None
    except Exception:
        info["bf16"] = False
for module in ("accelerate", "transformers", "diffusers", "safetensors", "cv2", "voluptuous", "einops", "sentencepiece", "torchvision", "PIL", "numpy", "imagesize", "tomlkit"):
    try:
        __import__(module)
    except Exception as error:
        info["missing"].append(f"{module} ({type(error).__name__}: {error})")
print(json.dumps(info))
'''


def _require_device(device: str) -> None:
    """torch and, for cuda, a GPU: checked before installing anything."""
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    got = _run([sys.executable, "-c", code], timeout=600)
    if got.returncode == 3 and device == "cuda":
        raise CheckError("no CUDA GPU visible to torch (use --device cpu to check on the CPU)")
    if got.returncode not in (0, 3):
        if "No module named 'torch'" in got.stderr:
            raise CheckError(f"{sys.executable} has no PyTorch: run the check with the Python that has it")
        raise CheckError(f"importing torch failed: {_last_line(got.stderr)}")


def _probe(env: dict, device: str) -> dict:
    got = _run([sys.executable, "-c", PROBE, device], env=env, timeout=600)
    if got.returncode != 0:
        if "No module named 'torch'" in got.stderr:
            raise CheckError(f"{sys.executable} has no PyTorch: run the check with the Python that has it")
        raise CheckError(f"probing torch failed: {_last_line(got.stderr)}")
    info = json.loads(got.stdout.strip().splitlines()[-1])
    if device == "cuda" and not info["cuda"]:
        raise CheckError(f"no CUDA GPU visible to torch {info['torch']} (use --device cpu to check on the CPU)")
    if info["missing"]:
        raise CheckError(f"cannot import what sd-scripts needs: {'; '.join(info['missing'])}")
    return info


def _run_logged(command: list, env: dict, cwd: Path, log: Path, timeout: int) -> tuple[int, str, float]:
    started = time.monotonic()
    with open(log, "w", encoding="utf-8", errors="replace") as handle:
        handle.write(" ".join(str(c) for c in command) + "\n\n")
        handle.flush()
        try:
            code = subprocess.run([str(c) for c in command], stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=str(cwd), timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = -1
    wall = time.monotonic() - started
    return code, log.read_text(encoding="utf-8", errors="replace"), wall


def _build_model(family: str, top: Path, models: Path, env: dict) -> Path:
    folder = models / family
    if (folder / "READY").is_file():
        return folder
    builder = top / "kohya-multiplier" / "tests" / "integration" / f"tiny_{family}.py"
    code, output, _ = _run_logged([sys.executable, builder, top / "sd-scripts", folder], env, models, models / f"build-{family}.log", 900)
    if code != 0:
        raise CheckError(f"building the tiny {family} model failed: {_last_line(output)} (log: {models / f'build-{family}.log'})")
    return folder


def _printed_int(output: str, label: str) -> int | None:
    match = re.search(re.escape(label) + r"[^:\n]*:\s*(\d+)", output)
    return int(match.group(1)) if match else None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _seconds_per_step(steps: list[float], per_epoch: int | None) -> tuple[float | None, int]:
    """Mean seconds between optimizer steps after the first epoch (its start-up, caching and first
    compilations are warm-up); (None, 0) when too few steps remain."""
    skip = per_epoch or 0
    if len(steps) - skip < 2:
        return None, 0
    return (steps[-1] - steps[skip]) / (len(steps) - 1 - skip), len(steps) - 1 - skip


def _train(family: str, mode: str, top: Path, model: Path, config: Path, out: Path, env: dict, settings: dict) -> dict:
    spec = FAMILIES[family]
    run_dir = out / "runs" / f"{family}-{mode}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    sd_root = top / "sd-scripts"
    schedule = run_dir / "schedule.jsonl"
    if mode == "stock":
        program = [sd_root / f"{spec['script']}.py"]
    else:
        program = ["-m", "kohya_multiplier", spec["script"], "--sd-scripts", sd_root, "--multiplier_schedule", schedule]
    args = [
        *spec["model_args"](model), *spec["args"],
        "--dataset_config", config, "--seed", str(SEED), "--max_train_epochs", str(settings["epochs"]),
        "--mixed_precision", settings["precision"], "--sdpa",
        "--max_data_loader_n_workers", "2", "--persistent_data_loader_workers",
        "--optimizer_type", "AdamW", "--learning_rate", "1e-4",
        "--save_model_as", "safetensors", "--output_name", "out", "--output_dir", run_dir, "--console_log_simple",
    ]
    metrics = run_dir / "metrics.jsonl"
    run_env = dict(env, **spec["env"], **{METRICS_ENV: str(metrics)})
    print(f"  training {family} {mode} ...", flush=True)
    code, output, wall = _run_logged([sys.executable, *program, *args], run_env, run_dir, run_dir / "train.log", TRAIN_TIMEOUT)
    if code != 0:
        raise CheckError(f"{family} {mode} training failed ({code}): {_last_line(output)} (log: {run_dir / 'train.log'})")
    measured = [r for r in _read_jsonl(metrics) if r.get("steps")]
    record = max(measured, key=lambda r: len(r["steps"]), default={})
    per_epoch = _printed_int(output, "num batches per epoch")
    seconds, intervals = _seconds_per_step(record.get("steps", []), per_epoch)
    return {
        "family": family, "mode": mode, "batches_per_epoch": per_epoch, "steps": len(record.get("steps", [])),
        "seconds_per_step": seconds, "intervals": intervals, "wall_s": round(wall, 1),
        "cuda_peak_allocated": record.get("cuda_peak_allocated"), "peak_rss": record.get("peak_rss"),
        "records": _read_jsonl(schedule) if mode == "wrapped" else None,
    }


def _plan(config: Path, epochs: int, out: Path, env: dict) -> list[dict]:
    path = out / f"plan-{config.stem}.jsonl"
    got = _run([sys.executable, "-m", "kohya_multiplier", "plan", config, "--seed", str(SEED), "--epochs", str(epochs), "--schedule", path],
               env=env, cwd=str(out), timeout=600)
    if got.returncode != 0:
        raise CheckError(f"kohya-multiplier plan failed: {_last_line(got.stderr)}")
    return _read_jsonl(path)


def _canonical(records: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def _table(results: list[dict], device: str) -> str:
    memory = "peak GPU memory" if device == "cuda" else "peak RSS (CPU)"
    head = ["family", "mode", "schedule = plan", "batches/epoch", "s/step after epoch 1", "wrapped/stock", memory]
    rows = []
    stock = {r["family"]: r for r in results if r["mode"] == "stock"}
    for r in results:
        ratio = "-"
        base = stock.get(r["family"])
        if r["mode"] == "wrapped" and base and r["seconds_per_step"] and base["seconds_per_step"]:
            ratio = f"{r['seconds_per_step'] / base['seconds_per_step']:.2f}"
        seconds = "-" if r["seconds_per_step"] is None else f"{r['seconds_per_step']:.4f} ({r['intervals']} steps)"
        peak = r["cuda_peak_allocated"] if device == "cuda" else r["peak_rss"]
        rows.append([r["family"].upper(), r["mode"], r.get("equals_plan", "-"), str(r["batches_per_epoch"]), seconds, ratio, _mib(peak)])
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head, *rows])


def run(args) -> int:
    source = Path(args.bundle).resolve()
    out = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="km-cuda-check-"))
    out.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        raise CheckError(f"bundle {source} does not exist (make it with `cuda-check.py bundle`)")
    top = _unpack(source, out / "bundle")
    _require_device(args.device)
    site = out / "site-packages"
    installed = _install_wheels(top, site)
    env = _environment(top, out, site, args.device)
    info = _probe(env, args.device)
    if args.device == "cuda":
        precision, precision_note = "bf16", ""
        if not info["bf16"]:
            raise CheckError(f"{info['gpu']} does not support bf16")
    elif info["bf16"]:
        precision, precision_note = "bf16", " (bf16 autocast works on this CPU with this torch)"
    else:
        precision, precision_note = "no", " (bf16 does not work on this CPU with this torch, so none)"
    settings = {"epochs": args.epochs, "precision": precision}
    manifest = json.loads((top / "manifest.json").read_text(encoding="utf-8"))
    print(f"cuda-check: device {args.device}{' (' + info['gpu'] + ')' if info['gpu'] and args.device == 'cuda' else ''}, "
          f"torch {info['torch']}, Python {sys.version.split()[0]}; sd-scripts {(manifest.get('sd_scripts_commit') or 'without git')[:8]}; "
          f"{installed}; output in {out}", flush=True)

    sys.path.insert(0, str(top / "kohya-multiplier" / "tests" / "integration"))
    import harness  # the integration suite's dataset: four subjects, regularization images, three buckets

    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    harness.write_images_tree(data)
    configs = {
        "wrapped": harness.write_config(data, batch_size=2, name="wrapped.toml"),
        "stock": harness.write_config(data, batch_size=2, multipliers=False, name="stock.toml"),
    }
    plan = _plan(configs["wrapped"], args.epochs, out, env)
    models = out / "models"
    models.mkdir(exist_ok=True)
    results = []
    for family in FAMILIES:
        print(f"{family}: building the tiny model ...", flush=True)
        model = _build_model(family, top, models, dict(env, **FAMILIES[family]["env"]))
        for mode in ("stock", "wrapped"):
            result = _train(family, mode, top, model, configs[mode], out, env, settings)
            if mode == "wrapped":
                per_epoch = [sum(1 for r in result["records"] if r["epoch"] == e) for e in range(1, args.epochs + 1)]
                same = bool(plan) and _canonical(result["records"]) == _canonical(plan)
                same = same and per_epoch == [len(plan) // args.epochs] * args.epochs == [result["batches_per_epoch"]] * args.epochs
                result["equals_plan"] = "yes" if same else "no"
                result["plan_batches_per_epoch"] = len(plan) // args.epochs
            results.append(result)

    print()
    print(f"mixed precision {precision}{precision_note}, SDPA, 2 persistent DataLoader workers, {args.epochs} epochs, batch 2; "
          f"s/step: mean seconds between optimizer steps after the first epoch")
    print(_table(results, args.device))
    if args.device == "cpu":
        print("peak RSS is the training process's own (not its DataLoader workers'); --device cpu measures no GPU memory")
    summary = [{k: v for k, v in r.items() if k != "records"} for r in results]
    (out / "results.json").write_text(json.dumps({"device": args.device, "gpu": info["gpu"], "torch": info["torch"],
                                                  "precision": precision, "epochs": args.epochs, "runs": summary}, indent=1) + "\n")
    return 0 if all(r.get("equals_plan") == "yes" for r in results if r["mode"] == "wrapped") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cuda-check.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("bundle", help="pack sd-scripts, this package and the wheels (needs network unless --no-wheels)")
    pack.add_argument("--sd-scripts", required=True, metavar="DIR")
    pack.add_argument("--out", required=True, metavar="FILE.tar.gz")
    pack.add_argument("--no-wheels", action="store_true", help="no wheels: the target has sd-scripts' requirements")
    pack.add_argument("--python-version", default="3.10,3.11,3.12", help="Pythons the target may run, for compiled wheels")
    pack.add_argument("--platform", default="manylinux_2_28_x86_64", help="the target's wheel platform tag")
    pack.add_argument("--skip", action="append", default=[], metavar="PACKAGE",
                      help="leave out a package the target is known to have (e.g. opencv-python, 50 MB); repeatable")
    pack.add_argument("--pip-python", help="the Python whose pip resolves and downloads (default: this one)")
    check = commands.add_parser("run", help="run the check on this machine, offline")
    check.add_argument("bundle", metavar="BUNDLE_OR_DIR")
    check.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    check.add_argument("--out", metavar="DIR", help="working folder (default: a new temporary one)")
    check.add_argument("--epochs", type=int, default=3, help="epochs per training (the first is warm-up); at least 2")
    args = parser.parse_args(argv)
    try:
        if args.command == "run" and args.epochs < 2:
            raise CheckError("--epochs must be at least 2: the first epoch is warm-up")
        return bundle(args) if args.command == "bundle" else run(args)
    except CheckError as error:
        print(f"cuda-check: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
