"""The report page in a real browser: headless Chromium at 900 and 1400 px, asserting on what it
shows (names, figures, no sideways overflow for 200 subsets). Skips, with the reason, where no
Chromium is installed (CI installs Debian's `chromium`, see .ci/run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kohya_multiplier.report import page as html_report
from kohya_multiplier.cli import main
from kohya_multiplier.report.data import EpochAccumulator, Report, dataset_report


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "",
                      shutil.which("chromium-browser") or "", shutil.which("google-chrome") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


pytestmark = pytest.mark.skipif(_chromium() is None, reason="no headless Chromium installed (apt-get install chromium)")

# What the browser made of the page, written into the DOM by a probe (only in the test's copy).
PROBE = """<script>window.addEventListener('load', () => {
  const svgs = [...document.querySelectorAll('svg.chart')];
  const probe = {width: window.innerWidth, scroll: document.documentElement.scrollWidth,
    text: document.body.innerText, svgs: svgs.length,
    svgWidths: svgs.map(s => s.getBoundingClientRect().width),
    minFont: Math.min(...[...document.querySelectorAll('svg.chart text, td, th, li')].map(
      e => parseFloat(getComputedStyle(e).fontSize))),
    rows: document.querySelectorAll('table.subsets tbody tr').length};
  const out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(probe);
  document.body.appendChild(out);
});</script>"""


def _browse(page: str, tmp_path: Path, width: int, screenshot: Path | None = None) -> dict:
    path = tmp_path / f"page{width}.html"
    path.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    common = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
              "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={tmp_path / f'profile{width}'}",
              f"--window-size={width},1200"]
    try:
        dom = subprocess.run(common + ["--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                             capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("headless Chromium did not answer within 120 s")
    if dom.returncode != 0 or "<body" not in dom.stdout:
        pytest.skip(f"headless Chromium could not run here: {dom.stderr.strip()[-300:]}")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stdout[-500:]
    probe = json.loads(html_report.html.unescape(found.group(1)))
    if screenshot is not None:
        subprocess.run(common + [f"--screenshot={screenshot}", path.as_uri()], capture_output=True, timeout=120)
    return probe


@pytest.fixture(scope="module")
def example_page(tmp_path_factory) -> str:
    from kohya_multiplier.example import generate

    root = tmp_path_factory.mktemp("page")
    config = generate(str(root / "data"))
    page = root / "plan.html"
    assert main(["plan", config, "--epochs", "8", "--seed", "1", "--html", str(page)]) == 0
    return page.read_text(encoding="utf-8")


@pytest.mark.parametrize("width", [900, 1400])
def test_example_page_shows_every_subset_figure_and_note(example_page, tmp_path, width):
    shot = tmp_path / "shot.png"
    probe = _browse(example_page, tmp_path, width, screenshot=shot)
    text = probe["text"]
    for name in ["alice", "bob", "carol", "watercolor_style", "reg_person"]:
        assert text.count(name) >= 4, name  # three charts and the table
    assert "batches per epoch" in text and "batches over these epochs" in text
    assert "regularization subsets without a multiplier get 0.3" in text  # the text output's note
    assert re.search(r"\d+ of 300", text) and "all 60 by epoch" in text  # rotation, as counts
    assert "100 %" not in text
    assert probe["svgs"] == 3 and probe["rows"] == 5
    assert probe["scroll"] <= probe["width"], probe  # nothing sticks out sideways
    assert probe["minFont"] >= 12
    assert shot.exists() and shot.stat().st_size > 20_000


def _many_subsets(subsets=200, epochs=300) -> Report:
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 500, size=subsets)
    subset_of_image = np.repeat(np.arange(subsets), sizes)
    acc = EpochAccumulator(subset_of_image, subsets, 1)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    local = np.arange(len(subset_of_image)) - offsets[subset_of_image]
    size, take = sizes[subset_of_image], np.maximum(1, sizes // 20)[subset_of_image]
    for e in range(1, epochs + 1):
        acc.add(e, np.flatnonzero((local - e * take) % size < take))
    names = [f"subject_{i:03d}" + ("_with_a_rather_long_descriptive_folder_name_" * (i % 3)) + ("猫" if i % 5 == 0 else "")
             for i in range(subsets)]
    d = dataset_report(0, acc, names=names, multipliers=[0.05] * subsets, multiplier_texts=["0.05 (subset)"] * subsets,
                       targets=[float(max(1, s // 20)) for s in sizes], batches_per_epoch=[900] * epochs)
    return Report(title="200 subsets", datasets=[d], notes=["a note " * 40], warnings=["a warning"])


@pytest.mark.parametrize("width", [900, 1400])
def test_two_hundred_subsets_and_300_epochs_fit_the_window(tmp_path, width):
    report = _many_subsets()
    probe = _browse(html_report.render_page(report), tmp_path, width)
    assert abs(probe["width"] - width) <= 20, probe  # the browser really had this window width
    assert probe["scroll"] <= probe["width"], probe
    assert probe["rows"] == 200 and probe["minFont"] >= 12
    if width == 900:  # the per-epoch chart is wider than the window: it scrolls in its own box, not the page
        assert max(probe["svgWidths"]) > width
    text = probe["text"]
    assert "subject_199" in text and "subject_000" in text and "猫" in text
    assert "286-300" in text  # 300 epochs in 20 ranges of 15
    assert all(w <= 1100 for w in probe["svgWidths"])
