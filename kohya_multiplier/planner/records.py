"""A schedule record: one planned batch as a line of a schedule file. The one place its fields and
their order are decided; the dry run and training write the same lines, and
``kohya_multiplier.report.schedule`` reads them back."""

from __future__ import annotations

from kohya_multiplier.planner.planner import PLANNER_VERSION

PLANNER_VERSION_KEY = "planner_version"
LOSS_WEIGHTS_KEY = "loss_weights"


def batch_record(epoch: int, dataset: int, batch: int, resolution: tuple[int, ...], images: list[str], *,
                 planned: bool = True, loss_weights: list[float] | None = None) -> dict:
    """``planned``: the planner made it (its version is recorded); a stock sd-scripts batch
    recorded in training has none. ``loss_weights``: each image's loss weight, in a dataset that
    has some other than 1 (the dry run's from the config, training's as applied to the loss)."""
    record = {"epoch": int(epoch), "dataset": int(dataset), "batch": int(batch),
              "resolution": [int(side) for side in resolution], "images": list(images)}
    if planned:
        record[PLANNER_VERSION_KEY] = PLANNER_VERSION
    if loss_weights is not None:
        record[LOSS_WEIGHTS_KEY] = [float(w) for w in loss_weights]
    return record
