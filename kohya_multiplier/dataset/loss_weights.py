"""``loss_weight``: a per-subset factor on each example's loss. Torch-free.

A float >= 0 at subset, ``[[datasets]]`` or ``[general]`` level (the most specific level that sets
it wins, as for every sd-scripts key), or EveryDream2's ``loss_scale.txt`` (one number) in an image
folder when no level sets it. 1 is sd-scripts' own behaviour; 0 keeps a subset in the epochs (its
images are still drawn, cached and counted) but lets it teach nothing.

sd-scripts already gives every example a loss weight (``example["loss_weights"]``:
``prior_loss_weight`` for regularization images, 1.0 otherwise) and multiplies the loss by it in
train_network.py (and the scripts built on it), train_db.py, flux_train.py, sd3_train.py,
lumina_train.py and anima_train.py; the adapter scales that value by the subset's ``loss_weight``.
Scripts that ignore ``loss_weights`` (sdxl_train.py, fine_tune.py) refuse a weight other than 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.multipliers import describe_value, read_number_file
from kohya_multiplier.dataset.schedules import Schedule, read_rate

KEY = "loss_weight"
LOSS_SCALE_TXT = "loss_scale.txt"
# Far beyond any useful weight; a larger one is almost surely a typo (it would blow up the loss).
MAX_LOSS_WEIGHT = 1000.0


@dataclass(frozen=True)
class LossWeight:
    value: float  # the weight (a schedule's value at epoch 1)
    origin: str  # "subset" / "dataset" / "general" / "loss_scale.txt" / "" (default 1)
    schedule: Schedule | None = None  # the weight over epochs, when scheduled

    @property
    def is_default(self) -> bool:
        return self.value == 1.0 and self.schedule is None

    def at(self, epoch: int) -> float:
        return self.schedule.at(epoch) if self.schedule is not None else self.value


DEFAULT = LossWeight(1.0, "")


def check_loss_weight(value: Any, *, file: str | None, where: str | None, key: str = KEY) -> float:
    """One weight (a schedule's point is checked point by point, by schedules.read_rate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"must be a number, not {describe_value(value)}", file=file, where=where, key=key)
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise UserError(f"must be a finite number >= 0, not {value:g}", file=file, where=where, key=key)
    if value > MAX_LOSS_WEIGHT:
        raise UserError(f"must be at most {MAX_LOSS_WEIGHT:g}, not {value:g}", file=file, where=where, key=key)
    return value


def resolve_loss_weight(
    levels: Sequence[tuple[str, Mapping[str, Any], str | None]], image_dir: str, *, shown_dir: str, file: str | None
) -> LossWeight:
    """``levels`` from most to least specific, as ``(origin, table, where)``; then loss_scale.txt."""
    for origin, table, where in levels:
        if table.get(KEY) is not None:
            weight = read_rate(table[KEY], check_loss_weight, file=file, where=where, key=KEY)
            if isinstance(weight, Schedule):
                return LossWeight(weight.at(1), origin, weight)
            return LossWeight(weight, origin)
    shown = os.path.join(shown_dir, LOSS_SCALE_TXT)
    from_file = read_number_file(os.path.join(image_dir, LOSS_SCALE_TXT), shown=shown)
    if from_file is None:
        return DEFAULT
    return LossWeight(check_loss_weight(from_file, file=shown, where=None, key="value"), LOSS_SCALE_TXT)


def describe(weight: LossWeight) -> str:
    """For tables: "2 (subset)", "0.5 (loss_scale.txt)", "1"."""
    text = weight.schedule.describe() if weight.schedule is not None else f"{weight.value:g}"
    return f"{text} ({weight.origin})" if weight.origin else text
