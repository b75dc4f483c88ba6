"""What a scheduled dataset trains in each epoch: every subset's rate, scaled to a constant total.

sd-scripts counts a dataset's batches once (``len(dataloader)``) and derives the steps, the LR
schedule, save-every-n-epochs and resume from it, so every epoch must have the same length. A
dataset with a schedule (a scheduled ``multiplier`` or ``images_per_epoch``, a ``start_epoch`` or
``end_epoch``) therefore trains the same number of images T every epoch:

* T is the dataset's ``total_images_per_epoch`` when given, else what its first epoch asks for;
* in epoch e each subset asks for ``m_s(e) x n_s`` images (its scheduled multiplier, 0 outside
  its window; an automatic regularization subset matches that epoch's training images), and every
  request is scaled by one common factor ``c(e) = T / sum_s m_s(e) x n_s``.

So the schedules set the mix; T sets the size. Everything here is pure and cheap (O(subsets) per
epoch): the planner asks for the rates of every epoch it replays.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from kohya_multiplier.dataset.multipliers import auto_regularization_rate
from kohya_multiplier.dataset.schedules import Schedule
from kohya_multiplier.errors import UserError

# Scaled rates closer than this (relative) count as the same: float noise of c(e) is no change.
_SAME = 1e-9


@dataclass(frozen=True)
class SubsetRate:
    """One subset as the rates see it. ``schedule``: its multiplier over epochs (None: ``value``
    every epoch); ``auto``: an automatic regularization subset (its rate follows the epoch's
    training images)."""

    images: int
    value: float = 0.0
    schedule: Schedule | None = None
    start_epoch: int = 1
    end_epoch: int | None = None
    is_reg: bool = False
    auto: bool = False

    def active(self, epoch: int) -> bool:
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch <= self.end_epoch)

    def requested(self, epoch: int) -> float:
        """The multiplier asked for in ``epoch`` before scaling (0 outside the window)."""
        if not self.active(epoch):
            return 0.0
        value = self.schedule.at(epoch) if self.schedule is not None else self.value
        return max(value, 0.0)

    @property
    def changes_at(self) -> int:
        """The first epoch from which this subset's request no longer changes."""
        last = max(self.start_epoch, self.schedule.last_epoch if self.schedule is not None else 1)
        return max(last, self.end_epoch + 1) if self.end_epoch is not None else last


class DatasetRates:
    """Every subset's scaled rate in every epoch. ``total``: T, or None for the first epoch's."""

    def __init__(self, subsets: Sequence[SubsetRate], total: float | None = None):
        self.subsets = tuple(subsets)
        self.images = np.array([s.images for s in self.subsets], dtype=np.float64)
        self.horizon = max([s.changes_at for s in self.subsets] + [1])  # rates are constant from here on
        self.total_given = total is not None
        self.total = float(total) if total is not None else float(self.requested(1) @ self.images)
        self._cache: tuple[int, np.ndarray] | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        state.pop("requested_by_epoch", None)  # read-time checks only: not for every DataLoader worker
        return state

    def __repr__(self) -> str:
        total = self.total if self.total_given else None
        return f"DatasetRates({list(self.subsets)!r}, {total!r})"

    def requested(self, epoch: int) -> np.ndarray:
        """(S,) multipliers asked for in ``epoch``, automatic regularization included, before scaling."""
        rates = np.array([s.requested(epoch) if not s.auto else 0.0 for s in self.subsets])
        autos = [i for i, s in enumerate(self.subsets) if s.auto and s.active(epoch)]
        if autos:
            training = sum(rates[i] * self.images[i] for i, s in enumerate(self.subsets) if not s.is_reg)
            explicit = sum(rates[i] * self.images[i] for i, s in enumerate(self.subsets) if s.is_reg and not s.auto)
            auto_images = int(sum(self.images[i] for i in autos))
            rates[autos] = auto_regularization_rate(training, explicit, auto_images)
        return rates

    def scale(self, epoch: int) -> float:
        """c(e): the common factor that brings the epoch's requests to T (0 if nothing is asked)."""
        asked = float(self.requested(epoch) @ self.images)
        return self.total / asked if asked > 0 else 0.0

    def at(self, epoch: int) -> np.ndarray:
        """(S,) the multipliers the planner uses in ``epoch``: the requests scaled by c(e)."""
        epoch = min(int(epoch), self.horizon)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        requested = self.requested(epoch)
        asked = float(requested @ self.images)
        rates = requested * (self.total / asked) if asked > 0 else requested
        rates.setflags(write=False)
        self._cache = (epoch, rates)
        return rates

    @functools.cached_property
    def requested_by_epoch(self) -> np.ndarray:
        """(horizon, S) the requests of epochs 1..horizon, found once for the checks below."""
        return np.array([self.requested(epoch) for epoch in range(1, self.horizon + 1)])

    def epoch_without_images(self) -> int | None:
        """The first epoch in which no subset asks for an image, if any."""
        empty = np.flatnonzero(~(self.requested_by_epoch @ self.images > 0))
        return int(empty[0]) + 1 if empty.size else None

    def peaks(self) -> np.ndarray:
        """(S,) each subset's largest scaled rate over all epochs."""
        asked = self.requested_by_epoch
        totals = asked @ self.images
        scale = np.divide(self.total, totals, out=np.ones_like(totals), where=totals > 0)
        return (asked * scale[:, None]).max(axis=0)

    def mix_changes(self) -> bool:
        """Whether the subsets' shares of an epoch differ between some epochs that train images
        (else the schedules change only the size, which the constant total undoes)."""
        asked = self.requested_by_epoch * self.images
        totals = asked.sum(axis=1)
        shares = asked[totals > 0] / totals[totals > 0, None]
        return any(not np.allclose(share, shares[0], rtol=_SAME, atol=1e-12) for share in shares[1:])

    def requests_change(self) -> bool:
        asked = self.requested_by_epoch
        return any(not np.allclose(row, asked[0], rtol=_SAME, atol=0) for row in asked[1:])

    def turning_epochs(self) -> list[int]:
        """Epoch 1, every epoch where some subset's schedule or window turns, and the horizon."""
        turns = {1, self.horizon}
        for s in self.subsets:
            if s.schedule is not None:
                turns.update(s.schedule.epochs)
            if s.start_epoch > 1:
                turns.add(s.start_epoch)
            if s.end_epoch is not None:
                turns.update((s.end_epoch, s.end_epoch + 1))
        return sorted(e for e in turns if 1 <= e <= self.horizon)




def is_scheduled(subsets, total) -> bool:
    """Whether a dataset is planned epoch by epoch: a total is given, or a subset that trains has a
    scheduled rate or an epoch window."""
    return total is not None or any(
        s.multiplier_schedule is not None or s.start_epoch > 1 or s.end_epoch is not None for s in subsets if not s.excluded
    )


def dataset_rates(subsets, total, *, file: str | None, where: str) -> DatasetRates:
    """The rates of a scheduled dataset's subsets (resolved SubsetSpecs), checked: every epoch
    trains something, and the schedules change the mix (not only the size, which T fixes)."""
    rates = DatasetRates([_subset_rate(s) for s in subsets], total)
    if rates.requests_change() and not rates.mix_changes():
        raise UserError(
            "its schedules change every subset alike, and a dataset trains the same number of images every epoch (sd-scripts "
            "fixes its batches per epoch), so they would change nothing; a fade between two [[datasets]] (e.g. low and full "
            "resolution) cannot be kept exact: put both image sets in one dataset as subsets (bucket_no_upscale = true keeps "
            "small copies in small buckets) and schedule those, or train the phases as two runs",
            file=file, where=where, key="multiplier",
        )
    empty = rates.epoch_without_images()
    if empty is not None:
        raise UserError(
            f"in epoch {empty} no subset trains (each is outside its start_epoch..end_epoch or at 0); every epoch must "
            "train images, as sd-scripts gives every epoch the same number of steps", file=file, where=where, key="start_epoch",
        )
    return rates


def _subset_rate(s) -> SubsetRate:
    images = len(s.images)
    window = {"start_epoch": s.start_epoch, "end_epoch": s.end_epoch, "is_reg": s.is_reg}
    if s.excluded:
        return SubsetRate(images, value=0.0, **window)
    if s.effective_origin.startswith("auto"):
        return SubsetRate(images, auto=True, **window)
    if s.multiplier_schedule is not None:
        return SubsetRate(images, schedule=s.multiplier_schedule, **window)
    return SubsetRate(images, value=float(s.effective_multiplier), **window)


__all__ = ["DatasetRates", "SubsetRate", "dataset_rates", "is_scheduled"]
