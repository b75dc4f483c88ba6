"""One self-contained HTML page with the plan's tables and the balance picture.

No external resources: styles are inline, the picture is a ``data:`` URI (base64 PNG), so the file
can be mailed, attached to an issue or opened offline. Statistics objects are shaped like the
lead's ``report.DatasetStats`` (see ``kohya_multiplier.plot``).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kohya_multiplier import __version__
from kohya_multiplier.errors import UserError

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto;
       max-width: 1400px; padding: 0 1rem; color: #1a1a1a; background: #fff; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } h2 { font-size: 1.1rem; margin-top: 1.8rem; }
p.meta { color: #555; margin-top: 0; font-size: .9rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; }
tr.off td { color: #777; } td.low { background: #dbe9f6; } td.high { background: #fbe0d6; }
img.plot { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { background: #f7f7f7; border: 1px solid #e2e2e2; padding: .8rem; overflow-x: auto; font-size: .8rem; }
"""


def _number(value: float) -> str:
    value = float(value) + 0.0
    if abs(value - round(value)) < 1e-9:
        return f"{value:.0f}"
    return f"{value:.2f}"


def _first_full(coverage_row: np.ndarray, epochs: list[int]) -> str:
    full = np.nonzero(coverage_row >= 1.0 - 1e-9)[0]
    return str(epochs[int(full[0])]) if full.size else "not yet"


def _dataset_table(stats: Any, position: int) -> str:
    names = [str(n) for n in stats.subset_names]
    expected = np.asarray(stats.expected_per_epoch, dtype=float).reshape(-1)
    counts = np.asarray(stats.counts, dtype=float)
    coverage = np.asarray(stats.coverage, dtype=float)
    epochs = [int(e) for e in stats.epochs]
    dataset = getattr(stats, "dataset", getattr(stats, "index", position))
    rows = []
    for i, name in enumerate(names):
        row = counts[i] if counts.size else np.zeros(0)
        target = expected[i] if i < expected.size else 0.0
        if row.size:
            low, mean, high = row.min(), row.mean(), row.max()
        else:
            low = mean = high = 0.0
        def cell(value: float) -> str:
            klass = ""
            if target > 0 and value < target - 0.5 - 0.1 * target:
                klass = " class=low"
            elif target > 0 and value > target + 0.5 + 0.1 * target:
                klass = " class=high"
            return f"<td{klass}>{_number(value)}</td>"
        seen = f"{coverage[i, -1] * 100:.0f} %" if coverage.size else "-"
        rows.append(
            f"<tr{' class=off' if target <= 0 else ''}><td class=name>{html.escape(name)}</td>"
            f"<td>{_number(target) if target > 0 else 'excluded'}</td>{cell(low)}<td>{_number(mean)}</td>{cell(high)}"
            f"<td>{seen}</td><td>{_first_full(coverage[i], epochs) if coverage.size else '-'}</td></tr>")
    span = f"epochs {epochs[0]}-{epochs[-1]}" if epochs else "no epochs"
    return (
        f"<h2>Dataset {html.escape(str(dataset))} <small>({span})</small></h2>\n"
        "<table><thead><tr><th class=name>subset</th><th>target / epoch</th><th>min</th><th>mean</th>"
        "<th>max</th><th>seen at end</th><th>all seen by epoch</th></tr></thead><tbody>\n"
        + "\n".join(rows) + "\n</tbody></table>\n")


def render_page(stats_list: Sequence[Any], tables_text: str | Sequence[str] | None,
                png: bytes | str | os.PathLike | None, *, title: str = "kohya-multiplier plan") -> str:
    """The page as a string (see ``write_page``)."""
    if isinstance(png, (str, os.PathLike)):
        try:
            png = Path(png).read_bytes()
        except OSError as error:
            raise UserError(f"cannot read the picture: {error.strerror or error}", file=str(png)) from None
    parts = [
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        "<meta name=viewport content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n",
        f"<h1>{html.escape(title)}</h1>\n<p class=meta>Made by kohya-multiplier {html.escape(__version__)}. "
        "Images per subset per planned epoch against the target, and the share of each subset's images "
        "seen so far.</p>\n",
    ]
    if png:
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f"<img class=plot alt=\"balance picture: images per subset per epoch and share seen\" "
                     f"src=\"data:image/png;base64,{encoded}\">\n")
    for position, stats in enumerate(stats_list):
        parts.append(_dataset_table(stats, position))
    if tables_text:
        text = tables_text if isinstance(tables_text, str) else "\n\n".join(tables_text)
        parts.append(f"<h2>Plan tables</h2>\n<pre>{html.escape(text)}</pre>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def write_page(stats_list: Sequence[Any], tables_text: str | Sequence[str] | None,
               png: bytes | str | os.PathLike | None, path: str | os.PathLike, *,
               title: str = "kohya-multiplier plan") -> str:
    """Write the self-contained page to ``path`` and return its text.

    ``tables_text``: the plan's text tables (one string, or one per dataset), shown verbatim;
    ``png``: the picture's bytes, or a path to a PNG, or None for a page without picture."""
    page = render_page(stats_list, tables_text, png, title=title)
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write: {error.strerror or error}", file=str(path), key="--html") from None
    return page
