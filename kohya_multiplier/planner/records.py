"""A schedule record: one planned batch as a line of a schedule file. The one place its fields and
their order are decided; the dry run and training write the same lines, and
``kohya_multiplier.report.schedule`` reads them back."""

from __future__ import annotations

from kohya_multiplier.planner.planner import PLANNER_VERSION

PLANNER_VERSION_KEY = "planner_version"


def batch_record(epoch: int, dataset: int, batch: int, resolution: tuple[int, int], images: list[str], *,
                 planned: bool = True) -> dict:
    """``planned``: the planner made it (its version is recorded); a stock sd-scripts batch
    recorded in training has none."""
    record = {"epoch": int(epoch), "dataset": int(dataset), "batch": int(batch),
              "resolution": [int(resolution[0]), int(resolution[1])], "images": list(images)}
    if planned:
        record[PLANNER_VERSION_KEY] = PLANNER_VERSION
    return record
