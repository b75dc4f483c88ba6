"""scripts/setup-integration.sh as a newcomer meets it: its help, its refusals, and what it imports.

The install steps themselves need the network and minutes per checkout; the integration suite
runs on checkouts this script set up, which is where they are proven.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "setup-integration.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_is_the_description_and_no_code(flag):
    result = _run(flag)
    assert result.returncode == 0 and not result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Set up the integration environment")
    assert any("--label NAME" in line for line in lines)
    assert not any(line.startswith("#") for line in lines), "comment marks leaked into the help"
    assert not any(word in result.stdout for word in ("set -euo", "$(", "pipefail")), result.stdout


def test_without_a_checkout_it_prints_the_usage_and_exits_2():
    result = _run()
    assert result.returncode == 2 and result.stderr.startswith("usage: scripts/setup-integration.sh SD_SCRIPTS_DIR")


def test_a_folder_that_is_not_sd_scripts_is_refused_before_any_install(tmp_path):
    result = _run(str(tmp_path))
    assert result.returncode == 2
    assert "is neither an sd-scripts checkout (no library/config_util.py) nor a musubi-tuner one" in result.stderr
    assert not (tmp_path / "venv").exists(), "a venv was made in a folder that is not sd-scripts"


def test_an_unexpected_second_argument_is_refused(tmp_path):
    result = _run(str(tmp_path), str(tmp_path))
    assert result.returncode == 2 and "unexpected argument" in result.stderr


def test_torch_is_not_imported_to_read_its_version():
    # Importing torch before NumPy is installed prints a NumPy warning into a newcomer's set-up.
    code = [line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not any("import torch" in line for line in code)
    assert any('m.version("torch")' in line for line in code)
