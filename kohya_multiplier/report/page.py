"""The report as one self-contained HTML page: inline styles and inline SVG (``svg_chart``), no
script, no font, nothing fetched; it can be mailed, attached to an issue or opened offline.

Input: a ``report_data.Report``. The page never overflows the window sideways: wide charts and
tables scroll inside their own boxes, long names wrap in the table.
"""

from __future__ import annotations

import html

from kohya_multiplier import __version__

from kohya_multiplier.report import svg_chart
from kohya_multiplier.errors import safe_text
from kohya_multiplier.report.data import DatasetReport, Report, balance_status

_STYLE = """
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; margin: 0 auto;
       max-width: 1400px; padding: 1rem 1.2rem 3rem; color: #1a1a1a; background: #fff; }
li, p, dd { overflow-wrap: anywhere; }
h1 { font-size: 1.45rem; margin: .3rem 0 .1rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; margin: 1.3rem 0 .3rem; }
p.verdict { background: #f5f7fa; border-left: 4px solid #4f7cac; padding: .4rem .7rem; margin: .4rem 0; }
p.meta, p.hint { color: #555; margin: .2rem 0 .6rem; font-size: .9rem; }
dl.run { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0; }
dl.run dt { color: #555; } dl.run dd { margin: 0; font-weight: 600; }
ul.notes li, ul.warnings li { margin: .2rem 0; } ul.warnings li { color: #8a1c10; }
.scroll { overflow-x: auto; max-width: 100%; }
svg.chart { display: block; }
svg.chart text.name { fill: #1a1a1a; }
.legend { display: flex; flex-wrap: wrap; gap: .3rem 1.1rem; font-size: .85rem; color: #333; margin: .2rem 0 .4rem; }
.legend span.key { display: inline-block; width: 1.6em; height: .9em; vertical-align: -.1em; margin-right: .35em;
                   border: 1px solid #bbb; }
.legend span.tick { display: inline-block; width: 2px; height: 1em; background: #111; margin: 0 .5em -.15em .3em; }
table { border-collapse: collapse; margin: .4rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: right; vertical-align: top; white-space: nowrap; }
th { background: #f2f2f2; position: sticky; top: 0; } td.name, th.name, td.text { text-align: left; }
td.name, td.text { white-space: normal; overflow-wrap: break-word; } td.name { min-width: 8em; max-width: 22em; }
th { white-space: normal; }
tr.off td { color: #777; } td.far { background: #f0948a; } td.off { background: #f7d99a; }
details pre { background: #f7f7f7; border: 1px solid #e2e2e2; padding: .8rem; overflow-x: auto; font-size: .8rem; }
"""


def _e(text) -> str:
    return html.escape(safe_text(text), quote=True)  # an undecodable byte or a newline in a name, escaped


def _num(value: float) -> str:
    return svg_chart._fmt(value)


def _legend_balance() -> str:
    keys = "".join(f'<span><span class=key style="background:{fill}"></span>{_e(text)}</span>'
                   for fill, text in svg_chart.legend_items())
    return f'<div class=legend><span><span class=tick></span>target</span>{keys}</div>\n'


def _run_section(report: Report) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in report.run_facts())
    parts = [f"<h2>The run</h2>\n<dl class=run>{rows}</dl>\n"]
    if report.run_lines:  # sd-scripts' own figures, from the dry run's arithmetic
        head, *lines = report.run_lines
        pairs = [line.strip().split(": ", 1) for line in lines]
        items = "".join(f"<dt>{_e(p[0])}</dt><dd>{_e(p[1])}</dd>" if len(p) == 2 else f"<dt></dt><dd>{_e(p[0])}</dd>"
                        for p in pairs)
        parts.append(f"<h3>{_e(head.rstrip(':'))}</h3>\n<dl class=run>{items}</dl>\n")
    if report.warnings:
        parts.append("<h3>Warnings</h3>\n<ul class=warnings>" + "".join(f"<li>{_e(w)}</li>" for w in report.warnings) + "</ul>\n")
    notes = list(report.notes) + [d.shape_line for d in report.datasets if d.shape_line]
    if notes:
        parts.append("<h3>Notes</h3>\n<ul class=notes>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>\n")
    return "".join(parts)


def _table(d: DatasetReport) -> str:
    loss = d.has_loss_weight
    head = ["subset", "images", "multiplier (origin)", "target / epoch", "min", "mean", "max", "images trained",
            "all trained by", "longest gap (bound)"] + (["loss weight"] if loss else [])
    rows = []
    for s in d.subsets:
        counts = s.counts

        def cell(value):
            if s.excluded or s.target is None or not counts.size or s.targets is not None:
                return f"<td>{_num(value)}</td>"  # a schedule's target changes by epoch: the charts judge each epoch
            status = balance_status(value, s.target)
            klass = " class=far" if status.startswith("far") else (" class=off" if status != "ok" else "")
            return f"<td{klass}>{_num(value)}</td>"

        target = "excluded" if s.excluded else ("unknown" if s.target is None else _num(s.target))
        if s.targets is not None and not s.excluded:
            target += " (mean of the schedule)"
        stats = [cell(counts.min()), f"<td>{_num(counts.mean())}</td>", cell(counts.max())] if counts.size else ["<td>-</td>"] * 3
        gap = s.gap_text + (f" ({s.bound})" if s.bound is not None and not s.excluded else "")
        name = s.name + (" (reg)" if s.is_reg and not s.name.endswith("(reg)") else "")
        cells = [f"<td class=name>{_e(name)}</td>", f"<td>{s.images}</td>", f"<td class=text>{_e(s.multiplier_text)}</td>",
                 f"<td>{_e(target)}</td>", *stats, f"<td>{_e(s.seen_text)}</td>", f"<td>{_e(s.all_seen_text)}</td>",
                 f"<td>{_e(gap)}</td>"]
        if loss:
            cells.append(f"<td class=text>{_e(s.loss_weight if s.loss_weight is not None else '1')}</td>")
        rows.append(f"<tr{' class=off' if s.excluded else ''}>" + "".join(cells) + "</tr>")
    header = "".join(f"<th{' class=name' if i == 0 else ''}>{_e(h)}</th>" for i, h in enumerate(head))
    return (f"<div class=scroll><table class=subsets><thead><tr>{header}</tr></thead><tbody>\n"
            + "\n".join(rows) + "\n</tbody></table></div>\n")


def _dataset_section(d: DatasetReport) -> str:
    span = f"epochs {d.epochs[0]}-{d.epochs[-1]}" if len(d.epochs) > 1 else (f"epoch {d.epochs[0]}" if d.epochs else "no epochs")
    bins = d.bins()
    ranged = any(b.first != b.last for b in bins)
    per_range = f" in ranges of {bins[0].last - bins[0].first + 1} epochs (the mean per epoch; colour: the range's worst epoch)" if ranged else ""
    length = d.epoch_length
    intro = f"{len(d.subsets)} subsets, {span}" + (f", {length} batches per epoch" if length is not None else "")
    return "".join([
        f"<section class=dataset id=dataset-{d.index}>\n<h2>Dataset {d.index}</h2>\n<p class=meta>{_e(intro)}</p>\n",
        f"<p class=verdict><b>Balance:</b> {_e(d.balance_verdict())}.<br><b>Rotation:</b> {_e(d.rotation_verdict())}.</p>\n",
        "<h3>Balance: images per epoch against the target</h3>\n",
        "<p class=hint>Bar: the mean over the epochs; line: lowest to highest epoch; black tick: the target. "
        "Colour only where an epoch is off by more than the contract allows.</p>\n" if d.has_targets else
        "<p class=hint>No targets: the schedule was read without its config (give --config).</p>\n",
        _legend_balance(),
        f"<div class=scroll>{svg_chart.balance_svg(d)}</div>\n",
        f"<h3>Epoch by epoch</h3>\n<p class=hint>Images trained per epoch{_e(per_range)}.</p>\n",
        f"<div class=scroll>{svg_chart.epochs_svg(d)}</div>\n",
        "<h3>Rotation: when has every image been trained?</h3>\n",
        "<p class=hint>Green bar: epochs until every image of the subset was trained (hollow: not yet). "
        "Blue bar: the longest gap of any image between two of its trainings (≥: still waiting); "
        "black tick: the contract's bound 2 × ceil(1/f) + 2 (for a schedule: two periods of the subset's rate, plus 2).</p>\n",
        f"<div class=scroll>{svg_chart.rotation_svg(d)}</div>\n",
        _share_section(d),
        "<h3>Subsets</h3>\n", _table(d), "</section>\n",
    ])


def _share_section(d: DatasetReport) -> str:
    if not d.scheduled:
        return ""
    return ("<h3>Schedule: each subset's share of every epoch</h3>\n<p class=hint>Solid: trained; dashed: the "
            "schedule's target (the lines lie on each other where the plan keeps the schedule).</p>\n"
            f"<div class=scroll>{svg_chart.share_svg(d)}</div>\n")


def render_page(report: Report) -> str:
    """The page as a string (see :func:`write_page`)."""
    meta = f"Made by kohya-multiplier {__version__}."
    parts = [
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        "<meta name=viewport content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_e(report.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n",
        f"<h1>{_e(report.title)}</h1>\n<p class=meta>{_e(meta)}</p>\n",
        _run_section(report),
    ]
    parts += [_dataset_section(d) for d in report.datasets]
    if report.tables_text:
        parts.append("<details><summary>The text output's tables</summary>\n<pre>"
                     + _e("\n\n".join(report.tables_text)) + "</pre></details>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)
