"""The balance picture (PNG) and the self-contained HTML page."""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from kohya_multiplier import html_report
from kohya_multiplier.errors import UserError

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is the optional 'plot' extra")

from kohya_multiplier import plot  # noqa: E402

NAMES = ["alice", "bob_the_builder", "carol <&> co", "reg_person"]


def make_stats(dataset=0, names=NAMES, epochs=6, seed=0):
    rng = np.random.default_rng(seed)
    s = len(names)
    expected = np.array([25.0, 40.0, 12.5, 0.0][:s] + [10.0] * max(0, s - 4))
    counts = np.clip(np.round(expected[:, None] + rng.integers(-2, 3, size=(s, epochs))), 0, None)
    counts[expected == 0] = 0
    coverage = np.minimum(1.0, np.cumsum(rng.uniform(0.1, 0.5, size=(s, epochs)), axis=1))
    return SimpleNamespace(dataset=dataset, subset_names=list(names), expected_per_epoch=expected, counts=counts,
                           coverage=coverage, epochs=list(range(1, epochs + 1)))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def figure_texts(fig) -> list[str]:
    texts = []
    for ax in fig.axes:
        texts += [t.get_text() for t in ax.get_yticklabels()]
        texts.append(ax.get_title(loc="left"))
    return texts


def test_plot_is_a_png_showing_every_subset_by_name(tmp_path):
    stats = [make_stats(0), make_stats(1, ["dave", "erin"], epochs=3)]
    path = tmp_path / "balance.png"
    data = plot.draw_balance(stats, path, title="plan of cfg.toml")
    assert path.read_bytes() == data and len(data) > 10_000
    width, height = png_size(data)
    assert width > 600 and height > 300
    texts = figure_texts(plot.build_figure(stats))
    for name in NAMES + ["dave", "erin"]:
        assert any(t.startswith(name) for t in texts), name
    assert any("target 25" in t for t in texts) and any("excluded" in t for t in texts)
    assert any(t.startswith("Dataset 1:") for t in texts)


def test_plot_scales_to_many_subsets_and_epochs():
    names = [f"subject_{i:02d}" for i in range(50)]
    data = plot.draw_balance([make_stats(0, names, epochs=200)])
    width, height = png_size(data)
    assert height > 1000 and width < 5000


def test_plot_accepts_lists_and_rejects_bad_shapes():
    stats = SimpleNamespace(subset_names=["a"], expected_per_epoch=[2], counts=[[2, 2]], coverage=[[0.5, 1.0]],
                            epochs=[1, 2])
    assert png_size(plot.draw_balance([stats]))[0] > 0
    bad = SimpleNamespace(subset_names=["a", "b"], expected_per_epoch=[2], counts=[[2]], coverage=[[1.0]], epochs=[1])
    with pytest.raises(ValueError, match="inconsistent shapes"):
        plot.draw_balance([bad])
    with pytest.raises(UserError, match="nothing to draw"):
        plot.draw_balance([])


def test_plot_unwritable_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as error:
        plot.draw_balance([make_stats()], tmp_path / "missing" / "x.png")
    assert "cannot write" in str(error.value) and "\n" not in str(error.value)


def test_page_is_self_contained_and_names_every_subset(tmp_path):
    stats = [make_stats(0), make_stats(1, ["dave"], epochs=4)]
    png = plot.draw_balance(stats)
    path = tmp_path / "plan.html"
    page = html_report.write_page(stats, ["dataset 0 table\nalice  300", "dataset 1 table"], png, path,
                                  title="plan of cfg.toml")
    assert path.read_text(encoding="utf-8") == page
    # the picture is inlined, byte for byte
    encoded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page).group(1)
    assert base64.b64decode(encoded) == png
    # nothing is fetched from elsewhere
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page
    for name in ["alice", "bob_the_builder", "carol &lt;&amp;&gt; co", "reg_person", "dave"]:
        assert f"<td class=name>{name}</td>" in page
    assert "dataset 0 table\nalice  300" in page and "<title>plan of cfg.toml</title>" in page
    assert "excluded" in page


def test_page_from_a_png_file_or_without_picture(tmp_path):
    stats = [make_stats()]
    png_path = tmp_path / "p.png"
    plot.draw_balance(stats, png_path)
    page = html_report.render_page(stats, "tables", png_path)
    assert "data:image/png;base64," in page
    page = html_report.render_page(stats, None, None)
    assert "<img" not in page and "alice" in page
    with pytest.raises(UserError, match="cannot read the picture"):
        html_report.render_page(stats, None, tmp_path / "nope.png")


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium installed (apt-get install chromium)")
def test_page_in_headless_chromium(tmp_path):
    """Load the page in a real browser: the picture decodes, the tables render with every name."""
    stats = [make_stats(0), make_stats(1, ["dave", "erin"], epochs=4)]
    png = plot.draw_balance(stats)
    page = html_report.render_page(stats, "the plan tables", png)
    # A probe script (only in this test copy) reports what the browser made of the page.
    probe = ("<script>window.addEventListener('load', () => { const img = document.querySelector('img');"
             "document.body.setAttribute('data-probe', [img.complete, img.naturalWidth, img.naturalHeight,"
             "document.querySelectorAll('td.name').length].join(','));});</script>")
    path = tmp_path / "page.html"
    path.write_text(page.replace("</body>", probe + "</body>"), encoding="utf-8")
    common = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}"]
    try:
        dom = subprocess.run(common + ["--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                             capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("headless Chromium did not answer within 120 s")
    if dom.returncode != 0 or "<body" not in dom.stdout:
        pytest.skip(f"headless Chromium could not run here: {dom.stderr.strip()[-300:]}")
    probe_value = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert probe_value, dom.stdout[:500]
    complete, width, height, rows = probe_value.group(1).split(",")
    assert complete == "true" and (int(width), int(height)) == png_size(png)
    assert int(rows) == 6
    for name in NAMES + ["dave", "erin"]:
        assert html_report.html.escape(name) in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(common + ["--window-size=1200,1600", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000
    image = matplotlib.image.imread(str(shot))
    assert image.shape[0] == 1600 and image.shape[1] == 1200
    assert len(np.unique(image.reshape(-1, image.shape[-1])[::97], axis=0)) > 20  # not a blank page
