"""Schedules as JSON Lines: one object per batch, written by `plan --schedule` and by training.

    {"epoch": 3, "dataset": 0, "batch": 17, "resolution": [512, 768], "images": ["/abs/a.png", ...],
     "planner_version": 2}

epoch counts from 1, dataset and batch from 0 (batch = position in the epoch). ``planner_version``
(``kohya_multiplier.planner.PLANNER_VERSION``) names the planner that made the plan: the same
(seed, dataset, epoch) gives other batches under another version, so a schedule or a resume from
an older version can be told apart. Readers accept records without it (schedules written before
version 2).
"""

from __future__ import annotations

import json
import math
import os
from array import array
from dataclasses import dataclass
from typing import IO

from kohya_multiplier import progress
from kohya_multiplier.errors import UserError
from kohya_multiplier.dataset.limits import MAX_EPOCH
from kohya_multiplier.dataset.reading import MAX_IMAGE_SIDE, parse_json
from kohya_multiplier.planner.records import PLANNER_VERSION_KEY  # records are built there, read here


def write_records(stream: IO[str], records) -> None:
    for record in records:
        stream.write(json.dumps(record, separators=(", ", ": ")))
        stream.write("\n")


# --- reading: validated, and streamed -----------------------------------------------------------

MAX_DATASETS = 1 << 16
MAX_BATCH_INDEX = 1 << 31


@dataclass(frozen=True)
class Batch:
    epoch: int
    dataset: int
    batch: int
    resolution: tuple[int, int]
    images: tuple[str, ...]
    planner_version: int | None = None  # absent in schedules written before planner version 2


def _int(value, *, file: str, where: str, key: str, minimum: int, maximum: int) -> int:
    if type(value) is int and minimum <= value <= maximum:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        else:
            raise UserError(f"must be an integer, got {value!r}", file=file, where=where, key=key)
    if value < minimum:
        raise UserError(f"must be >= {minimum}, got {value}", file=file, where=where, key=key)
    if value > maximum:
        raise UserError(f"must be <= {maximum}, got {value}", file=file, where=where, key=key)
    return value


def parse_record(text: str, *, file: str, line: int) -> Batch:
    """One line of a schedule, checked: one-line errors for anything a schedule cannot hold (an
    epoch of ``Infinity`` or 1e20, a nesting too deep, a batch without images)."""
    where = f"line {line}"
    try:
        record = parse_json(text, file=file, where=where)
    except json.JSONDecodeError as error:
        raise UserError(f"not valid JSON ({error.msg}, column {error.colno})", file=file, where=where) from None
    if not isinstance(record, dict):
        raise UserError("expected one JSON object per line", file=file, where=where)

    def field(key: str):
        if key not in record:
            raise UserError("missing", file=file, where=where, key=key)
        return record[key]

    epoch = _int(field("epoch"), file=file, where=where, key="epoch", minimum=1, maximum=MAX_EPOCH)
    dataset = _int(field("dataset"), file=file, where=where, key="dataset", minimum=0, maximum=MAX_DATASETS)
    batch = _int(field("batch"), file=file, where=where, key="batch", minimum=0, maximum=MAX_BATCH_INDEX)
    field("resolution")
    field("images")
    resolution = record["resolution"]
    if not isinstance(resolution, list) or len(resolution) != 2:
        raise UserError(f"must be [width, height], got {resolution!r}", file=file, where=where, key="resolution")
    reso = tuple(_int(v, file=file, where=where, key="resolution", minimum=1, maximum=MAX_IMAGE_SIDE) for v in resolution)
    images = record["images"]
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        raise UserError("must be a non-empty list of image paths", file=file, where=where, key="images")
    version = record.get(PLANNER_VERSION_KEY)
    if version is not None:
        version = _int(version, file=file, where=where, key=PLANNER_VERSION_KEY, minimum=1, maximum=1 << 16)
    return Batch(epoch, dataset, batch, reso, tuple(images), version)  # type: ignore[arg-type]


class ScheduleFile:
    """A schedule file read in two passes, so memory follows one epoch, not the file.

    The first pass checks every line and notes where each (epoch, dataset) lies (8 bytes a batch),
    the distinct image paths (as many as the dataset has images) and the planner versions; ``read``
    then reads one (epoch, dataset) at a time. Line order does not matter. A record that repeats an
    earlier (epoch, dataset, batch) with the same resolution and images is a *repeat*: accelerate
    repeats the first batches of an epoch on a rank that has fewer, to even out several GPUs; each
    rank trained it. A repeat that differs is an error.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.offsets: dict[tuple[int, int], array] = {}  # (epoch, dataset) -> byte offset of each record
        self.line_numbers: dict[tuple[int, int], array] = {}  # and its line number, for errors
        self.versions: set[int] = set()
        self.images_by_dataset: dict[int, set[str]] = {}
        self.batch_count = 0
        self.image_count = 0
        self.unversioned = 0  # records without planner_version (written before version 2)
        try:
            handle = open(path, "rb")
        except OSError as error:
            raise UserError(f"cannot read: {error.strerror or error}", file=self.path) from None
        with handle:
            offset = 0
            for number, raw in enumerate(progress.track(handle, None, f"reading {os.path.basename(self.path)}"), 1):
                start, offset = offset, offset + len(raw)
                text = self._decode(raw, number)
                if not text.strip():
                    continue
                batch = parse_record(text, file=self.path, line=number)
                self.offsets.setdefault((batch.epoch, batch.dataset), array("q")).append(start)
                self.line_numbers.setdefault((batch.epoch, batch.dataset), array("q")).append(number)
                if batch.planner_version is not None:
                    self.versions.add(batch.planner_version)
                else:
                    self.unversioned += 1
                self.images_by_dataset.setdefault(batch.dataset, set()).update(batch.images)
                self.batch_count += 1
                self.image_count += len(batch.images)

    def _decode(self, raw: bytes, number: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError("is not UTF-8 text", file=self.path, where=f"line {number}") from None

    @property
    def epochs(self) -> list[int]:
        return sorted({epoch for epoch, _ in self.keys()})

    @property
    def datasets(self) -> list[int]:
        return sorted({dataset for _, dataset in self.keys()})

    @property
    def paths(self) -> set[str]:
        return set().union(*self.images_by_dataset.values()) if self.images_by_dataset else set()

    def keys(self) -> list[tuple[int, int]]:
        """Every (epoch, dataset) the file holds, in order."""
        return sorted(self.offsets)

    def read(self, epoch: int, dataset: int) -> tuple[list[Batch], list[Batch]]:
        """The batches of one (epoch, dataset) by batch index, and the repeats."""
        offsets = self.offsets.get((epoch, dataset))
        if offsets is None:
            return [], []
        lines = self.line_numbers[(epoch, dataset)]
        found: dict[int, Batch] = {}
        repeated: list[Batch] = []
        with open(self.path, "rb") as handle:
            for offset, number in zip(offsets, lines):
                if handle.tell() != offset:  # an epoch's lines are mostly consecutive: seek only at gaps
                    handle.seek(offset)
                batch = _parse_checked(handle.readline(), file=self.path, line=number)
                _add_or_repeat(found, repeated, batch, file=self.path, where=f"line {number}")
        return [found[i] for i in sorted(found)], repeated


_PLAIN = json.JSONDecoder()


def _parse_checked(raw: bytes, *, file: str, line: int) -> Batch:
    """A line the first pass has checked, parsed without checking again; anything unexpected (the
    file changed since) goes through the checking parser for its one-line error."""
    try:
        record = _PLAIN.decode(raw.decode("utf-8"))
        width, height = record["resolution"]
        return Batch(int(record["epoch"]), int(record["dataset"]), int(record["batch"]), (int(width), int(height)),
                     tuple(record["images"]), record.get(PLANNER_VERSION_KEY))
    except (ValueError, KeyError, TypeError):
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("is not UTF-8 text", file=file, where=f"line {line}") from None
    return parse_record(text, file=file, line=line)


def _add_or_repeat(found: dict[int, Batch], repeated: list[Batch], batch: Batch, *, file: str, where: str) -> None:
    first = found.get(batch.batch)
    if first is None:
        found[batch.batch] = batch
    elif (first.resolution, first.images) == (batch.resolution, batch.images):
        repeated.append(batch)
    else:
        raise UserError(f"epoch {batch.epoch}, dataset {batch.dataset}, batch {batch.batch} appears twice with "
                        "different images", file=file, where=where)


class BatchList:
    """Batches already in memory (tests, small tools), read like a ScheduleFile."""

    def __init__(self, batches, path: str = "(batches)"):
        self.path = path
        self._groups: dict[tuple[int, int], list[Batch]] = {}
        for batch in batches:
            self._groups.setdefault((batch.epoch, batch.dataset), []).append(batch)
        self.versions = {b.planner_version for g in self._groups.values() for b in g if b.planner_version is not None}
        self.unversioned = sum(b.planner_version is None for g in self._groups.values() for b in g)
        self.batch_count = sum(len(g) for g in self._groups.values())
        self.image_count = sum(len(b.images) for g in self._groups.values() for b in g)
        self.images_by_dataset: dict[int, set[str]] = {}
        for (_, dataset), group in self._groups.items():
            self.images_by_dataset.setdefault(dataset, set()).update(p for b in group for p in b.images)

    epochs = ScheduleFile.epochs
    datasets = ScheduleFile.datasets
    paths = ScheduleFile.paths

    def keys(self) -> list[tuple[int, int]]:
        return sorted(self._groups)

    def read(self, epoch: int, dataset: int) -> tuple[list[Batch], list[Batch]]:
        found: dict[int, Batch] = {}
        repeated: list[Batch] = []
        for batch in self._groups.get((epoch, dataset), []):
            _add_or_repeat(found, repeated, batch, file=self.path, where=f"epoch {epoch}")
        return [found[i] for i in sorted(found)], repeated
