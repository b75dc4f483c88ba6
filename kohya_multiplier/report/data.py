"""What the plan report shows: the data model behind the picture (``plot``), the inline SVG charts
(``svg_chart``) and the HTML page (``html_report``). Torch-free, matplotlib-free, pure numpy.

A report is built from a stream of epochs per dataset, each epoch the image indices it trains —
from the planner (``plan``) or from a schedule file (``report SCHEDULE.jsonl``) — plus the static
per-subset columns (images, multiplier and where it came from, target per epoch, loss weight).

Three questions, each answered per subset:
- balance: images trained per epoch against the target, classified so that a rounding within the
  sampling contract is ``ok`` and not an alarm (see :func:`balance_status`);
- rotation: distinct images trained so far (as a count: "399 of 400", never a rounded "100 %"),
  the epoch by which every image was trained, and the longest gap of any image between two of its
  trainings (what the rotation bound 2 x ceil(1/f) + 2 is about);
- the run: batches per epoch, epochs, steps, and every note and warning of the text output.
Many epochs are aggregated into at most ``MAX_COLUMNS`` ranges (:func:`epoch_bins`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from kohya_multiplier.dataset.multipliers import split_multiplier

MAX_COLUMNS = 20  # epoch columns of the per-epoch chart; more epochs are grouped into ranges

# Balance classes, from harmless to alarming.
OK, UNDER, OVER, FAR_UNDER, FAR_OVER, EXCLUDED, UNKNOWN = "ok", "under", "over", "far under", "far over", "excluded", "unknown"
_SEVERITY = {OK: 0, UNKNOWN: 0, EXCLUDED: 0, UNDER: 1, OVER: 1, FAR_UNDER: 2, FAR_OVER: 2}


def balance_status(count: float, target: float | None) -> str:
    """How one epoch's count of a subset compares with its target.

    ``ok``: within one image (the unavoidable rounding of a fractional target: 0 or 1 of a target
    of 0.3 per epoch) or within 20 % (the contract's tolerance: +-5 of 25); ``under``/``over``:
    within half the target (at least 2 images); beyond that ``far under``/``far over``.
    """
    if target is None:
        return UNKNOWN
    if target <= 0:
        return OK if count == 0 else FAR_OVER
    deviation = float(count) - float(target)
    if abs(deviation) < 1.0 + 1e-9 or abs(deviation) <= 0.2 * target + 1e-9:
        return OK
    far = abs(deviation) > max(2.0, 0.5 * target) + 1e-9
    if deviation < 0:
        return FAR_UNDER if far else UNDER
    return FAR_OVER if far else OVER


def worst_status(statuses: Iterable[str]) -> str:
    worst = OK
    for status in statuses:
        if _SEVERITY[status] > _SEVERITY[worst]:
            worst = status
    return worst


def rotation_bound(multiplier: float) -> int | None:
    """The contract's longest gap between two trainings of an image: 1 for whole multipliers,
    2 x ceil(1/f) + 2 epochs with a fractional part f; None when excluded."""
    if multiplier <= 0:
        return None
    whole, fraction = split_multiplier(multiplier)
    if fraction <= 0:
        return 1
    return 2 * math.ceil(1 / fraction) + 2 if whole == 0 else 1


def scheduled_rotation_bounds(rates, first: int, last: int) -> list[int | None]:
    """Per subset of a scheduled dataset (``rates``: at(epoch) -> (S,)), the longest of its
    rotation bounds (:func:`scheduled_rotation_bound`) for waits starting in epochs ``first - 1``
    .. ``last - 1``; None for a subset that never trains long enough to have one."""
    planned = np.array([rates.at(e) for e in range(first, last + 1)])  # (E, S)
    positive = planned[planned > 0]
    slowest = float(positive.min()) if positive.size else 1.0
    extra = int(min(4 * math.ceil(1 / min(slowest, 1.0)) + 4, 20_000))
    start = max(1, first - 1)
    table = np.array([rates.at(e) for e in range(start, last + 1 + extra)])  # epochs start.. (one before first, for switches)
    bounds: list[int | None] = []
    for column in table.T:
        worst = None
        rate = lambda e, column=column: float(column[e - start]) if 0 <= e - start < column.size else 0.0  # noqa: E731
        switches = walk_switches(rate, first, start + column.size - 1)
        for wait_from in range(first - 1, last):
            bound = scheduled_rotation_bound(rate, wait_from, longest=extra + last - wait_from, switches=switches)
            if bound is not None and (worst is None or bound > worst):
                worst = bound
        bounds.append(worst)
    return bounds


def scheduled_rotation_bound(rate_of_epoch, last: int, longest: int = 1_000_000, switches: Sequence[int] = ()) -> int | None:
    """The contract's longest gap for a rate that changes with the epoch: an image last trained
    in epoch ``last`` (or whose subset started after it) trains again before ``last + bound``,
    where the bound is the epochs over which its subset's expected picks per image reach 1 twice
    over, plus 2. For a constant fraction f that is 2 x ceil(1/f) + 2, the static bound; an epoch
    with a whole rate trains every image. ``switches``: epochs where the subset's fraction crosses
    1/2 (its cells then switch between walking their picks and the images they leave out, and
    start a fresh cycle); a wait that reaches one counts again from the epoch before it. None when
    the subset stops training first."""
    start = last
    while True:
        bound = _two_periods(rate_of_epoch, start, longest - (start - last))
        if bound is None:
            return None
        restart = [e for e in switches if start + 1 < e < start + bound]
        if not restart:
            return start + bound - last
        start = max(restart) - 1


def _two_periods(rate_of_epoch, last: int, longest: int) -> int | None:
    reached, periods, epoch = 0.0, 0, last
    while epoch - last < longest:
        epoch += 1
        rate = rate_of_epoch(epoch)
        if rate <= 0:
            return None
        reached += min(float(rate), 1.0)
        if reached >= 1 - 1e-9:
            periods, reached = periods + 1, 0.0
            if periods == 2:
                return epoch - last + 2
    return None


def walk_switches(rate_of_epoch, first: int, last: int) -> list[int]:
    """Epochs in first..last (from 2) where a scheduled subset's fraction crosses 1/2 against the
    epoch before (planner/scheduled.py then starts its cells on a fresh cycle)."""
    def above(epoch: int) -> bool:
        return split_multiplier(max(float(rate_of_epoch(epoch)), 0.0))[1] > 0.5

    return [e for e in range(max(2, first), last + 1) if above(e) != above(e - 1)]


@dataclass
class EpochBin:
    """A range of epochs shown as one column."""

    first: int
    last: int
    columns: slice  # positions in the planned epochs

    @property
    def label(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def epoch_bins(epochs: Sequence[int], max_columns: int = MAX_COLUMNS) -> list[EpochBin]:
    """At most ``max_columns`` consecutive ranges of the planned epochs, of equal size but the last."""
    n = len(epochs)
    if n == 0:
        return []
    size = max(1, math.ceil(n / max_columns))
    return [EpochBin(int(epochs[i]), int(epochs[min(n, i + size) - 1]), slice(i, min(n, i + size))) for i in range(0, n, size)]


@dataclass
class SubsetReport:
    name: str
    images: int
    multiplier: float | None  # None: unknown (a schedule read without its config)
    multiplier_text: str  # "0.1 (subset)", "1-3 (sd-scripts' regularization rule)", "unknown"
    target: float | None  # images per epoch the multiplier asks for; None: unknown
    counts: np.ndarray  # (E,) images trained per planned epoch
    seen: int  # distinct images trained in the planned epochs
    all_seen_epoch: int | None  # the epoch by which every image was trained; None: not within them
    longest_gap: int  # epochs between two trainings of one image (1: every epoch), the longest
    gap_open: bool  # the longest gap has not ended: some image is still waiting (a lower bound)
    is_reg: bool = False
    loss_weight: str | None = None  # its value and origin, "2 (subset)"; None: no loss weight in the dataset
    unused: int = 0  # images sd-scripts never registers (stock regularization)
    stock: bool = False  # a dataset without multipliers: sd-scripts' integer repeats, no rotation bound
    excluded: bool = False  # as the resolved dataset decided; a schedule without its config excludes nothing
    targets: np.ndarray | None = None  # (E,) a scheduled dataset's target of each planned epoch (target: their mean)
    schedule_bound: int | None = None  # a scheduled subset's rotation bound, the longest over the planned epochs

    @property
    def bound(self) -> int | None:
        if self.targets is not None:
            return self.schedule_bound
        return rotation_bound(self.multiplier) if self.multiplier is not None and not self.stock else None

    def target_of(self, column: int) -> float | None:
        return float(self.targets[column]) if self.targets is not None else self.target

    def status(self, column: int) -> str:
        if self.excluded:
            return EXCLUDED
        return balance_status(self.counts[column], self.target_of(column))

    def bin_status(self, b: EpochBin) -> str:
        if self.excluded:
            return EXCLUDED
        columns = range(len(self.counts))[b.columns]
        return worst_status(balance_status(self.counts[c], self.target_of(c)) for c in columns)

    @functools.cached_property  # read per subset by every chart: one pass over the epochs
    def overall_status(self) -> str:
        if self.excluded:
            return EXCLUDED
        return worst_status(balance_status(self.counts[c], self.target_of(c)) for c in range(len(self.counts)))

    @property
    def off_target(self) -> bool:
        """Outside the contract in some epoch (known target, not excluded)."""
        return self.overall_status not in (OK, EXCLUDED, UNKNOWN)

    @property
    def beyond_bound(self) -> bool:
        """Some image waited longer than the rotation bound."""
        return self.bound is not None and self.longest_gap > self.bound

    def epochs_until_all_seen(self, first_epoch: int, span: int) -> int:
        """Epochs from ``first_epoch`` until every image was trained; ``span`` (all of them) if not yet."""
        return self.all_seen_epoch - first_epoch + 1 if self.all_seen_epoch is not None else span

    @property
    def seen_text(self) -> str:
        """Counts, never a rounded percentage: "399 of 400"."""
        return f"{self.seen} of {self.images}"

    @property
    def all_seen_text(self) -> str:
        if self.excluded:
            return "-"
        if self.unused:
            return f"never ({self.unused} unused)"
        if self.all_seen_epoch is not None:
            return f"epoch {self.all_seen_epoch}"
        return f"not yet ({self.seen_text})"

    @property
    def gap_text(self) -> str:
        if self.excluded or not self.counts.size:
            return "-"
        if self.unused:
            return f"never ({self.unused} unused)"
        return f"{'≥ ' if self.gap_open else ''}{self.longest_gap}"


@dataclass
class DatasetReport:
    index: int
    epochs: list[int]
    subsets: list[SubsetReport]
    batches_per_epoch: list[int]  # (E,) batches of each planned epoch
    batch_size: int | None = None
    buckets: int | None = None
    shape_line: str | None = None  # the text output's line about this dataset's epoch length

    @property
    def scheduled(self) -> bool:
        """Its subsets have a target per epoch (a scheduled dataset planned with its config)."""
        return bool(self.epochs) and any(s.targets is not None for s in self.subsets)

    @property
    def epoch_length(self) -> int | None:
        """Batches per epoch when every epoch has the same number (the contract), else None."""
        values = set(self.batches_per_epoch)
        return values.pop() if len(values) == 1 else None

    @property
    def has_loss_weight(self) -> bool:
        return any(s.loss_weight is not None for s in self.subsets)

    @property
    def has_targets(self) -> bool:
        return any(s.target is not None for s in self.subsets)

    def bins(self, max_columns: int = MAX_COLUMNS) -> list[EpochBin]:
        return epoch_bins(self.epochs, max_columns)

    def balance_verdict(self) -> str:
        """One sentence: are the subsets balanced in every epoch?"""
        if not self.has_targets:
            return "targets unknown (the schedule was read without its config)"
        off = [s for s in self.subsets if s.off_target]
        if not off:
            return "balanced: every subset within the contract in every epoch"
        shown = ", ".join(f"{s.name} ({s.overall_status})" for s in off[:5]) + (f" and {len(off) - 5} more" if len(off) > 5 else "")
        return f"{len(off)} of {len(self.subsets)} subsets off target in some epoch: {shown}"

    def _rotation_groups(self) -> tuple[list, list, list]:
        """(subsets that train, those with an image not trained yet, those beyond the bound)."""
        active = [s for s in self.subsets if not s.excluded]
        return active, [s for s in active if s.all_seen_epoch is None], [s for s in active if s.beyond_bound]

    def short_verdicts(self) -> tuple[str, str]:
        """(balance, rotation) in a few words, for the picture's panel titles."""
        off = sum(s.off_target for s in self.subsets)
        balance = ("targets unknown" if not self.has_targets else
                   "all within the contract" if not off else f"{off} subset{'s' * (off != 1)} off target")
        _, waiting_subsets, late_subsets = self._rotation_groups()
        waiting, late = len(waiting_subsets), len(late_subsets)
        rotation = (f"{waiting} subset{'s' * (waiting != 1)} not fully trained" if waiting else "every image trained")
        if late:
            rotation += f", {late} beyond the bound"
        return balance, rotation

    def rotation_verdict(self) -> str:
        """One sentence: has every image been trained, and did any wait longer than the bound?"""
        active, waiting, late = self._rotation_groups()
        parts = []
        if not waiting:
            last = max((s.all_seen_epoch for s in active), default=None)
            parts.append(f"every image trained by epoch {last}" if last is not None else "nothing trained")
        else:
            shown = ", ".join(f"{s.name}: {s.seen_text}" for s in waiting[:3]) + (f" and {len(waiting) - 3} more" if len(waiting) > 3 else "")
            parts.append(f"{len(waiting)} subset{'s' * (len(waiting) != 1)} not fully trained yet ({shown})")
        if late:
            parts.append(f"{len(late)} subset{'s' * (len(late) != 1)} with a gap beyond the rotation bound: "
                         + ", ".join(s.name for s in late[:5]))
        else:
            parts.append("no image waited longer than the rotation bound")
        return "; ".join(parts)


@dataclass
class Report:
    title: str
    datasets: list[DatasetReport]
    notes: list[str] = field(default_factory=list)  # every note of the text output, in order
    warnings: list[str] = field(default_factory=list)  # every warning given, in order
    facts: list[tuple[str, str]] = field(default_factory=list)  # (label, value): seed, planner version, source
    tables_text: list[str] = field(default_factory=list)  # the text output's tables, verbatim
    run_lines: list[str] = field(default_factory=list)  # the run's step arithmetic as `plan` prints it, when asked for

    @property
    def epochs(self) -> list[int]:
        return sorted({e for d in self.datasets for e in d.epochs})

    @property
    def batches_per_epoch(self) -> int | None:
        """Batches (= optimizer steps on one GPU without gradient accumulation) per epoch, all datasets."""
        lengths = [d.epoch_length for d in self.datasets]
        return None if any(x is None for x in lengths) else sum(lengths)

    @property
    def total_batches(self) -> int:
        return sum(sum(d.batches_per_epoch) for d in self.datasets)

    def run_facts(self) -> list[tuple[str, str]]:
        """The run at a glance, as (label, value) rows."""
        epochs = self.epochs
        rows = [("epochs", f"{epochs[0]}-{epochs[-1]} ({len(epochs)})" if len(epochs) > 1 else (str(epochs[0]) if epochs else "none"))]
        per_epoch = self.batches_per_epoch
        rows.append(("batches per epoch", str(per_epoch) if per_epoch is not None else "varies: "
                     + ", ".join(f"dataset {d.index}: {min(d.batches_per_epoch, default=0)}-{max(d.batches_per_epoch, default=0)}" for d in self.datasets)))
        rows.append(("batches over these epochs", f"{self.total_batches} (= optimizer steps on one GPU without gradient accumulation)"))
        for d in self.datasets:
            trained = int(sum(int(s.counts.sum()) for s in d.subsets))
            rows.append((f"dataset {d.index}", ", ".join(x for x in [
                f"batch size {d.batch_size}" if d.batch_size else "",
                f"{d.buckets} bucket{'s' * (d.buckets != 1)}" if d.buckets is not None else "",
                f"{len(d.subsets)} subset{'s' * (len(d.subsets) != 1)}",
                f"{trained} images trained"] if x)))
        return self.facts + rows


class EpochAccumulator:
    """Counts, per subset, images trained per epoch, distinct images seen, and the longest gap
    between two trainings of any image, fed one epoch at a time (epochs in increasing order).

    ``starts_at_training_start``: the first epoch fed is epoch 1 of the run, so an image first
    trained in epoch e waited e epochs (a closed gap); otherwise leading waits are lower bounds.
    """

    def __init__(self, subset_of_image: np.ndarray, n_subsets: int, first_epoch: int):
        self.subset_of_image = np.asarray(subset_of_image, dtype=np.int64)
        self.n_subsets = n_subsets
        self.first_epoch = int(first_epoch)
        self.closed_start = self.first_epoch == 1
        n = len(self.subset_of_image)
        self.last = np.full(n, self.first_epoch - 1, dtype=np.int64)
        self.trained = np.zeros(n, dtype=bool)
        self.max_gap = np.zeros(n_subsets, dtype=np.int64)
        self.open_lead = np.zeros(n_subsets, dtype=np.int64)
        self.epochs: list[int] = []
        self.columns: list[np.ndarray] = []
        self._all_seen = np.full(n_subsets, -1, dtype=np.int64)
        self._seen = np.zeros(n_subsets, dtype=np.int64)  # distinct images trained so far, per subset
        self.sizes = np.bincount(self.subset_of_image, minlength=n_subsets)
        self.until = np.full(n_subsets, np.iinfo(np.int64).max // 2, dtype=np.int64)  # last epoch each subset trains

    def set_windows(self, start_epochs, end_epochs) -> None:
        """Scheduled subsets train only from ``start_epochs[s]`` through ``end_epochs[s]`` (None: to
        the end): their waits count from their start and end at their end. Call before any epoch."""
        start = np.asarray(start_epochs, dtype=np.int64)
        self.last = np.maximum(self.last, start[self.subset_of_image] - 1)
        self.until = np.array([self.until[s] if e is None else int(e) for s, e in enumerate(end_epochs)], dtype=np.int64)

    @property
    def all_seen(self) -> list[int | None]:
        """Per subset, the epoch by which every image was trained; None: not within the epochs fed."""
        return [None if e < 0 else int(e) for e in self._all_seen]

    def add(self, epoch: int, image_indices) -> None:
        epoch = int(epoch)
        if self.epochs and epoch <= self.epochs[-1]:
            raise ValueError(f"epochs must increase: {epoch} after {self.epochs[-1]}")
        indices = np.asarray(image_indices, dtype=np.int64).reshape(-1)
        self.columns.append(np.bincount(self.subset_of_image[indices], minlength=self.n_subsets))
        unique = np.unique(indices)
        gaps = epoch - self.last[unique]
        subsets = self.subset_of_image[unique]
        first_time = ~self.trained[unique]
        if self.closed_start:
            np.maximum.at(self.max_gap, subsets, gaps)
        else:
            np.maximum.at(self.max_gap, subsets[~first_time], gaps[~first_time])
            np.maximum.at(self.open_lead, subsets[first_time], gaps[first_time])
        self.last[unique] = epoch
        self.trained[unique] = True
        self.epochs.append(epoch)
        self._seen += np.bincount(subsets[first_time], minlength=self.n_subsets)  # the images new this epoch
        done = (self._all_seen < 0) & (self.sizes > 0) & (self._seen >= self.sizes)
        self._all_seen[done] = epoch

    def counts(self) -> np.ndarray:
        if not self.columns:
            return np.zeros((self.n_subsets, 0), dtype=np.int64)
        return np.stack(self.columns, axis=1)

    def seen(self) -> np.ndarray:
        return self._seen.copy()

    def gaps(self) -> tuple[np.ndarray, np.ndarray]:
        """(longest gap, open) per subset: open when the longest wait has not ended (an image
        untrained since some epoch, or, not starting at epoch 1, before its first training)."""
        if not self.epochs:
            return np.zeros(self.n_subsets, dtype=np.int64), np.zeros(self.n_subsets, dtype=bool)
        trailing = np.zeros(self.n_subsets, dtype=np.int64)
        end = np.minimum(self.epochs[-1], self.until[self.subset_of_image])  # a subset's wait ends with its window
        np.maximum.at(trailing, self.subset_of_image, np.maximum(end + 1 - self.last, 0))
        trailing[self.sizes == 0] = 0
        # a trailing wait counts only once it is longer than an image has already waited
        open_wait = np.maximum(trailing, self.open_lead)
        longest = np.maximum(self.max_gap, open_wait)
        return longest, open_wait > self.max_gap


def dataset_report(
    index: int,
    accumulator: EpochAccumulator,
    *,
    names: Sequence[str],
    multipliers: Sequence[float | None],
    multiplier_texts: Sequence[str],
    targets: Sequence[float | None],
    batches_per_epoch: Sequence[int],
    is_reg: Sequence[bool] | None = None,
    loss_weights: Sequence[str | None] | None = None,
    unused: Sequence[int] | None = None,
    images: Sequence[int] | None = None,
    batch_size: int | None = None,
    buckets: int | None = None,
    shape_line: str | None = None,
    stock: bool = False,
    excluded: Sequence[bool] | None = None,
    epoch_targets: np.ndarray | None = None,
    schedule_bounds: Sequence[int | None] | None = None,
) -> DatasetReport:
    counts = accumulator.counts()
    seen = accumulator.seen()
    longest, open_ = accumulator.gaps()
    all_seen = accumulator.all_seen
    sizes = accumulator.sizes if images is None else np.asarray(images)
    subsets = []
    for s, name in enumerate(names):
        subsets.append(SubsetReport(
            name=str(name),
            images=int(sizes[s]),
            multiplier=multipliers[s],
            multiplier_text=multiplier_texts[s],
            target=targets[s],
            counts=counts[s],
            seen=int(seen[s]),
            all_seen_epoch=all_seen[s],
            longest_gap=int(longest[s]),
            gap_open=bool(open_[s]),
            is_reg=bool(is_reg[s]) if is_reg is not None else False,
            loss_weight=loss_weights[s] if loss_weights is not None else None,
            unused=int(unused[s]) if unused is not None else 0,
            stock=stock,
            excluded=bool(excluded[s]) if excluded is not None else False,
            targets=epoch_targets[s] if epoch_targets is not None else None,
            schedule_bound=schedule_bounds[s] if schedule_bounds is not None else None,
        ))
    return DatasetReport(index=index, epochs=list(accumulator.epochs), subsets=subsets,
                         batches_per_epoch=[int(b) for b in batches_per_epoch], batch_size=batch_size,
                         buckets=buckets, shape_line=shape_line)
