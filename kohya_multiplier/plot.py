"""The balance picture: per dataset, images per subset per epoch against the target, and the
share of each subset's images seen so far.

matplotlib is optional (``pip install 'kohya-multiplier[plot]'``) and imported only when a picture
is drawn, with the Agg backend through ``matplotlib.figure.Figure`` (no pyplot, no display, no
global state).

Input: a list of per-dataset statistics objects with the attributes ``subset_names`` (S names),
``expected_per_epoch`` (S,), ``counts`` (S, E) images trained per subset per planned epoch,
``coverage`` (S, E) share 0..1 of the subset's images seen at least once by the end of each epoch,
``epochs`` (E epoch numbers); optionally ``dataset`` (its index) — the lead's ``report.DatasetStats``
or anything shaped like it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kohya_multiplier.errors import UserError

ANNOTATE_CELLS = 600  # write the numbers into the cells up to this many cells per panel


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib import colors
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("drawing a picture needs matplotlib: pip install 'kohya-multiplier[plot]'",
                        key="--plot") from None
    return Figure, colors


def _arrays(stats: Any, position: int):
    names = [str(n) for n in stats.subset_names]
    expected = np.asarray(stats.expected_per_epoch, dtype=float).reshape(-1)
    counts = np.asarray(stats.counts, dtype=float)
    coverage = np.asarray(stats.coverage, dtype=float)
    epochs = [int(e) for e in stats.epochs]
    s, e = len(names), len(epochs)
    if counts.ndim != 2 or coverage.ndim != 2 or expected.shape != (s,) or counts.shape != (s, e) \
            or coverage.shape != (s, e):
        raise ValueError(
            f"dataset {position}: statistics have inconsistent shapes: {s} names, expected {expected.shape}, "
            f"counts {counts.shape}, coverage {coverage.shape}, {e} epochs")
    dataset = getattr(stats, "dataset", getattr(stats, "index", position))
    return dataset, names, expected, counts, coverage, epochs


def _ticks(epochs: list[int], limit: int = 25) -> list[int]:
    step = max(1, int(np.ceil(len(epochs) / limit)))
    return list(range(0, len(epochs), step))


def _fmt(value: float) -> str:
    value = float(value) + 0.0  # no "-0"
    return f"{value:.0f}" if abs(value - round(value)) < 1e-9 else f"{value:.1f}"


def draw_balance(stats_list: Sequence[Any], path: str | os.PathLike | None = None, *,
                 title: str | None = None, dpi: int = 110) -> bytes:
    """Draw the balance picture for every dataset in ``stats_list``; return the PNG bytes and,
    when ``path`` is given, write them there."""
    fig = build_figure(stats_list, title=title, dpi=dpi)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": "kohya-multiplier"})
    data = buffer.getvalue()
    if path is not None:
        try:
            Path(path).write_bytes(data)
        except OSError as error:
            raise UserError(f"cannot write: {error.strerror or error}", file=str(path), key="--plot") from None
    return data


def build_figure(stats_list: Sequence[Any], *, title: str | None = None, dpi: int = 110):
    """The matplotlib Figure (not drawn yet) of :func:`draw_balance`."""
    if not stats_list:
        raise UserError("nothing to draw: no dataset has planned epochs", key="--plot")
    Figure, colors = _matplotlib()
    prepared = [_arrays(stats, i) for i, stats in enumerate(stats_list)]
    max_epochs = max(len(p[5]) for p in prepared)
    max_label = max((len(n) for p in prepared for n in p[1]), default=8)
    heights = [max(2.2, 0.32 * len(p[1]) + 1.4) for p in prepared]
    panel_width = min(max(4.5, 0.42 * max_epochs + 1.5), 16.0)
    label_width = min(0.075 * (max_label + 14), 5.0)
    fig = Figure(figsize=(label_width + 2 * panel_width + 2.0, sum(heights) + (0.6 if title else 0.2)),
                 dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(len(prepared), 2, height_ratios=heights, width_ratios=[1, 1])
    count_cmap = colors.LinearSegmentedColormap.from_list(
        "under_on_over", ["#2166ac", "#92c5de", "#f7f7f7", "#f4a582", "#b2182b"])
    count_cmap = count_cmap.with_extremes(bad="#d9d9d9")
    seen_cmap = colors.LinearSegmentedColormap.from_list("seen", ["#ffffff", "#a1d99b", "#238b45"])

    for row, (dataset, names, expected, counts, coverage, epochs) in enumerate(prepared):
        s, e = counts.shape
        labels = [f"{name}  (target {_fmt(x)})" if x > 0 else f"{name}  (excluded)" for name, x in zip(names, expected)]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(expected[:, None] > 0, counts / expected[:, None], np.nan)
        ratio = np.ma.masked_invalid(ratio)
        annotate = s * e <= ANNOTATE_CELLS and e <= 40

        ax = fig.add_subplot(grid[row, 0])
        image = ax.imshow(ratio, aspect="auto", cmap=count_cmap, interpolation="nearest",
                          norm=colors.TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=2.0))
        ax.set_title(f"Dataset {dataset}: images per epoch (colour: against target)", fontsize=10, loc="left")
        ax.set_yticks(range(s), labels, fontsize=8)
        ticks = _ticks(epochs)
        ax.set_xticks(ticks, [str(epochs[t]) for t in ticks], fontsize=7)
        ax.set_xlabel("epoch", fontsize=8)
        if annotate:
            for i in range(s):
                for j in range(e):
                    ax.text(j, i, _fmt(counts[i, j]), ha="center", va="center", fontsize=6.5, color="#111111")
        bar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.015, ticks=[0, 0.5, 1, 1.5, 2])
        bar.ax.set_yticklabels(["0", "½", "target", "1½×", "≥2×"], fontsize=7)

        ax2 = fig.add_subplot(grid[row, 1])
        seen = ax2.imshow(np.clip(coverage, 0, 1) * 100, aspect="auto", cmap=seen_cmap, vmin=0, vmax=100,
                          interpolation="nearest")
        ax2.set_title(f"Dataset {dataset}: share of each subset's images seen so far", fontsize=10, loc="left")
        ax2.set_yticks(range(s), names, fontsize=8)
        ax2.set_xticks(ticks, [str(epochs[t]) for t in ticks], fontsize=7)
        ax2.set_xlabel("epoch", fontsize=8)
        if annotate:
            for i in range(s):
                for j in range(e):
                    value = coverage[i, j] * 100
                    ax2.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6.5,
                             color="white" if value > 70 else "#111111")
        bar2 = fig.colorbar(seen, ax=ax2, fraction=0.035, pad=0.015)
        bar2.set_label("% seen", fontsize=7)
        bar2.ax.tick_params(labelsize=7)

    if title:
        fig.suptitle(title, fontsize=11)
    return fig
