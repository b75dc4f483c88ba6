"""Shared test settings."""

import os

import pytest
from hypothesis import settings

from kohya_multiplier import errors
# CI runs a fixed sequence of examples (reproducible); local runs explore new ones each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run the test in its own empty folder (relative paths resolve there), with no warning given yet."""
    monkeypatch.chdir(tmp_path)
    errors._warned.clear()
    yield tmp_path
    errors._warned.clear()

