"""scripts/cuda-check.py end to end on the CPU: `bundle` from a configured checkout, then `run
--device cpu` from the bundle, which builds the tiny SDXL and FLUX models and trains each stock and
wrapped. The printed table must say the wrapped schedules equal the plan, with the dry run's batches
per epoch.

CI time: it runs for one checkout only (c162e90 when configured, else the first configured one),
2 epochs, batch 2. The bundle carries wheels when PyPI can be reached (for this Python only), else
it is built with --no-wheels and the checkout's own packages are used.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import dry_run

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "cuda-check.py"
PREFERRED = "c162e90"
EPOCHS = 2


def _integration_conftest(config):
    here = Path(__file__).resolve().parent / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__).resolve() == here:
            return plugin
    raise AssertionError("tests/integration/conftest.py is not loaded")


@pytest.fixture(scope="session")
def sd(request):
    """This file's own `sd`: the checkout without the tiny SD1.x model (the check builds its own)."""
    conftest = _integration_conftest(request.config)
    label, checkout, revision, problem = request.param
    if problem:
        pytest.skip(problem)
    labels = [entry[0] for entry in conftest.CHECKOUTS if not entry[3]]
    chosen = PREFERRED if PREFERRED in labels else labels[0]
    if label != chosen:
        pytest.skip(f"CI time: the CUDA check's CPU mode runs for one checkout only ({chosen})")
    return conftest.SdScripts(label, checkout, revision)


def _check(sd, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = sd.env(PIP_DEFAULT_TIMEOUT="20", PIP_RETRIES="1")  # an offline machine fails fast
    return subprocess.run([sd.python, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def checked(sd, tmp_path_factory):
    work = tmp_path_factory.mktemp("cuda-check")
    bundle = work / "bundle.tar.gz"
    version = "{}.{}".format(*sys.version_info[:2])
    made = _check(sd, "bundle", "--sd-scripts", str(sd.root), "--out", str(bundle), "--python-version", version)
    if made.returncode == 2 and "cannot download" in made.stderr:
        made = _check(sd, "bundle", "--sd-scripts", str(sd.root), "--out", str(bundle), "--no-wheels")
    assert made.returncode == 0, made.stdout + made.stderr
    ran = _check(sd, "run", str(bundle), "--device", "cpu", "--out", str(work / "out"), "--epochs", str(EPOCHS))
    return made, ran, work


def _rows(output: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 4 and cells[0] in ("SDXL", "FLUX"):
            rows[(cells[0], cells[1])] = cells
    return rows


def test_cpu_run_prints_schedule_equals_plan(sd, checked):
    made, ran, work = checked
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
    assert "bundle:" in made.stdout and " MB" in made.stdout
    rows = _rows(ran.stdout)
    assert set(rows) == {(f, m) for f in ("SDXL", "FLUX") for m in ("stock", "wrapped")}, ran.stdout
    planned, _ = dry_run([str(work / "out" / "data" / "wrapped.toml"), "--seed", "42", "--epochs", str(EPOCHS)], work / "dry-run.jsonl")
    for family in ("SDXL", "FLUX"):
        wrapped, stock = rows[(family, "wrapped")], rows[(family, "stock")]
        assert wrapped[2] == "yes", ran.stdout
        assert int(wrapped[3]) == len(planned) // EPOCHS, ran.stdout
        assert stock[2] == "-" and int(stock[3]) > 0
        assert re.fullmatch(r"\d+\.\d+", wrapped[5]), wrapped  # the wrapped/stock ratio
        assert wrapped[6].endswith("MiB") and stock[6].endswith("MiB")
    assert "peak RSS" in ran.stdout


def test_cuda_without_a_gpu_and_a_missing_bundle_are_one_line_errors(sd, checked, tmp_path):
    _, _, work = checked
    missing = _check(sd, "run", str(tmp_path / "nothing.tar.gz"), timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    unpacked = work / "out" / "bundle" / "km-cuda-check"
    probe = subprocess.run([sd.python, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True, env=sd.env())
    if probe.stdout.strip() == "True":
        pytest.skip("this machine has a GPU")
    no_gpu = _check(sd, "run", str(unpacked), "--device", "cuda", "--out", str(tmp_path / "out"), timeout=600)
    assert no_gpu.returncode == 2 and no_gpu.stderr.count("\n") == 1 and "no CUDA GPU" in no_gpu.stderr, no_gpu.stderr
