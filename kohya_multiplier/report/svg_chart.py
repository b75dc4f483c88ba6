"""Inline SVG charts of a ``report_data.DatasetReport``: plain strings, no dependency, sharp at any
zoom. Sizes are in CSS pixels and fixed (text is never scaled below 12 px); a chart wider than
the page scrolls inside its own box (see ``html_report``).

- :func:`balance_svg`: per subset, images per epoch (min-max range, mean dot) against the target tick;
- :func:`epochs_svg`: per subset and epoch (or range of epochs), the count, coloured only when it is
  outside what the contract allows (``report_data.balance_status``);
- :func:`rotation_svg`: per subset, epochs until every image was trained and the longest gap of
  any image, with the contract's bound.
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np

from kohya_multiplier.errors import safe_text
from kohya_multiplier.report.data import (
    EXCLUDED, FAR_OVER, FAR_UNDER, OK, OVER, UNDER, UNKNOWN, DatasetReport, SubsetReport, MAX_COLUMNS,
)

FONT = 12  # px
ROW = 20  # px per subset row
LABEL = 230  # px of the subset-name column
LABEL_CHARS = 30  # names longer than this are cut with "…" (full name in the tooltip and the table)

# (fill, text) per balance class; "ok" is quiet on purpose.
FILL = {
    OK: "#e6edf4", UNKNOWN: "#e6edf4", EXCLUDED: "#f4f4f4",
    UNDER: "#f7d99a", OVER: "#f7d99a", FAR_UNDER: "#c5a3dd", FAR_OVER: "#f0948a",
}
MARK = {OK: "#4f7cac", UNKNOWN: "#4f7cac", EXCLUDED: "#aaaaaa", UNDER: "#d08a00", OVER: "#d08a00",
        FAR_UNDER: "#7b3294", FAR_OVER: "#c0392b"}
LEGEND = [
    (OK, "within the contract (rounding, ±20 %)"), (UNDER, "off by up to half"),
    (FAR_UNDER, "far under"), (FAR_OVER, "far over"),
]


def _e(text) -> str:
    return html.escape(safe_text(text), quote=True)  # an undecodable byte or a newline in a name, escaped


def short_name(name: str, limit: int = LABEL_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _fmt(value: float) -> str:
    value = float(value) + 0.0
    if abs(value - round(value)) < 1e-9:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}".rstrip("0")


def _svg(width: int, height: int, body: Sequence[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}" '
            f'style="font: {FONT}px system-ui, -apple-system, \'Segoe UI\', Roboto, \'Noto Sans\', sans-serif">'
            + "".join(body) + "</svg>")


def _label(subset: SubsetReport, y: float) -> str:
    name = subset.name
    return (f'<text x="{LABEL - 8}" y="{y + 4:.1f}" text-anchor="end" class="name"><title>{_e(name)}</title>'
            f'{_e(short_name(name))}</text>')


def _axis(x0: int, width: int, top: int, bottom: int, maximum: float, unit: str) -> list[str]:
    """Gridlines and tick labels of a 0..maximum scale."""
    out = []
    step = _nice_step(maximum / 5 if maximum > 0 else 1)
    value = 0.0
    while value <= maximum + 1e-9:
        x = x0 + width * value / maximum if maximum > 0 else x0
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{x:.1f}" y="{top - 6}" text-anchor="middle" fill="#555">{_fmt(value)}</text>')
        value += step
    out.append(f'<text x="{x0 + width}" y="{bottom + 16}" text-anchor="end" fill="#555">{_e(unit)}</text>')
    return out


def _nice_step(raw: float) -> float:
    magnitude = 10 ** int(f"{raw:e}".split("e")[1])
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude


def balance_svg(d: DatasetReport, width: int = 820) -> str:
    """Images per epoch of each subset: the range over the planned epochs, its mean and the target."""
    rows = d.subsets
    plot_w = width - LABEL - 150
    top, height = 28, 28 + ROW * len(rows) + 24
    values = [float(s.counts.max()) for s in rows if s.counts.size] + [s.target or 0.0 for s in rows]
    maximum = max(values + [1.0]) * 1.05
    body = _axis(LABEL, plot_w, top, top + ROW * len(rows), maximum, "images per epoch")
    for r, s in enumerate(rows):
        y = top + ROW * r + ROW / 2
        body.append(_label(s, y))
        scale = lambda v: LABEL + plot_w * float(v) / maximum  # noqa: E731
        if s.excluded:
            body.append(f'<text x="{LABEL + 4}" y="{y + 4:.1f}" fill="#888">excluded</text>')
            continue
        status = s.overall_status
        tip = _e(f"{s.name}: {_fmt(s.counts.min()) if s.counts.size else '-'} to {_fmt(s.counts.max()) if s.counts.size else '-'} "
                 f"per epoch, mean {_fmt(s.counts.mean()) if s.counts.size else '-'}"
                 + (f", target {_fmt(s.target)}" if s.target is not None else ""))
        body.append(f'<g class="subset" data-status="{_e(status)}"><title>{tip}</title>')
        if s.counts.size:
            lo, hi, mean = scale(s.counts.min()), scale(s.counts.max()), scale(s.counts.mean())
            body.append(f'<rect x="{LABEL}" y="{y - 5:.1f}" width="{max(0.0, mean - LABEL):.1f}" height="10" fill="{FILL[status]}"/>')
            body.append(f'<line x1="{lo:.1f}" y1="{y:.1f}" x2="{hi:.1f}" y2="{y:.1f}" stroke="{MARK[status]}" stroke-width="2"/>')
            body.append(f'<circle cx="{mean:.1f}" cy="{y:.1f}" r="4" fill="{MARK[status]}"/>')
        if s.target is not None:
            t = scale(s.target)
            body.append(f'<line x1="{t:.1f}" y1="{y - 8:.1f}" x2="{t:.1f}" y2="{y + 8:.1f}" stroke="#111" stroke-width="2"/>')
        mean_text = _fmt(s.counts.mean()) if s.counts.size else "-"
        right = f"{mean_text} / {_fmt(s.target)}" if s.target is not None else mean_text
        body.append(f'<text x="{width - 8}" y="{y + 4:.1f}" text-anchor="end">{_e(right)}</text></g>')
    body.append(f'<text x="{width - 8}" y="{top - 6}" text-anchor="end" fill="#555">mean / target</text>')
    return _svg(width, height, body, f"dataset {d.index}: images per epoch of each subset against its target")


# Line colours of the share chart (matplotlib's default cycle, as the picture draws them)
LINE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def share_svg(d: DatasetReport, width: int = 820, height: int = 260) -> str:
    """A scheduled dataset: each subset's share of every epoch, trained (solid) against its
    target (dashed)."""
    left, right, top, bottom = 44, 160, 16, height - 30
    plot_w, plot_h = width - left - right, bottom - top
    epochs = d.epochs
    trained = np.array([s.counts for s in d.subsets], dtype=np.float64)
    targets = np.array([s.targets if s.targets is not None else np.zeros(len(epochs)) for s in d.subsets])
    trained_share = trained / np.maximum(trained.sum(axis=0), 1)
    target_share = targets / np.where(targets.sum(axis=0) > 0, targets.sum(axis=0), 1)
    span = max(epochs[-1] - epochs[0], 1)
    x = lambda e: left + plot_w * (e - epochs[0]) / span  # noqa: E731
    y = lambda v: bottom - plot_h * float(v)  # noqa: E731
    body = []
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        body.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + plot_w}" y2="{y(tick):.1f}" stroke="#e3e3e3"/>')
        body.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="#555">{tick:.0%}</text>')
    body.append(f'<text x="{left + plot_w}" y="{bottom + 20}" text-anchor="end" fill="#555">epoch {epochs[0]}-{epochs[-1]}</text>')
    for i, s in enumerate(d.subsets):
        if s.excluded:
            continue
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        for share, dash in ((target_share[i], ' stroke-dasharray="5 3"'), (trained_share[i], "")):
            points = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in zip(epochs, share))
            body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{1.2 if dash else 2}"{dash}/>')
        label_y = top + 14 * i + 10
        body.append(f'<line x1="{width - right + 10}" y1="{label_y - 4}" x2="{width - right + 28}" y2="{label_y - 4}" '
                    f'stroke="{colour}" stroke-width="2"/><text x="{width - right + 34}" y="{label_y}">{_e(short_name(s.name))}</text>')
    return _svg(width, height, body, f"dataset {d.index}: each subset's share of every epoch, trained against its target")


def epochs_svg(d: DatasetReport, max_columns: int = MAX_COLUMNS, cell: int = 40) -> str:
    """Counts per subset and epoch (or range of epochs: the mean per epoch in it, coloured by its worst epoch)."""
    bins = d.bins(max_columns)
    rows = d.subsets
    ranged = any(b.first != b.last for b in bins)
    header = 56 if ranged else 26
    width = LABEL + cell * max(1, len(bins)) + 12
    height = header + ROW * len(rows) + 8
    body = []
    for c, b in enumerate(bins):
        x = LABEL + cell * c + cell / 2
        if ranged:
            body.append(f'<text x="{x:.1f}" y="{header - 6}" transform="rotate(-40 {x:.1f} {header - 6})" '
                        f'text-anchor="start" fill="#555">{_e(b.label)}</text>')
        else:
            body.append(f'<text x="{x:.1f}" y="{header - 8}" text-anchor="middle" fill="#555">{_e(b.label)}</text>')
    for r, s in enumerate(rows):
        y0 = header + ROW * r
        body.append(_label(s, y0 + ROW / 2))
        for c, b in enumerate(bins):
            x0 = LABEL + cell * c
            values = s.counts[b.columns]
            status = s.bin_status(b)
            text = "–" if s.excluded else _fmt(values.mean())
            tip = f"{s.name}, epoch {b.label}: " + (
                "excluded" if s.excluded else
                (f"{_fmt(values.min())}-{_fmt(values.max())} per epoch, mean {_fmt(values.mean())}" if ranged else f"{_fmt(values[0])} images")
                + (f", target {_fmt(s.target)}" if s.target is not None else "") + ("" if status in (OK, UNKNOWN) else f" ({status})"))
            body.append(f'<g data-status="{_e(status)}"><title>{_e(tip)}</title>'
                        f'<rect x="{x0 + 1}" y="{y0 + 1}" width="{cell - 2}" height="{ROW - 2}" fill="{FILL[status]}"/>'
                        f'<text x="{x0 + cell / 2:.1f}" y="{y0 + ROW / 2 + 4:.1f}" text-anchor="middle">{_e(text)}</text></g>')
    return _svg(width, height, body, f"dataset {d.index}: images of each subset per epoch")


def rotation_svg(d: DatasetReport, width: int = 820) -> str:
    """Per subset: epochs until every image was trained (upper bar), the longest gap of any image
    between two trainings (lower bar) and the contract's bound on it (tick)."""
    rows = d.subsets
    plot_w = width - LABEL - 250
    top, height = 28, 28 + ROW * len(rows) + 24
    first = d.epochs[0] if d.epochs else 1
    span = len(d.epochs)
    maximum = float(max([span] + [s.longest_gap for s in rows] + [s.bound or 0 for s in rows if s.bound]) or 1) * 1.05
    body = _axis(LABEL, plot_w, top, top + ROW * len(rows), maximum, "epochs")
    scale = lambda v: plot_w * float(v) / maximum  # noqa: E731
    for r, s in enumerate(rows):
        y = top + ROW * r + ROW / 2
        body.append(_label(s, y))
        if s.excluded:
            body.append(f'<text x="{LABEL + 4}" y="{y + 4:.1f}" fill="#888">excluded</text>')
            continue
        done = s.all_seen_epoch is not None
        until = s.epochs_until_all_seen(first, span)
        bound = s.bound
        late = s.beyond_bound
        gap_colour = "#c0392b" if late else "#7f9cbf"
        body.append(f'<g class="subset"><title>{_e(s.name + ": " + _rotation_text(s))}</title>')
        body.append(f'<rect x="{LABEL}" y="{y - 7:.1f}" width="{scale(until):.1f}" height="6" '
                    f'fill="{"#3f7f4f" if done else "#ffffff"}" stroke="#3f7f4f" stroke-width="{0 if done else 1}"/>')
        body.append(f'<rect x="{LABEL}" y="{y + 1:.1f}" width="{scale(s.longest_gap):.1f}" height="6" fill="{gap_colour}"/>')
        if bound is not None:
            bx = LABEL + scale(bound)
            body.append(f'<line x1="{bx:.1f}" y1="{y - 1:.1f}" x2="{bx:.1f}" y2="{y + 9:.1f}" stroke="#111" stroke-width="2"/>')
        fill = ' fill="#c0392b"' if late else ""
        body.append(f'<text x="{width - 8}" y="{y + 4:.1f}" text-anchor="end"{fill}>{_e(_rotation_text(s))}</text></g>')
    return _svg(width, height, body, f"dataset {d.index}: epochs until every image was trained, and the longest gap")


def _rotation_text(s: SubsetReport) -> str:
    if s.unused:
        seen = f"{s.seen} of {s.images}, {s.unused} never"
    elif s.all_seen_epoch is not None:
        seen = f"all {s.images} by epoch {s.all_seen_epoch}"
    else:
        seen = f"{s.seen} of {s.images} so far"
    gap = f"gap {s.gap_text}"
    if s.bound is not None:
        gap += f" (bound {s.bound})"
    return f"{seen} · {gap}"


def legend_items() -> list[tuple[str, str]]:
    """(fill colour, meaning) of the balance classes, for a legend next to the charts."""
    return [(FILL[status], text) for status, text in LEGEND]
