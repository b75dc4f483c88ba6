"""The planner's input in one canonical order, shared by the dry run and by training.

The dry run and the training adapter must hand the planner identical arrays, or the same seed would
plan different epochs. Both go through :func:`build_plan_input`: images of the subsets that take
part (multiplier > 0), ordered by subset index, then image path; buckets numbered in sorted
(width, height) order, as sd-scripts' BucketManager.sort() numbers them. Subset indices are
positions in the dataset's subset list, excluded subsets included, so multipliers line up.

A dataset without any multiplier ("stock") also carries each image's integer repeats, as stock
sd-scripts registers them (kohya_multiplier.dataset.regularization: regularization images of one subset
may get k or k+1 repeats, or none, and then they are not in the plan input at all, as sd-scripts
never registers them). The planner then uses those repeats instead of the subsets' num_repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # config imports nothing from here; keep the arrow one way at run time too
    from kohya_multiplier.dataset.types import DatasetSpec
    from kohya_multiplier.planner import DatasetPlanner

Resolution = tuple[int, ...]  # (width, height); a musubi-tuner clip's bucket adds its frames


@dataclass(frozen=True)
class PlanInput:
    image_keys: list[str]  # absolute image paths, canonical order
    subset_of_image: np.ndarray  # (N,) subset index of each image
    bucket_of_image: np.ndarray  # (N,) bucket index of each image
    bucket_resolutions: list[Resolution]  # bucket index -> (width, height)
    # (N,) integer repeats of each image (stock datasets); None: from the subsets' multipliers
    image_repeats: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_keys)

    @property
    def stock(self) -> bool:
        """Whether the images carry their own repeats (a dataset without multipliers)."""
        return self.image_repeats is not None


def build_plan_input(entries: Iterable[tuple]) -> PlanInput:
    """entries: (subset index, absolute image path, bucket resolution) for every image that takes
    part, or (subset index, path, resolution, repeats) for every image of a stock dataset that
    sd-scripts registers (repeats >= 1, as sd-scripts' ImageInfo.num_repeats). All entries of one
    call have the same form."""
    ordered = sorted(
        (int(entry[0]), str(entry[1]), tuple(int(side) for side in entry[2])) if len(entry) == 3
        else (int(entry[0]), str(entry[1]), tuple(int(side) for side in entry[2]), *(int(repeats) for repeats in entry[3:4]))
        for entry in entries
    )
    arities = {len(entry) for entry in ordered}
    if len(arities) > 1:
        raise ValueError("entries mix (subset, path, resolution) and (subset, path, resolution, repeats)")
    with_repeats = arities == {4}
    resolutions = sorted({entry[2] for entry in ordered})
    bucket_id = {resolution: bucket for bucket, resolution in enumerate(resolutions)}
    return PlanInput(
        image_keys=[entry[1] for entry in ordered],
        subset_of_image=np.array([entry[0] for entry in ordered], dtype=np.int64),
        bucket_of_image=np.array([bucket_id[entry[2]] for entry in ordered], dtype=np.int64),
        bucket_resolutions=resolutions,
        image_repeats=np.array([entry[3] for entry in ordered], dtype=np.int64) if with_repeats else None,
    )


def plan_input_for_dataset(dataset: "DatasetSpec") -> PlanInput:
    """The plan input of a dataset read by kohya_multiplier.dataset.config (bucket rules of the dataset).

    For a stock dataset (no multiplier anywhere in it), each image carries sd-scripts' own repeats,
    and regularization images sd-scripts never registers are left out.
    """
    from kohya_multiplier.dataset.regularization import stock_image_repeats

    per_subset = stock_image_repeats(dataset)
    entries, images, decided = [], [], []
    for i, subset in enumerate(dataset.subsets):
        if subset.excluded:
            continue
        for k, image in enumerate(subset.images):
            if per_subset is None:
                entries.append((i, image.path))
            elif per_subset[i][k] > 0:
                entries.append((i, image.path, int(per_subset[i][k])))
            else:
                continue
            images.append(image)
            decided.append(subset.image_buckets[k] if subset.image_buckets is not None else None)
    if not images:
        return build_plan_input([]) if per_subset is None else _empty_stock_input()
    if all(bucket is not None for bucket in decided):  # the reader decided each image's bucket
        return build_plan_input((entry[0], entry[1], bucket, *entry[2:]) for entry, bucket in zip(entries, decided))
    bucket_of_image, resolutions = dataset_bucket_ids(dataset, images)
    return build_plan_input(
        (entry[0], entry[1], tuple(resolutions[b]), *entry[2:]) for entry, b in zip(entries, bucket_of_image)
    )


def dataset_bucket_ids(dataset: "DatasetSpec", images: Sequence) -> tuple[np.ndarray, list[Resolution]]:
    """Each image's bucket (index into the returned resolutions), as sd-scripts buckets the dataset:
    by its bucket options, or (sd-scripts <= v0.9 fine-tuning, every image with a train_resolution)
    each image in the bucket of its own train_resolution."""
    if dataset.predefined_buckets:
        resolutions = sorted({(image.width, image.height) for image in images})
        bucket_id = {r: i for i, r in enumerate(resolutions)}
        return np.array([bucket_id[(image.width, image.height)] for image in images], dtype=np.int64), resolutions
    widths = np.fromiter((image.width for image in images), dtype=np.int64, count=len(images))
    heights = np.fromiter((image.height for image in images), dtype=np.int64, count=len(images))
    return dataset.bucket_layout().assign_ids(widths, heights, paths=[image.path for image in images])


def _empty_stock_input() -> PlanInput:
    empty = build_plan_input([])
    return PlanInput(empty.image_keys, empty.subset_of_image, empty.bucket_of_image, [], np.zeros(0, dtype=np.int64))


def dataset_multipliers(dataset: "DatasetSpec") -> list[float]:
    return [subset.effective_multiplier for subset in dataset.subsets]


def planner_from_input(plan_input: PlanInput, multipliers: Sequence[float], batch_size: int, seed: int) -> "DatasetPlanner":
    """The planner of a plan input: the one way the dry run and training construct it."""
    from kohya_multiplier.planner import DatasetPlanner

    return DatasetPlanner(
        plan_input.subset_of_image, plan_input.bucket_of_image, multipliers, batch_size, seed, plan_input.image_repeats
    )


def planner_for_dataset(dataset: "DatasetSpec", seed: int) -> tuple["DatasetPlanner", PlanInput]:
    plan_input = plan_input_for_dataset(dataset)
    return planner_from_input(plan_input, dataset_multipliers(dataset), dataset.batch_size, seed), plan_input


def planner_seed(seed: int | None) -> int:
    """The planner's seed: the user's --seed, else 0 — the same on every rank and worker.

    sd-scripts' own dataset seed cannot be used: without --seed, train_network draws a different
    one on every GPU.
    """
    return 0 if seed is None else int(seed) % (1 << 64)


__all__: Sequence[str] = [
    "PlanInput", "dataset_bucket_ids", "build_plan_input", "plan_input_for_dataset", "planner_for_dataset", "planner_from_input", "planner_seed",
]
