"""Compare two schedules (JSON Lines written by ``plan --schedule`` or by a training run).

One object per batch: ``{"epoch": e, "dataset": d, "batch": i, "resolution": [w, h],
"images": [path, ...]}``. The comparison is per epoch (and dataset) and per subset; a subset is the
image's parent folder unless a mapping from the dataset config is given. Line order in the files
does not matter; batches are matched by (epoch, dataset, batch).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from kohya_multiplier import progress
from kohya_multiplier.report.schedule import Batch, BatchList, ScheduleFile


def read_schedule(path: str | os.PathLike) -> ScheduleFile:
    """A schedule file, checked line by line and indexed, read one epoch at a time by :func:`compare`."""
    return ScheduleFile(path)


# --- subsets -------------------------------------------------------------------------------------------


def parent_folder_namer(paths: Iterable[str]) -> Callable[[str], str]:
    """Name images by their parent folder, with as many trailing path parts as make names unique."""
    parents = sorted({os.path.dirname(p) for p in paths})
    parts = {p: _parts(p) for p in parents}
    deepest = max((len(v) for v in parts.values()), default=0)
    suffix_counts = [Counter(tuple(v[-d:]) for v in parts.values()) for d in range(1, deepest + 1)]
    names: dict[str, str] = {}
    for parent, pieces in parts.items():
        for depth in range(1, len(pieces) + 1):
            if suffix_counts[depth - 1][tuple(pieces[-depth:])] == 1:
                names[parent] = "/".join(pieces[-depth:])
                break
        else:
            names[parent] = parent or "."

    def name(path: str) -> str:
        parent = os.path.dirname(path)
        return names.get(parent) or parent or "."

    return name


def _parts(path: str) -> list[str]:
    return [p for p in path.replace("\\", "/").split("/") if p]


def mapping_namer(mapping: Mapping[str, str], fallback: Callable[[str], str]) -> Callable[[str], str]:
    """Name images by a path -> subset mapping (from the dataset config); others by ``fallback``
    in parentheses, so they stand out."""
    normalized = {os.path.normpath(os.path.abspath(k)): v for k, v in mapping.items()}

    def name(path: str) -> str:
        found = normalized.get(os.path.normpath(os.path.abspath(path)))
        return found if found is not None else f"({fallback(path)})"

    return name


def common_prefix_remover(paths: Iterable[str]) -> Callable[[str], str]:
    """Paths relative to the schedule's common folder (to compare schedules made on different machines)."""
    folders = {os.path.dirname(p) for p in paths}
    try:
        root = os.path.commonpath(sorted(folders)) if folders else ""
    except ValueError:
        root = ""
    if not root:
        return lambda path: path
    return lambda path: os.path.relpath(path, root)


# --- comparison ----------------------------------------------------------------------------------------

IDENTICAL = "identical"
VERDICTS = {
    IDENTICAL: "identical",
    "order": "same batches, different order",
    "batching": "same images, batched differently",
    "images": "different images",
    "only_a": "only in A",
    "only_b": "only in B",
}


@dataclass
class EpochDiff:
    epoch: int
    dataset: int
    verdict: str
    batches: tuple[int, int]
    images: tuple[int, int]
    only_in_a: int = 0  # image appearances in A and not in B (multiset difference)
    only_in_b: int = 0
    batches_differing: int = 0  # batch positions whose resolution or images differ


@dataclass
class SubsetDiff:
    name: str
    per_epoch: dict[int, tuple[int, int]] = field(default_factory=dict)  # epoch -> (count A, count B)

    @property
    def total(self) -> tuple[int, int]:
        return (sum(a for a, _ in self.per_epoch.values()), sum(b for _, b in self.per_epoch.values()))

    @property
    def epochs_differing(self) -> list[int]:
        return sorted(e for e, (a, b) in self.per_epoch.items() if a != b)

    @property
    def max_epoch_difference(self) -> int:
        return max((abs(a - b) for a, b in self.per_epoch.values()), default=0)


@dataclass
class ScheduleDiff:
    epochs: list[EpochDiff]
    subsets: list[SubsetDiff]
    compared_epochs: list[int]
    planner_versions: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # versions recorded in A, in B
    empty: tuple[bool, bool] = (False, False)  # a side holds no batch at all (e.g. a run that trained nothing)
    epochs_held: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # epochs in A, in B
    repeats: tuple[int, int] = (0, 0)  # records repeating a batch (several GPUs: accelerate evens out the ranks)

    @property
    def identical(self) -> bool:
        """Never for an empty side or no epoch compared: a run that recorded nothing is not a success."""
        if any(self.empty) or not self.compared_epochs:
            return False
        return all(e.verdict == IDENTICAL for e in self.epochs)


def _source(side) -> ScheduleFile | BatchList:
    return side if isinstance(side, (ScheduleFile, BatchList)) else BatchList(side)


def _renamed(batches: list[Batch], rename: Callable[[str], str] | None) -> list[Batch]:
    if rename is None:
        return batches
    return [Batch(b.epoch, b.dataset, b.batch, b.resolution, tuple(rename(p) for p in b.images), b.planner_version)
            for b in batches]


def compare(a, b, *, namer: Callable[[str], str] | None = None, common_epochs_only: bool = False,
            relative: bool = False) -> ScheduleDiff:
    """Compare two schedules (ScheduleFile, or lists of batches), one (epoch, dataset) at a time, so
    memory follows one epoch. ``relative``: paths taken relative to each schedule's common folder.
    Repeats (the same batch recorded again by a rank accelerate evened out) are counted, not compared."""
    a, b = _source(a), _source(b)
    rename_a = common_prefix_remover(a.paths) if relative else None
    rename_b = common_prefix_remover(b.paths) if relative else None
    epochs_a, epochs_b = set(a.epochs), set(b.epochs)
    keep = epochs_a & epochs_b if common_epochs_only else None
    if namer is None:
        names_a = {rename_a(p) for p in a.paths} if rename_a else a.paths
        names_b = {rename_b(p) for p in b.paths} if rename_b else b.paths
        namer = parent_folder_namer(names_a | names_b)
    name_cache: dict[str, str] = {}

    def subset_of(path: str) -> str:
        name = name_cache.get(path)
        if name is None:
            name = name_cache[path] = namer(path)
        return name

    epoch_rows: list[EpochDiff] = []
    counts: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    keys = sorted(k for k in set(a.keys()) | set(b.keys()) if keep is None or k[0] in keep)
    repeats = [0, 0]
    for key in progress.track(keys, len(keys), "comparing epochs"):
        epoch, dataset = key
        ga, repeated_a = a.read(*key)
        gb, repeated_b = b.read(*key)
        repeats[0] += len(repeated_a)
        repeats[1] += len(repeated_b)
        ga, gb = _renamed(ga, rename_a), _renamed(gb, rename_b)
        epoch_rows.append(_compare_epoch(epoch, dataset, ga, gb, counts, subset_of))

    compared = sorted({e for e, _ in keys})
    subsets = []
    for name in sorted(counts):
        diff = SubsetDiff(name)
        for epoch in compared:
            a_count, b_count = counts[name].get(epoch, (0, 0))
            diff.per_epoch[epoch] = (a_count, b_count)
        subsets.append(diff)
    versions = (tuple(sorted(a.versions)), tuple(sorted(b.versions)))
    held = (tuple(sorted(epochs_a)), tuple(sorted(epochs_b)))
    empty = (a.batch_count == 0, b.batch_count == 0)
    return ScheduleDiff(epoch_rows, subsets, compared, versions, empty, held, (repeats[0], repeats[1]))  # type: ignore[arg-type]


def _compare_epoch(epoch: int, dataset: int, ga: list[Batch], gb: list[Batch], counts, subset_of) -> EpochDiff:
    images_a = Counter(p for x in ga for p in x.images)
    images_b = Counter(p for x in gb for p in x.images)
    for side, images in ((0, images_a), (1, images_b)):
        for path, n in images.items():
            counts[subset_of(path)][epoch][side] += n
    row = EpochDiff(epoch, dataset, IDENTICAL, (len(ga), len(gb)), (sum(images_a.values()), sum(images_b.values())))
    row.only_in_a = sum((images_a - images_b).values())
    row.only_in_b = sum((images_b - images_a).values())
    by_index_a = {x.batch: x for x in ga}
    by_index_b = {x.batch: x for x in gb}
    for index in set(by_index_a) | set(by_index_b):
        xa, xb = by_index_a.get(index), by_index_b.get(index)
        if xa is None or xb is None or xa.resolution != xb.resolution or xa.images != xb.images:
            row.batches_differing += 1
    if not ga:
        row.verdict = "only_b"
    elif not gb:
        row.verdict = "only_a"
    elif row.batches_differing == 0:
        row.verdict = IDENTICAL
    elif row.only_in_a or row.only_in_b:
        row.verdict = "images"
    else:
        batches_a = Counter((x.resolution, tuple(sorted(x.images))) for x in ga)
        batches_b = Counter((x.resolution, tuple(sorted(x.images))) for x in gb)
        row.verdict = "order" if batches_a == batches_b else "batching"
    return row


# --- text ----------------------------------------------------------------------------------------------


def _ranges(numbers: list[int]) -> str:
    if not numbers:
        return "none"
    out, start, prev = [], numbers[0], numbers[0]
    for n in numbers[1:] + [None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)


def _table(header: list[str], rows: list[list[str]], left: frozenset[int] = frozenset({0})) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header)] + [line(r) for r in rows]


def summarize_file(label: str, path: str, schedule) -> str:
    schedule = _source(schedule)
    epochs = schedule.epochs
    datasets = schedule.datasets
    span = _ranges(epochs)
    return (f"{label}: {path}: {len(epochs)} epoch{'s' if len(epochs) != 1 else ''} ({span}), "
            f"{len(datasets)} dataset{'s' if len(datasets) != 1 else ''}, {schedule.batch_count} batches, "
            f"{schedule.image_count} images")


def format_diff(diff: ScheduleDiff, *, show_all: bool = False, per_epoch: bool = False) -> str:
    lines: list[str] = []
    rows = []
    identical_epochs = sorted({e.epoch for e in diff.epochs}
                              - {e.epoch for e in diff.epochs if e.verdict != IDENTICAL})
    for e in diff.epochs:
        if e.verdict == IDENTICAL and not show_all:
            continue
        rows.append([str(e.epoch), str(e.dataset), f"{e.batches[0]}/{e.batches[1]}", f"{e.images[0]}/{e.images[1]}",
                     str(e.only_in_a), str(e.only_in_b), str(e.batches_differing), VERDICTS[e.verdict]])
    if rows:
        lines.append("")
        lines.extend(_table(["epoch", "dataset", "batches A/B", "images A/B", "only in A", "only in B",
                             "batches differing", "verdict"], rows, left=frozenset({7})))
    if identical_epochs and not show_all:
        lines.append("")
        lines.append(f"identical epochs: {_ranges(identical_epochs)}")

    differing = [s for s in diff.subsets if s.epochs_differing]
    lines.append("")
    if diff.compared_epochs:
        lines.append(f"per subset, epochs {_ranges(diff.compared_epochs)} (images trained, A vs B):")
        subset_rows = []
        for s in diff.subsets:
            total_a, total_b = s.total
            subset_rows.append([s.name, str(total_a), str(total_b), f"{total_b - total_a:+d}",
                                str(len(s.epochs_differing)), str(s.max_epoch_difference)])
        lines.extend(_table(["subset", "A", "B", "B-A", "epochs differing", "max per-epoch |B-A|"], subset_rows))
    if per_epoch and differing:
        lines.append("")
        lines.append("per subset and epoch where the counts differ (A/B):")
        for s in differing:
            cells = ", ".join(f"{e}: {s.per_epoch[e][0]}/{s.per_epoch[e][1]}" for e in s.epochs_differing)
            lines.append(f"  {s.name}: {cells}")
    lines.append("")
    for label, count in zip("AB", diff.repeats):
        if count:
            lines.append(f"{label} repeats {count} batch{'es' * (count != 1)} (recorded again by a GPU that accelerate gave "
                         "the first batches of the epoch again, to even out the ranks); compared once")
    versions_a, versions_b = diff.planner_versions
    if versions_a and versions_b and versions_a != versions_b:
        lines.append(f"planner versions differ: A {', '.join(map(str, versions_a))}, B {', '.join(map(str, versions_b))} "
                     "(the same seed and dataset give other batches under another planner version)")
    empty = [label for label, is_empty in zip("AB", diff.empty) if is_empty]
    if empty:
        lines.append(f"schedules differ: {' and '.join(empty)} hold{'s' * (len(empty) == 1)} no batch at all "
                     "(a run that recorded nothing trained nothing)")
    elif not diff.compared_epochs:
        lines.append(f"schedules differ: no epoch in common (A holds epochs {_ranges(list(diff.epochs_held[0]))}, "
                     f"B holds {_ranges(list(diff.epochs_held[1]))})")
    elif diff.identical:
        skipped = [f"only in {label}: {_ranges(sorted(set(held) - set(diff.compared_epochs)))}"
                   for label, held in zip("AB", diff.epochs_held) if set(held) - set(diff.compared_epochs)]
        lines.append(f"schedules are identical in epochs {_ranges(diff.compared_epochs)}"
                     + (f" (not compared: epochs {'; '.join(skipped)})" if skipped else ""))
    else:
        bad = sorted({e.epoch for e in diff.epochs if e.verdict != IDENTICAL})
        lines.append(f"schedules differ in {len(bad)} of {len(diff.compared_epochs)} epochs ({_ranges(bad)}); "
                     f"subset counts differ for {len(differing)} of {len(diff.subsets)} subsets")
    return "\n".join(lines)
