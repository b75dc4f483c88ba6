"""An epoch's batches: bucket lists shuffled and cut, then the batch order shuffled.

Every batch holds images of one bucket (at most batch_size, at least one). A bucket's base
batches take its integer-part appearances plus the picks placed in their free slots; its extra
batches take the rest of its fractional picks.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from kohya_multiplier import rng
from kohya_multiplier.planner.credits import EpochAllocation
from kohya_multiplier.planner.layout import DatasetLayout


@dataclass(frozen=True)
class EpochPlan:
    """One epoch: batch i holds ``image_indices[batch_offsets[i]:batch_offsets[i+1]]``, all of bucket ``batch_bucket[i]``."""

    epoch: int
    batch_bucket: np.ndarray
    batch_offsets: np.ndarray
    image_indices: np.ndarray

    def __len__(self) -> int:
        return int(self.batch_bucket.size)

    def batch(self, index: int) -> tuple[int, np.ndarray]:
        return int(self.batch_bucket[index]), self.image_indices[self.batch_offsets[index] : self.batch_offsets[index + 1]]

    @property
    def batches(self) -> list[tuple[int, np.ndarray]]:
        return [self.batch(index) for index in range(len(self))]


def assemble_epoch(
    layout: DatasetLayout, seed: int, epoch: int, allocation: EpochAllocation, fractional_by_bucket: list[np.ndarray],
    batches: int | None = None,
) -> EpochPlan:
    """``batches``: split the largest batches until the epoch has that many (a scheduled dataset's
    constant length, in an epoch whose picks need fewer)."""
    bucket_of_batch, sizes, lists = [], [], []
    for bucket in range(layout.n_buckets):
        images = np.concatenate([layout.integer_lists[bucket], fractional_by_bucket[bucket]])
        if images.size == 0:
            continue
        images = images[rng.generator(seed, rng.BUCKET_SHUFFLE, epoch, bucket).permutation(images.size)]
        base = int(layout.base_batches[bucket])
        bucket_sizes = [layout.batch_size] * base
        if base:
            bucket_sizes[-1] = layout.integer_lists[bucket].size + int(allocation.free_picks[bucket]) - (base - 1) * layout.batch_size
        bucket_sizes.extend(allocation.extra_batch_sizes(bucket))
        assert sum(bucket_sizes) == images.size, "planner invariant broken: batch sizes do not add up"
        bucket_of_batch.extend([bucket] * len(bucket_sizes))
        sizes.extend(bucket_sizes)
        lists.append(images)
    if batches is not None and batches != len(sizes):
        sizes, bucket_of_batch = split_batches(sizes, bucket_of_batch, batches)
    sizes = np.asarray(sizes, dtype=np.int64)
    bucket_of_batch = np.asarray(bucket_of_batch, dtype=np.int64)
    flat = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.cumsum(sizes)[:-1]] if sizes.size else np.zeros(0, dtype=np.int64)

    order = rng.generator(seed, rng.BATCH_ORDER, epoch).permutation(sizes.size)
    new_sizes = sizes[order]
    offsets = np.r_[0, np.cumsum(new_sizes)].astype(np.int64)
    gather = np.repeat(starts[order] - offsets[:-1], new_sizes) + np.arange(flat.size)
    return EpochPlan(epoch, bucket_of_batch[order], offsets, flat[gather])


def split_batches(sizes: list[int], bucket_of_batch: list[int], batches: int) -> tuple[np.ndarray, np.ndarray]:
    """Split batches into near-equal pieces until there are ``batches``: always the batch whose
    pieces are largest (ties: the first), so the epoch's batches stay as even as they can."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if batches < sizes.size or batches > int(sizes.sum()):
        raise ValueError(f"planner invariant broken: {int(sizes.sum())} images cannot fill {batches} batches of at least one")
    pieces = np.ones(sizes.size, dtype=np.int64)
    heap = [(-int(size), index) for index, size in enumerate(sizes.tolist()) if size > 1]
    heapq.heapify(heap)
    for _ in range(batches - sizes.size):
        _, index = heapq.heappop(heap)
        pieces[index] += 1
        heapq.heappush(heap, ((-int(sizes[index])) // int(pieces[index]), index))  # minus the largest piece
    small, larger = np.divmod(sizes, pieces)
    owner = np.repeat(np.arange(sizes.size), pieces)
    rank = np.arange(owner.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)  # a piece's place in its batch
    new_sizes = small[owner] + (rank < larger[owner])  # the larger pieces first
    return new_sizes, np.asarray(bucket_of_batch, dtype=np.int64)[owner]
