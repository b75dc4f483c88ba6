"""What the musubi-tuner integration tests share: the configured musubi-tuner Python (every test
skips, saying why, without one), the environment of its processes, a training run (wrapped or
stock) and the dry run it is compared with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import read_records

from kohya_multiplier.checkouts import musubi as installs

INTEGRATION_DIR = Path(__file__).resolve().parent
REPO_ROOT = INTEGRATION_DIR.parents[1]
SEED = 42
TIMEOUT = 600


def _musubi_python() -> tuple[Path | None, str | None]:
    try:
        python = installs.configured_python()
    except Exception as error:  # noqa: BLE001 - a broken config must skip, not error, the suite
        return None, f"cannot read the kohya-multiplier config: {error}"
    if python is None:
        return None, ("no musubi-tuner environment configured: run `kohya-multiplier configure --musubi PY` "
                      "(see the README, 'Developer set-up for the integration suite')")
    if not python.exists():
        return None, f"the configured musubi-tuner Python {python} does not exist"
    return python, None


PYTHON, WHY_NOT = _musubi_python()
needs_musubi = pytest.mark.skipif(PYTHON is None, reason=WHY_NOT or "")


def env(tiny_family: str, **extra: str) -> dict:
    """The test hook on PYTHONPATH with ``tiny_family`` (e.g. KOHYA_MULTIPLIER_TINY_WAN) set, offline."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    environment.update(
        PYTHONPATH=os.pathsep.join([str(INTEGRATION_DIR / "tiny_hook"), str(REPO_ROOT)]),
        OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0", PYTHONUNBUFFERED="1",
        **{tiny_family: "1"}, **extra,
    )
    return environment


def run(args: list[str], cwd: Path, log: Path, tiny_family: str, *, launcher: list[str] | None = None,
        **extra_env: str) -> subprocess.CompletedProcess:
    """``args`` in the musubi-tuner Python (or after ``launcher``, e.g. torchrun); its output also goes to ``log``."""
    done = subprocess.run([*(launcher or [str(PYTHON)]), *args], cwd=cwd, env=env(tiny_family, **extra_env), capture_output=True,
                          text=True, timeout=TIMEOUT)
    log.write_text(" ".join(args) + "\n\n" + done.stdout + done.stderr)
    return done


def train(output: Path, script: str, args: list[str], tiny_family: str, *, stock: bool = False, workers: int = 0,
          seed: int | None = SEED, launcher: list[str] | None = None, **extra_env: str) -> tuple[str, Path]:
    """One training run of musubi's ``script`` into ``output`` (wrapped, or stock musubi-tuner):
    (its output, the LoRA file)."""
    output.mkdir()
    program = ["-m", f"musubi_tuner.{script}"] if stock else ["-m", "kohya_multiplier", "musubi", script]
    if seed is not None:
        args = [*args, "--seed", str(seed)]
    args = [*program, *args, "--output_dir", str(output), "--output_name", "out",
            "--network_dim", "4", "--optimizer_type", "AdamW", "--learning_rate", "1e-3", "--mixed_precision", "no",
            "--sdpa", "--max_data_loader_n_workers", str(workers)]
    if workers:
        args.append("--persistent_data_loader_workers")
    done = run(args, output, output / "train.log", tiny_family, launcher=launcher, **extra_env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done.stdout + done.stderr, output / "out.safetensors"


def plan(config: Path, schedule: Path, architecture: str, *extra: str, seed: int = SEED) -> tuple[list[dict], str]:
    """The dry run's schedule of ``config`` (this process's Python, the working tree's code)."""
    done = subprocess.run([sys.executable, "-m", "kohya_multiplier", "plan", str(config), "--seed", str(seed),
                           "--architecture", architecture, "--schedule", str(schedule), *extra],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), timeout=300)
    assert done.returncode == 0, done.stderr
    return read_records(schedule), done.stdout
