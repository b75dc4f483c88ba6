"""Schedules: a rate that changes with the epoch. Torch-free.

Wherever a rate is given (``multiplier``, ``loss_weight``, ``images_per_epoch``) a schedule may
stand instead of the number: a list of ``[epoch, value]`` points,

    multiplier = [[1, 0.5], [20, 0.1]]              # linear between the points, constant outside
    multiplier = { step = [[1, 0.5], [10, 0.2]] }   # each value holds until the next point
    multiplier = { linear = [[1, 0.5], [20, 0.1]] } # the same as the plain list

Epochs count from 1 as sd-scripts prints them; they are whole numbers and increase strictly. A
schedule is constant before its first point and after its last. ``start_epoch`` / ``end_epoch``
(inclusive) make a subset train only inside that window. What a scheduled dataset trains each
epoch, and how its epoch length stays constant, is :mod:`kohya_multiplier.dataset.rates`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.multipliers import describe_value, format_number

LINEAR = "linear"
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

    def as_given(self) -> Any:
        """The TOML value that writes this schedule (for model metadata and ``balance``)."""
        points = [[e, _plain(v)] for e, v in zip(self.epochs, self.values)]
        return {STEP: points} if self.step else points

    def describe(self) -> str:
        """For tables: "0.5 (epoch 1) → 0.1 (epoch 20)", "step: 1 (epoch 1) → 0 (epoch 10)"."""
        text = " → ".join(f"{format_number(round(v, 6))} (epoch {e})" for e, v in zip(self.epochs, self.values))
        return f"step: {text}" if self.step else text


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() and abs(value) < 1e15 else value


def is_schedule(value: Any) -> bool:
    """Whether a TOML value is written as a schedule (a list of points, or a table of one)."""
    return isinstance(value, (list, tuple, Mapping))


def read_schedule(
    value: Any, check_value: Callable[..., float], *, file: str | None, where: str | None, key: str
) -> Schedule:
    """The schedule a TOML value writes, or a one-line UserError naming the point that is wrong.
    ``check_value(value, file=, where=, key=)`` checks one value as the plain key would."""
    step = False
    points = value
    if isinstance(value, Mapping):
        kinds = list(value)
        if len(kinds) != 1 or kinds[0] not in (LINEAR, STEP):
            raise UserError(
                f"a schedule table holds one key, {LINEAR!r} or {STEP!r}, with a list of [epoch, value] points; "
                f"found {', '.join(map(repr, kinds)) or 'no key'}",
                file=file, where=where, key=key,
            )
        step = kinds[0] == STEP
        points = value[kinds[0]]
    if not isinstance(points, (list, tuple)) or not points:
        raise UserError(
            f"a schedule is a non-empty list of [epoch, value] points, e.g. [[1, 0.5], [20, 0.1]]; not {describe_value(points)}",
            file=file, where=where, key=key,
        )
    if len(points) > MAX_POINTS:
        raise UserError(f"a schedule has at most {MAX_POINTS} points, not {len(points)}", file=file, where=where, key=key)
    epochs: list[int] = []
    values: list[float] = []
    for number, point in enumerate(points, start=1):
        label = f"{key} point {number}"
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise UserError(f"must be a pair [epoch, value], not {describe_value(point)}", file=file, where=where, key=label)
        epoch, point_value = point
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= MAX_SCHEDULE_EPOCH:
            raise UserError(
                f"its epoch must be a whole number from 1 to {MAX_SCHEDULE_EPOCH:,}, not {describe_value(epoch)}",
                file=file, where=where, key=label,
            )
        if epochs and epoch <= epochs[-1]:
            raise UserError(f"epochs must increase: epoch {epoch} comes after epoch {epochs[-1]}", file=file, where=where, key=label)
        epochs.append(epoch)
        values.append(check_value(point_value, file=file, where=where, key=label))
    return Schedule(tuple(epochs), tuple(values), step)


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
