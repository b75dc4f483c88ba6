"""The planner's input in one canonical order, shared by the dry run and by training.

The dry run and the training adapter must hand the planner identical arrays, or the same seed would
plan different epochs. Both go through :func:`build_plan_input`: images of the subsets that take
part (multiplier > 0), ordered by subset index, then image path; buckets numbered in sorted
(width, height) order, as sd-scripts' BucketManager.sort() numbers them. Subset indices are
positions in the dataset's subset list, excluded subsets included, so multipliers line up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # config imports nothing from here; keep the arrow one way at run time too
    from kohya_multiplier.config import DatasetSpec
    from kohya_multiplier.planner import DatasetPlanner

Resolution = tuple[int, int]


@dataclass(frozen=True)
class PlanInput:
    image_keys: list[str]  # absolute image paths, canonical order
    subset_of_image: np.ndarray  # (N,) subset index of each image
    bucket_of_image: np.ndarray  # (N,) bucket index of each image
    bucket_resolutions: list[Resolution]  # bucket index -> (width, height)

    def __len__(self) -> int:
        return len(self.image_keys)


def build_plan_input(entries: Iterable[tuple[int, str, Resolution]]) -> PlanInput:
    """entries: (subset index, absolute image path, bucket resolution) for every image that takes part."""
    ordered = sorted((int(s), str(key), (int(r[0]), int(r[1]))) for s, key, r in entries)
    resolutions = sorted({r for _, _, r in ordered})
    bucket_id = {r: i for i, r in enumerate(resolutions)}
    return PlanInput(
        image_keys=[key for _, key, _ in ordered],
        subset_of_image=np.array([s for s, _, _ in ordered], dtype=np.int64),
        bucket_of_image=np.array([bucket_id[r] for _, _, r in ordered], dtype=np.int64),
        bucket_resolutions=resolutions,
    )


def plan_input_for_dataset(dataset: "DatasetSpec") -> PlanInput:
    """The plan input of a dataset read by kohya_multiplier.config (bucket rules of the dataset)."""
    entries = [(i, image.path) for i, subset in enumerate(dataset.subsets) if not subset.excluded for image in subset.images]
    images = [image for subset in dataset.subsets if not subset.excluded for image in subset.images]
    if not images:
        return build_plan_input([])
    widths = np.array([image.width for image in images])
    heights = np.array([image.height for image in images])
    bucket_of_image, resolutions = dataset.bucket_layout().assign_ids(widths, heights, paths=[image.path for image in images])
    return build_plan_input(
        (subset, path, tuple(resolutions[b])) for (subset, path), b in zip(entries, bucket_of_image)
    )


def dataset_multipliers(dataset: "DatasetSpec") -> list[float]:
    return [subset.effective_multiplier for subset in dataset.subsets]


def planner_for_dataset(dataset: "DatasetSpec", seed: int) -> tuple["DatasetPlanner", PlanInput]:
    from kohya_multiplier.planner import DatasetPlanner

    plan_input = plan_input_for_dataset(dataset)
    planner = DatasetPlanner(
        plan_input.subset_of_image, plan_input.bucket_of_image, dataset_multipliers(dataset), dataset.batch_size, seed
    )
    return planner, plan_input


def planner_seed(seed: int | None) -> int:
    """The planner's seed: the user's --seed, else 0 — the same on every rank and worker.

    sd-scripts' own dataset seed cannot be used: without --seed, train_network draws a different
    one on every GPU.
    """
    return 0 if seed is None else int(seed) % (1 << 64)


__all__: Sequence[str] = ["PlanInput", "build_plan_input", "plan_input_for_dataset", "planner_for_dataset", "planner_seed"]
