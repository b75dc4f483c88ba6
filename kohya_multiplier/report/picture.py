"""The report as a picture (``plan --plot FILE``, ``report --plot FILE``): per dataset, the same
three charts as the HTML page — images per epoch against the target, epoch by epoch, rotation —
drawn from a ``report_data.Report`` with matplotlib, in the format the file's extension names
(PNG, SVG or PDF).

matplotlib is optional (``pip install 'kohya-multiplier[plot]'``) and imported only when a picture
is drawn, through ``matplotlib.figure.Figure`` (no pyplot, no display, no global state). The
picture grows with the subsets and groups many epochs into ranges, so text keeps its size.
Names with characters the default font lacks are drawn with an installed font that has them;
a character no installed font has is drawn as "?" (no matplotlib warning, no box).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from kohya_multiplier.errors import UserError, safe_text
from kohya_multiplier.report.data import Report
from kohya_multiplier.report.svg_chart import FILL, MARK, short_name

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
ROW_INCHES = 0.24  # per subset row: 7-point text stays legible at any number of subsets


def picture_format(path: str | os.PathLike, key: str = "--plot") -> str:
    """The format a picture path's extension names; any other extension is a user error (checked
    before any work)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        shown = suffix or "no extension"
        raise UserError(f"cannot write {shown}: name a .png, .svg or .pdf file", file=str(path), key=key)
    return FORMATS[suffix]


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("drawing a picture needs matplotlib: pip install 'kohya-multiplier[plot]'",
                        key="--plot") from None
    return Figure


_charmaps: dict[str, set[int]] = {}


def _coverage(path: str) -> set[int]:
    if path not in _charmaps:
        try:
            from matplotlib.ft2font import FT2Font

            _charmaps[path] = set(FT2Font(path).get_charmap())
        except Exception:  # an unreadable font file covers nothing
            _charmaps[path] = set()
    return _charmaps[path]


def font_plan(texts: list[str]) -> tuple[list[str], set[int]]:
    """(font families, in fallback order; the code points that no installed font has)."""
    from matplotlib import font_manager

    default = font_manager.findfont("DejaVu Sans")
    needed = {ord(c) for t in texts for c in t if not c.isspace()}
    missing = needed - _coverage(default)
    families = ["DejaVu Sans"]
    if missing:
        for entry in font_manager.fontManager.ttflist:
            if "last resort" in entry.name.lower():
                continue  # its "glyphs" are the boxes this avoids (matplotlib >= 3.10 ships it)
            has = missing & _coverage(entry.fname)
            if has and entry.name not in families:
                families.append(entry.name)
                missing -= has
            if not missing:
                break
    return families, missing


def _safe(text: str, missing: set[int]) -> str:
    text = safe_text(text)
    return "".join("?" if ord(c) in missing else c for c in text) if missing else text


def draw_report(report: Report, path: str | os.PathLike | None = None, *, fmt: str | None = None, dpi: int = 110) -> bytes:
    """Draw the report; return the file's bytes, in the format ``path``'s extension names (``fmt``
    overrides; default PNG). Writing them is the caller's, through the one writer."""
    fmt = fmt or (picture_format(path) if path is not None else "png")
    from kohya_multiplier.progress import Progress

    with Progress(total=2, label=f"drawing {path if path is not None else 'the picture'}") as bar:
        fig = build_figure(report, dpi=dpi)
        bar.advance()
        buffer = io.BytesIO()
        metadata = {"Creator": "kohya-multiplier"} if fmt in ("svg", "pdf") else {"Software": "kohya-multiplier"}
        fig.savefig(buffer, format=fmt, metadata=metadata)
        bar.advance()
    return buffer.getvalue()


def build_figure(report: Report, *, dpi: int = 110):
    """The matplotlib Figure (not drawn yet) of :func:`draw_report`."""
    if not report.datasets:
        raise UserError("nothing to draw: no dataset has planned epochs", key="--plot")
    Figure = _matplotlib()
    from matplotlib import rc_context

    names = [s.name for d in report.datasets for s in d.subsets] + [report.title]
    families, missing = font_plan(names)
    with rc_context({"font.family": families, "svg.fonttype": "none" if not missing else "path"}):
        return _figure(Figure, report, dpi, missing)


def _figure(Figure, report: Report, dpi: int, missing: set[int]):
    heights = [max(2.0, ROW_INCHES * len(d.subsets) + 1.3) for d in report.datasets]
    max_bins = max(len(d.bins()) for d in report.datasets)
    label_chars = max(len(short_name(s.name)) for d in report.datasets for s in d.subsets)
    widths = [4.2, max(2.5, 0.36 * max_bins), 4.2] + ([SHARE_INCHES] if any(d.scheduled for d in report.datasets) else [])
    fig = Figure(figsize=(min(2.6, 0.5 + 0.075 * label_chars) + sum(widths), sum(heights) + 0.5), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(len(report.datasets), len(widths), height_ratios=heights, width_ratios=widths)
    for row, d in enumerate(report.datasets):
        balance_words, rotation_words = d.short_verdicts()
        ax = fig.add_subplot(grid[row, 0])
        _balance_panel(ax, d, balance_words, missing)
        _epochs_panel(fig.add_subplot(grid[row, 1], sharey=ax), d)
        _rotation_panel(fig.add_subplot(grid[row, 2], sharey=ax), ax, d, rotation_words)
        if d.scheduled:
            _share_panel(fig.add_subplot(grid[row, 3]), d, missing)
    fig.suptitle(_safe(report.title, missing), fontsize=10)
    return fig


SHARE_INCHES = 4.6


def _share_panel(ax, d, missing: set[int]) -> None:
    """Right of a scheduled dataset: each subset's share of every epoch, trained (solid) against
    its scheduled target (dashed), so a fade shows at a glance."""
    trained = np.array([s.counts for s in d.subsets], dtype=np.float64)
    targets = np.array([s.targets if s.targets is not None else np.zeros(len(d.epochs)) for s in d.subsets])
    trained_share = trained / np.maximum(trained.sum(axis=0), 1)
    target_share = targets / np.where(targets.sum(axis=0) > 0, targets.sum(axis=0), 1)
    for i, s in enumerate(d.subsets):
        if s.excluded:
            continue
        colour = f"C{i % 10}"
        ax.plot(d.epochs, trained_share[i], color=colour, lw=1.4, label=_safe(short_name(s.name), missing))
        ax.plot(d.epochs, target_share[i], color=colour, lw=1.0, ls="--")
    ax.set_ylim(0, 1)
    ax.set_xlim(d.epochs[0], max(d.epochs[-1], d.epochs[0] + 1))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("epoch", fontsize=7)
    ax.set_title("share of each epoch (solid: trained, dashed: target)", fontsize=9, loc="left")
    ax.legend(fontsize=6.5, loc="upper right", frameon=False)
    ax.grid(color="#e3e3e3")


def _balance_panel(ax, d, balance_words: str, missing: set[int]) -> None:
    """Left panel: images per epoch of each subset (mean, range, target)."""
    n = len(d.subsets)
    labels = [_safe(short_name(s.name), missing) for s in d.subsets]
    # one artist per kind of mark (fast for 200 subsets)
    shown = [i for i, s in enumerate(d.subsets) if not s.excluded and s.counts.size]
    for i, s in enumerate(d.subsets):
        if s.excluded:
            ax.text(0, i, "  excluded", va="center", fontsize=7, color="#888")
    if shown:
        sub = [d.subsets[i] for i in shown]
        means = [float(s.counts.mean()) for s in sub]
        fills = [FILL[s.overall_status] for s in sub]
        marks = [MARK[s.overall_status] for s in sub]
        ax.barh(shown, means, height=0.5, color=fills)
        ax.hlines(shown, [float(s.counts.min()) for s in sub], [float(s.counts.max()) for s in sub], colors=marks, lw=1.5)
        ax.scatter(means, shown, c=marks, s=10, zorder=3)
        targets = [(i, s.target) for i, s in zip(shown, sub) if s.target is not None]
        if targets:
            ax.vlines([t for _, t in targets], [i - 0.35 for i, _ in targets], [i + 0.35 for i, _ in targets],
                      colors="#111", lw=1.8, zorder=4)
    ax.set_yticks(np.arange(n), labels, fontsize=7)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(left=0)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("images per epoch (bar: mean, line: range, black: target)", fontsize=7)
    ax.set_title(f"Dataset {d.index}: balance ({balance_words})", fontsize=9, loc="left")
    ax.grid(axis="x", color="#e3e3e3")


def _epochs_panel(ax2, d) -> None:
    """Middle panel: each subset's status and mean count per epoch (or range of epochs)."""
    from matplotlib.colors import ListedColormap

    n = len(d.subsets)
    bins = d.bins()
    statuses = sorted(FILL)
    codes = np.array([[statuses.index(s.bin_status(b)) for b in bins] for s in d.subsets])
    ax2.imshow(codes, cmap=ListedColormap([FILL[k] for k in statuses]), vmin=-0.5, vmax=len(statuses) - 0.5,
               aspect="auto", interpolation="nearest")
    ax2.vlines(np.arange(-0.5, len(bins)), -0.5, n - 0.5, colors="white", lw=1.5)  # cell borders
    ax2.hlines(np.arange(-0.5, n), -0.5, len(bins) - 0.5, colors="white", lw=1.5)
    for i, s in enumerate(d.subsets):
        for c, b in enumerate(bins):
            text = "–" if s.excluded else _short(s.counts[b.columns].mean())
            ax2.text(c, i, text, ha="center", va="center", fontsize=6.5, color="#111")
    ax2.set_xlim(-0.5, len(bins) - 0.5)
    ax2.set_xticks(range(len(bins)), [b.label for b in bins], fontsize=6.5,
                   rotation=45 if any(b.first != b.last for b in bins) else 0, ha="right" if len(bins) and bins[-1].first != bins[-1].last else "center")
    ax2.tick_params(axis="y", labelleft=False, length=0)
    ax2.set_title("per epoch" + (" (ranges: mean)" if any(b.first != b.last for b in bins) else ""), fontsize=9, loc="left")
    for side in ("top", "right", "left"):
        ax2.spines[side].set_visible(False)


def _rotation_panel(ax3, ax, d, rotation_words: str) -> None:
    """Right panel: epochs until every image was trained, longest gap and its bound; ``ax``: the
    balance panel, whose rows the labels on the right follow."""
    first = d.epochs[0] if d.epochs else 1
    active = [i for i, s in enumerate(d.subsets) if not s.excluded]
    if active:
        sub = [d.subsets[i] for i in active]
        done = [s.all_seen_epoch is not None for s in sub]
        until = [s.epochs_until_all_seen(first, len(d.epochs)) for s in sub]
        ax3.barh([i - 0.17 for i in active], until, height=0.3, color=["#3f7f4f" if x else "white" for x in done],
                 edgecolor="#3f7f4f", lw=0.8)
        late = [s.beyond_bound for s in sub]
        ax3.barh([i + 0.17 for i in active], [s.longest_gap for s in sub], height=0.3,
                 color=["#c0392b" if x else "#7f9cbf" for x in late])
        bounds = [(i, s.bound) for i, s in zip(active, sub) if s.bound is not None]
        if bounds:
            ax3.vlines([b for _, b in bounds], [i for i, _ in bounds], [i + 0.4 for i, _ in bounds], colors="#111", lw=1.5)
    ax3.tick_params(axis="y", labelleft=False, length=0)
    ax3.tick_params(axis="x", labelsize=7)
    ax3.set_xlim(left=0)
    ax3.set_xlabel("epochs (green: until all trained, blue: longest gap, black: bound)", fontsize=7)
    ax3.set_title(f"rotation ({rotation_words})", fontsize=9, loc="left")
    right = ax3.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(np.arange(len(d.subsets)), ["" if s.excluded else f"{s.seen_text} · gap {s.gap_text}" for s in d.subsets], fontsize=6.5)
    right.tick_params(axis="y", length=0)
    ax3.grid(axis="x", color="#e3e3e3")


def _short(value: float) -> str:
    value = float(value) + 0.0
    if abs(value - round(value)) < 1e-9 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"
