"""Schedules: a rate that changes with the epoch. Torch-free.

Wherever a rate is given (``multiplier``, ``loss_weight``, ``images_per_epoch``) a schedule may
stand instead of the number: a table of ``epoch = value`` points,

    multiplier = { 1 = 0.5, 20 = 0.1 }               # linear between the points, constant outside
    multiplier = { 1 = 0.5, 10 = 0.2, step = true }  # each value holds until the next point

Epochs count from 1 as sd-scripts prints them. A schedule is constant before its first point and
after its last. (A table, not a list of pairs: sd-scripts reads the dataset config with a TOML
reader that refuses arrays mixing integers and floats, such as ``[1, 0.5]``.) ``start_epoch`` /
``end_epoch`` (inclusive) make a subset train only inside that window. What a scheduled dataset
trains each epoch, and how its epoch length stays constant, is :mod:`kohya_multiplier.dataset.rates`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.multipliers import describe_value, format_number

STEP = "step"
# The last epoch a schedule point may name: no training run reaches a later one.
MAX_SCHEDULE_EPOCH = 10_000
MAX_POINTS = 1000


@dataclass(frozen=True)
class Schedule:
    """Points ``(epoch, value)``, epochs strictly increasing; ``step``: hold each value until the
    next point instead of interpolating."""

    epochs: tuple[int, ...]
    values: tuple[float, ...]
    step: bool = False

    def at(self, epoch: int) -> float:
        epochs, values = self.epochs, self.values
        if epoch <= epochs[0]:
            return values[0]
        if epoch >= epochs[-1]:
            return values[-1]
        right = bisect.bisect_right(epochs, epoch)  # epochs[right - 1] <= epoch < epochs[right]
        left = right - 1
        if self.step or epochs[left] == epoch:
            return values[left]
        share = (epoch - epochs[left]) / (epochs[right] - epochs[left])
        return values[left] + (values[right] - values[left]) * share

    @property
    def last_epoch(self) -> int:
        """From this epoch on the value no longer changes."""
        return self.epochs[-1]

    @property
    def peak(self) -> float:
        return max(self.values)

    def scaled(self, factor: float) -> "Schedule":
        return Schedule(self.epochs, tuple(v * factor for v in self.values), self.step)

    def as_given(self) -> dict:
        """The TOML table that writes this schedule (for model metadata and ``balance``)."""
        points: dict = {str(e): _plain(v) for e, v in zip(self.epochs, self.values)}
        return {**points, STEP: True} if self.step else points

    def describe(self) -> str:
        """For tables: "0.5 (epoch 1) → 0.1 (epoch 20)", "step: 1 (epoch 1) → 0 (epoch 10)"."""
        text = " → ".join(f"{format_number(round(v, 6))} (epoch {e})" for e, v in zip(self.epochs, self.values))
        return f"step: {text}" if self.step else text


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() and abs(value) < 1e15 else value


def is_schedule(value: Any) -> bool:
    """Whether a TOML value is written as a schedule (a table; a list is refused with the spelling)."""
    return isinstance(value, (list, tuple, Mapping))


def read_schedule(
    value: Any, check_value: Callable[..., float], *, file: str | None, where: str | None, key: str
) -> Schedule:
    """The schedule a TOML value writes, or a one-line UserError naming the point that is wrong.
    ``check_value(value, file=, where=, key=)`` checks one value as the plain key would."""
    if not isinstance(value, Mapping):
        raise UserError(
            f"a schedule is a table of epoch = value points, e.g. {{ 1 = 0.5, 20 = 0.1 }} (sd-scripts' TOML reader refuses "
            f"lists that mix integers and floats); not {describe_value(value)}",
            file=file, where=where, key=key,
        )
    step = value.get(STEP, False)
    if not isinstance(step, bool):
        raise UserError(f"must be true or false, not {describe_value(step)}", file=file, where=where, key=f"{key} {STEP}")
    points: dict[int, float] = {}
    for name, point_value in value.items():
        if name == STEP:
            continue
        epoch = int(name) if isinstance(name, str) and name.isascii() and name.isdigit() else None
        if epoch is None or not 1 <= epoch <= MAX_SCHEDULE_EPOCH:
            raise UserError(
                f"a schedule's keys are epochs from 1 to {MAX_SCHEDULE_EPOCH:,} (and {STEP} = true); not {name!r}",
                file=file, where=where, key=key,
            )
        if epoch in points:
            raise UserError(f"epoch {epoch} is given twice", file=file, where=where, key=key)
        points[epoch] = check_value(point_value, file=file, where=where, key=f"{key} epoch {epoch}")
    if not points:
        raise UserError("a schedule needs at least one epoch = value point, e.g. { 1 = 0.5, 20 = 0.1 }",
                        file=file, where=where, key=key)
    if len(points) > MAX_POINTS:
        raise UserError(f"a schedule has at most {MAX_POINTS} points, not {len(points)}", file=file, where=where, key=key)
    epochs = sorted(points)
    return Schedule(tuple(epochs), tuple(points[e] for e in epochs), step)


def check_epoch_window(start: Any, end: Any, *, file: str | None, where: str | None, start_where: str | None = None,
                       end_where: str | None = None) -> tuple[int, int | None]:
    """``start_epoch`` / ``end_epoch`` (either may be None): whole epochs, start <= end."""
    checked = []
    for name, value, at in (("start_epoch", start, start_where or where), ("end_epoch", end, end_where or where)):
        if value is None:
            checked.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SCHEDULE_EPOCH:
            raise UserError(
                f"must be a whole epoch from 1 to {MAX_SCHEDULE_EPOCH:,}, not {describe_value(value)}", file=file, where=at, key=name
            )
        checked.append(value)
    first, last = checked
    if first is not None and last is not None and last < first:
        raise UserError(f"{last} is before start_epoch {first}: the subset would never train", file=file,
                        where=end_where or where, key="end_epoch")
    return (first if first is not None else 1), last


__all__ = ["Schedule", "is_schedule", "read_schedule", "read_rate", "value_at", "check_epoch_window", "MAX_SCHEDULE_EPOCH"]


def read_rate(value: Any, check_value: Callable[..., float], *, file: str | None, where: str | None, key: str) -> "float | Schedule":
    """A plain number (checked as ``check_value`` does) or a schedule of such numbers."""
    if is_schedule(value):
        return read_schedule(value, check_value, file=file, where=where, key=key)
    return check_value(value, file=file, where=where, key=key)


def value_at(rate: "float | Schedule", epoch: int) -> float:
    return rate.at(epoch) if isinstance(rate, Schedule) else float(rate)


def describe_rate(rate: "float | Schedule | None") -> str:
    """A rate for messages and tables: "0.25", or the schedule's points."""
    if isinstance(rate, Schedule):
        return rate.describe()
    return format_number(rate) if rate is not None else ""
