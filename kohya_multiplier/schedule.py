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
from typing import IO, Iterator

from kohya_multiplier.errors import UserError
from kohya_multiplier.plan_input import PlanInput
from kohya_multiplier.planner import PLANNER_VERSION, EpochPlan

PLANNER_VERSION_KEY = "planner_version"


def epoch_records(dataset_index: int, plan: EpochPlan, plan_input: PlanInput) -> Iterator[dict]:
    keys = plan_input.image_keys
    for i in range(len(plan)):
        bucket, images = plan.batch(i)
        width, height = plan_input.bucket_resolutions[bucket]
        yield {
            "epoch": plan.epoch,
            "dataset": dataset_index,
            "batch": i,
            "resolution": [width, height],
            "images": [keys[j] for j in images],
            PLANNER_VERSION_KEY: PLANNER_VERSION,
        }


def write_records(stream: IO[str], records) -> None:
    for record in records:
        stream.write(json.dumps(record, separators=(", ", ": ")))
        stream.write("\n")


def read_schedule(path: str) -> list[dict]:
    """Every record of a schedule file; a line that is not a batch record is a one-line error."""
    records = []
    try:
        with open(path, encoding="utf-8") as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise UserError(f"line {number}: not JSON ({error.msg})", file=path) from None
                if not isinstance(record, dict) or not {"epoch", "dataset", "batch", "images"} <= record.keys():
                    raise UserError(f"line {number}: not a schedule record (epoch, dataset, batch, images)", file=path)
                records.append(record)
    except OSError as error:
        raise UserError(f"cannot read: {error.strerror or error}", file=path) from None
    return records
