"""One warning per subset whose planned images per epoch are far from its request.

The epoch length is constant and a whole number of batches, so the fractional demand of a dataset
is rounded up to whole extra batches (``PlanSummary.rounded_up``), and the room a rounding leaves
is used. When that gives a subset more than twice, or less than half, of its requested images per
epoch (and by more than one image over the planned epochs, so rotation noise of tiny requests over
one or two epochs does not count), the user is told once, before the table: the subset, its
requested and its actual images per epoch, and why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kohya_multiplier.errors import warn_once

if TYPE_CHECKING:
    from kohya_multiplier.report.stats import DatasetStats

HIGH, LOW = 2.0, 0.5


def distortion_messages(stats: "DatasetStats") -> list[str]:
    if stats.stock or not stats.epochs:
        return []
    summary = stats.summary
    epochs = len(stats.epochs)
    messages = []
    for s, name in enumerate(stats.subset_names):
        expected = float(stats.expected_per_epoch[s])
        if expected <= 0:
            continue
        actual = float(stats.counts[s].mean())
        if LOW * expected <= actual <= HIGH * expected or abs(actual - expected) * epochs <= 1:
            continue
        ratio = actual / expected
        why = (
            f"an epoch holds whole batches: its {stats.summary.epoch_length} batches hold at least one image each, more than "
            "the scheduled images fill in some epochs, so picks are taken early"
            if summary.scheduled and summary.rounded_up
            else "an epoch holds whole batches, shared by the subsets of each bucket"
            if summary.scheduled
            else f"an epoch holds whole batches: the fractional demand of {float(summary.fractional_batches):.3g} batches is "
            f"rounded up to {summary.extra_batches} extra batch{'es' * (summary.extra_batches != 1)}, and that room is filled"
            if summary.rounded_up
            else "an epoch holds whole batches, shared by the subsets of each bucket"
        )
        messages.append(
            f"dataset {stats.dataset}: subset {name} asks for {expected:.3g} images per epoch but gets {actual:.3g} "
            f"({ratio:.3g}x) over epochs {stats.epochs[0]}..{stats.epochs[-1]}, because {why}"
        )
    return messages


def warn_distortions(stats: "DatasetStats") -> None:
    for message in distortion_messages(stats):
        warn_once(message)
