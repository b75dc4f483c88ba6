"""Balance statistics of planned epochs and the per-subset table that `plan` and training print."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from kohya_multiplier.dataset.types import DatasetSpec
from kohya_multiplier.errors import safe_text
from kohya_multiplier.dataset.loss_weights import describe as describe_loss_weight
from kohya_multiplier.dataset.multipliers import format_number, split_multiplier
from kohya_multiplier.planner.plan_input import PlanInput
from kohya_multiplier.dataset.regularization import STOCK_REGULARIZATION
from kohya_multiplier.planner import EpochPlan, PlanSummary
from kohya_multiplier.planner.dataset_plan import DatasetPlan


@dataclass
class DatasetStats:
    dataset: int
    batch_size: int
    subset_names: list[str]
    subset_images: np.ndarray  # (S,) images of each subset
    multipliers: list[float]  # (S,) effective multiplier
    excluded: list[bool]  # (S,) as the resolved dataset decided (SubsetSpec.excluded)
    origins: list[str]  # where each multiplier came from
    expected_per_epoch: np.ndarray  # (S,) multiplier x images (0 when excluded)
    counts: np.ndarray  # (S, E) images trained per subset per planned epoch
    coverage: np.ndarray  # (S, E) share of the subset's images seen at least once by each epoch
    epochs: list[int]
    summary: PlanSummary
    buckets: int
    stock: bool = False  # a dataset without multipliers: sd-scripts' own repeats
    unused: np.ndarray | None = None  # (S,) images sd-scripts never registers (stock regularization)
    labels: list[str] | None = None  # (S,) text of the multiplier column, when not the multiplier itself
    loss_weights: list[str] | None = None  # (S,) loss weight and its origin, when a subset has one other than 1
    targets: np.ndarray | None = None  # (S, E) a scheduled dataset's scaled target of each planned epoch
    scales: list[float] | None = None  # (E,) its common factor c(e) of each planned epoch
    turning: list[int] | None = None  # its epochs where some schedule or window turns


def collect_stats(
    dataset_plan: DatasetPlan,
    epochs: Iterable[int],
    on_plan: Callable[[EpochPlan], None] | None = None,
) -> DatasetStats:
    """Plan ``epochs`` and count, per subset, images per epoch and coverage; ``on_plan`` sees each plan."""
    dataset, plan_input = dataset_plan.dataset, dataset_plan.plan_input
    epochs, counts, coverage = dataset_plan.counts(epochs, on_plan)
    sizes = np.array([len(s.images) for s in dataset.subsets], dtype=np.int64)
    multipliers = [s.effective_multiplier for s in dataset.subsets]
    origins = [s.effective_origin for s in dataset.subsets]
    expected = np.array([max(m, 0.0) for m in multipliers]) * sizes
    unused = labels = targets = scales = None
    if plan_input.stock:
        expected, unused, labels, multipliers, origins = _stock_columns(dataset, plan_input, sizes, multipliers, origins)
    if dataset.scheduled:
        targets = np.stack([dataset.rates.at(e) * sizes for e in epochs], axis=1) if epochs else np.zeros((len(sizes), 0))
        scales = [dataset.rates.scale(e) for e in epochs]
        expected = targets.mean(axis=1) if epochs else expected
        labels = [_scheduled_label(s) for s in dataset.subsets]
    return DatasetStats(
        dataset=dataset.index,
        batch_size=dataset.batch_size,
        subset_names=[_subset_label(s) for s in dataset.subsets],
        subset_images=sizes,
        multipliers=multipliers,
        excluded=[s.excluded for s in dataset.subsets],
        origins=origins,
        expected_per_epoch=expected,
        counts=counts,
        coverage=coverage,
        epochs=epochs,
        summary=dataset_plan.summary,
        buckets=len(plan_input.bucket_resolutions),
        stock=plan_input.stock,
        unused=unused,
        labels=labels,
        loss_weights=[describe_loss_weight(s.loss_weight) for s in dataset.subsets] if dataset.uses_loss_weight else None,
        targets=targets,
        scales=scales,
        turning=dataset.rates.turning_epochs() if dataset.scheduled else None,
    )


def _scheduled_label(subset) -> str:
    """The multiplier column of a scheduled dataset's subset: what it asks for (scaled every epoch)."""
    if subset.excluded:
        return f"{_multiplier_text(subset.effective_multiplier)}"
    if subset.effective_origin.startswith("auto"):
        text = "auto (regularization)"
    elif subset.multiplier_schedule is not None or subset.images_per_epoch is not None:
        text = f"scheduled ({_origin_text(subset.effective_origin)})"
    else:
        text = f"{_multiplier_text(subset.multiplier if subset.multiplier is not None else subset.num_repeats)} ({_origin_text(subset.effective_origin)})"
    if subset.start_epoch > 1 or subset.end_epoch is not None:
        text += f", epochs {subset.start_epoch}-{subset.end_epoch if subset.end_epoch is not None else ''}"
    return text


def _stock_columns(dataset: DatasetSpec, plan_input: PlanInput, sizes, multipliers, origins):
    """Expected images, never-registered images and multiplier text of a stock dataset's subsets.

    Regularization subsets show the range of their images' repeats (sd-scripts' rule) and, as
    their multiplier, the mean repeats per image (what a multiplier would have to be).
    """
    multipliers, origins = list(multipliers), list(origins)
    n_subsets = len(dataset.subsets)
    repeats = plan_input.image_repeats
    expected = np.bincount(plan_input.subset_of_image, weights=repeats, minlength=n_subsets).astype(np.float64)
    registered = np.bincount(plan_input.subset_of_image, minlength=n_subsets)
    unused = np.where([not s.excluded for s in dataset.subsets], sizes - registered, 0)
    labels: list[str] = []
    for s, subset in enumerate(dataset.subsets):
        if not subset.is_reg or subset.excluded:
            labels.append(f"{_multiplier_text(multipliers[s])} ({_origin_text(origins[s])})")
            continue
        mine = repeats[plan_input.subset_of_image == s]
        low = 0 if unused[s] else (int(mine.min()) if mine.size else 0)
        high = int(mine.max()) if mine.size else 0
        shown = str(low) if low == high else f"{low}-{high}"
        labels.append(f"{shown} ({STOCK_REGULARIZATION})")
        multipliers[s] = float(expected[s] / sizes[s]) if sizes[s] else 0.0
        origins[s] = STOCK_REGULARIZATION
    return expected, unused, labels, multipliers, origins


def _multiplier_text(multiplier: float) -> str:
    text = format_number(multiplier)
    return text if len(text) <= 8 else f"{multiplier:.4g}"


def _origin_text(origin: str) -> str:
    """"multiplier (subset)" -> "subset"; other origins ("num_repeats", "auto (regularization)") as they are."""
    if origin.startswith("multiplier (") and origin.endswith(")"):
        return origin[len("multiplier (") : -1]
    return origin


def _subset_label(subset) -> str:
    name = safe_text(subset.name)  # a newline or an undecodable byte in a folder name, escaped
    return f"{name} (reg)" if subset.is_reg else name


def stock_order_note(datasets: list[DatasetSpec]) -> str | None:
    """Said once when some dataset has no multiplier: sd-scripts then trains that dataset itself
    (also next to datasets with multipliers), in an order no plan can know."""
    stock = [d.index for d in datasets if not d.uses_multiplier]
    if not stock:
        return None
    if len(stock) == len(datasets):
        head = "no multiplier anywhere: sd-scripts trains this config itself."
    else:
        names = ", ".join(str(i) for i in stock)
        head = (
            f"dataset{'s' * (len(stock) > 1)} {names} {'have' if len(stock) > 1 else 'has'} no multiplier: sd-scripts trains "
            f"{'them' if len(stock) > 1 else 'it'} itself (the others follow the plan batch for batch)."
        )
    return (
        f"{head} Each epoch it trains exactly the images per bucket planned here, in batches of the planned sizes, but in an "
        "order no plan can know (it shuffles with Python's global random, which its logging also draws from), and a "
        "batch fetched first in an epoch (one per DataLoader worker) comes from the previous epoch's shuffle; the "
        "schedule's batch order is the planner's own"
    )


def epoch_shape_line(stats: DatasetStats) -> str:
    summary = stats.summary
    if summary.scheduled:
        return (
            f"dataset {stats.dataset}: batch size {stats.batch_size}, {stats.buckets} bucket{'s' * (stats.buckets != 1)}, "
            f"{summary.epoch_length} batches per epoch (scheduled: {format_number(round(summary.images_per_epoch, 2))} images "
            f"every epoch, the mix set by the schedules, constant from epoch {summary.horizon})"
        )
    if stats.stock:
        return (
            f"dataset {stats.dataset}: batch size {stats.batch_size}, {stats.buckets} bucket{'s' * (stats.buckets != 1)}, "
            f"{summary.epoch_length} batches per epoch (no multiplier: sd-scripts' own repeats)"
        )
    line = (
        f"dataset {stats.dataset}: batch size {stats.batch_size}, {stats.buckets} bucket{'s' * (stats.buckets != 1)}, "
        f"{summary.epoch_length} batches per epoch ({summary.base_batches} for whole repeats + {summary.extra_batches} "
        f"for fractional parts)"
    )
    if summary.rounded_up:
        exact = float(summary.fractional_batches)
        line += f"; fractional demand {exact:.2f} batches, rounded up to {summary.extra_batches}"
    return line


def format_table(stats: DatasetStats) -> str:
    header = ["subset", "images", "multiplier", "expected/epoch", "min", "mean", "max", "all seen by epoch"]
    rows = [_subset_row(stats, subset, name) for subset, name in enumerate(stats.subset_names)]
    total = stats.counts.sum(axis=0)
    rows.append(
        [
            "total",
            str(int(stats.subset_images.sum())),
            "",
            f"{stats.expected_per_epoch.sum():.2f}",
            str(int(total.min())) if total.size else "-",
            f"{total.mean():.2f}" if total.size else "-",
            str(int(total.max())) if total.size else "-",
            "",
        ]
    )
    if stats.loss_weights is not None:  # only where some subset has a loss weight other than 1
        header.append("loss weight")
        for row, weight in zip(rows, stats.loss_weights + [""]):
            row.append(weight)
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header))]
    left = {0, 2, 8}
    lines = [epoch_shape_line(stats)]
    lines.append(
        f"images per epoch over epochs {stats.epochs[0]}..{stats.epochs[-1]}:" if stats.epochs else "no epochs planned"
    )
    for r, row in enumerate([header] + rows):
        cells = [cell.ljust(widths[c]) if c in left else cell.rjust(widths[c]) for c, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if r == 0 or r == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
    if stats.targets is not None and stats.epochs:
        lines.extend(format_schedule_table(stats))
    return "\n".join(lines)


MAX_SCHEDULE_COLUMNS = 8


def schedule_columns(stats: DatasetStats) -> list[int]:
    """The planned epochs the schedule table shows: the first, the last and the turning epochs
    between them (at most MAX_SCHEDULE_COLUMNS, evenly chosen)."""
    first, last = stats.epochs[0], stats.epochs[-1]
    shown = sorted({first, last} | {e for e in (stats.turning or []) if first <= e <= last})
    if len(shown) > MAX_SCHEDULE_COLUMNS:
        keep = np.linspace(0, len(shown) - 1, MAX_SCHEDULE_COLUMNS).round().astype(int)
        shown = [shown[i] for i in sorted(set(keep))]
    return shown


def format_schedule_table(stats: DatasetStats) -> list[str]:
    """Target (scaled) / trained images of each subset at the first, last and turning epochs."""
    columns = schedule_columns(stats)
    position = {epoch: i for i, epoch in enumerate(stats.epochs)}
    rows = [["epoch"] + [str(e) for e in columns], ["scale"] + [f"{stats.scales[position[e]]:.3g}" for e in columns]]
    for subset, name in enumerate(stats.subset_names):
        if stats.excluded[subset]:
            continue
        rows.append([name] + [f"{stats.targets[subset, position[e]]:.1f} / {int(stats.counts[subset, position[e]])}" for e in columns])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["schedule: target images (scaled to the constant total) / images trained, at the first, last and turning epochs:"]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[c]) if c == 0 else cell.rjust(widths[c]) for c, cell in enumerate(row)).rstrip())
    return lines


def _subset_row(stats: DatasetStats, subset: int, name: str) -> list[str]:
    """One subset's row of the table: counts per epoch and the epoch all its images were seen by."""
    multiplier = stats.multipliers[subset]
    unused = int(stats.unused[subset]) if stats.unused is not None else 0
    if stats.excluded[subset]:
        return [name, str(stats.subset_images[subset]), f"{_multiplier_text(multiplier)} (excluded)", "0", "0", "0", "0", "-"]
    counts = stats.counts[subset]
    full = np.flatnonzero(stats.coverage[subset] >= 1.0 - 1e-12)
    if unused:
        all_seen = f"never ({unused} unused)"
    elif full.size:
        all_seen = str(stats.epochs[full[0]])
    else:
        first = stats.epochs[0] if stats.epochs else 1
        fraction = split_multiplier(multiplier)[1]
        need = math.ceil(1 / fraction) if fraction > 0 else 1
        all_seen = f"> {stats.epochs[-1]} (~{first + need - 1})" if stats.epochs else "-"
    return [
        name,
        str(stats.subset_images[subset]),
        stats.labels[subset] if stats.labels is not None else f"{_multiplier_text(multiplier)} ({_origin_text(stats.origins[subset])})",
        f"{stats.expected_per_epoch[subset]:.2f}",
        str(int(counts.min())) if counts.size else "-",
        f"{counts.mean():.2f}" if counts.size else "-",
        str(int(counts.max())) if counts.size else "-",
        all_seen,
    ]
