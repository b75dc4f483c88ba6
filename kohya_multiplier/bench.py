"""Benchmark of the planner on a synthetic dataset built in memory.

    taskset -c 0 python -m kohya_multiplier.bench --images 1000000 --subsets 100 --buckets 10 --epochs 10 --batch-size 4

Prints a few human lines, then as the last line one JSON object with ``plan_seconds_per_epoch``
(median over the planned epochs), ``jump_seconds`` (a fresh planner planning epoch
``--jump-epoch`` directly, default 1000), ``pickled_mb_epoch_1`` and ``pickled_mb_after_jump``
(the planner as a DataLoader worker receives it, after epoch 1 and after the jump),
``peak_rss_mb`` (peak resident memory of this process) and ``extra_rss_mb`` (above the
interpreter with numpy imported), plus context figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import sys
import time

import numpy as np

from kohya_multiplier import rng
from kohya_multiplier.dataset.rates import DatasetRates, SubsetRate
from kohya_multiplier.dataset.schedules import Schedule
from kohya_multiplier.planner import PLANNER_VERSION, DatasetPlanner
from kohya_multiplier.planner.scheduled import ScheduledPlanner


class _CountingWriter:
    """A file that only counts the bytes written to it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n


def _pickled_size(obj) -> int:
    """Bytes ``obj`` pickles to, without holding them in memory."""
    writer = _CountingWriter()
    pickle.dump(obj, writer, protocol=pickle.HIGHEST_PROTOCOL)
    return writer.size


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_dataset(images: int, subsets: int, buckets: int, seed: int):
    """Subsets of very different sizes, a skewed bucket distribution, multipliers from 0.02 to 3."""
    gen = rng.generator(seed, rng.SYNTHETIC, images, subsets, buckets)
    weights = gen.lognormal(0.0, 1.0, subsets)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * images)).astype(np.int64)
    sizes[np.argmax(sizes)] += images - sizes.sum()
    subset_of_image = np.repeat(np.arange(subsets), sizes)
    bucket_weights = 0.6 ** np.arange(buckets)
    bucket_of_image = gen.choice(buckets, size=images, p=bucket_weights / bucket_weights.sum())
    # Aim each subset at a similar number of images per epoch, like a user balancing subjects.
    target = images / subsets * 0.3
    multipliers = np.round(np.clip(target / sizes, 0.02, 3.0), 3)
    return subset_of_image, bucket_of_image, multipliers


def scheduled_rates(multipliers, sizes) -> DatasetRates:
    """The synthetic dataset scheduled: every other subset's multiplier falls linearly to a third of
    it by epoch 500, and the last subset enters at epoch 100."""
    subsets = []
    for index, (multiplier, size) in enumerate(zip(multipliers, sizes)):
        schedule = Schedule((1, 500), (float(multiplier), float(multiplier) / 3)) if index % 2 == 0 else None
        start = 100 if index == len(multipliers) - 1 else 1
        subsets.append(SubsetRate(int(size), value=float(multiplier), schedule=schedule, start_epoch=start))
    return DatasetRates(subsets)


def _planner_factory(args, subset_of_image, bucket_of_image, multipliers):
    """A function that builds a fresh planner of the synthetic dataset (scheduled or not)."""
    if args.scheduled:
        rates = scheduled_rates(multipliers, np.bincount(subset_of_image, minlength=args.subsets))
        return lambda: ScheduledPlanner(subset_of_image, bucket_of_image, rates, args.batch_size, args.seed)
    return lambda: DatasetPlanner(subset_of_image, bucket_of_image, multipliers, args.batch_size, args.seed)


def _parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kohya_multiplier.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--buckets", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--jump-epoch", "--jump-to", dest="jump_epoch", type=int, default=1000,
                        help="epoch a fresh planner plans directly (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    parser.add_argument("--scheduled", action="store_true",
                        help="schedule the dataset (scheduled_rates): every other subset's multiplier falls to a third by "
                             "epoch 500, one subset enters at epoch 100; the total stays the first epoch's")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)

    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    baseline = _rss_mb()

    subset_of_image, bucket_of_image, multipliers = synthetic_dataset(args.images, args.subsets, args.buckets, args.seed)
    make_planner = _planner_factory(args, subset_of_image, bucket_of_image, multipliers)
    started = time.perf_counter()
    planner = make_planner()
    setup = time.perf_counter() - started

    timings = []
    planned = 0
    pickled_first = 0
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        plan = planner.plan_epoch(epoch)
        timings.append(time.perf_counter() - started)
        planned += plan.image_indices.size
        if epoch == 1:
            pickled_first = _pickled_size(planner)
    del plan

    fresh = make_planner()
    started = time.perf_counter()
    fresh.plan_epoch(args.jump_epoch)
    jump = time.perf_counter() - started
    peak = _rss_mb()  # before pickling (the pickle's own bytes are not the planner's)
    pickled_jump = _pickled_size(fresh)

    result = {
        "images": args.images,
        "subsets": args.subsets,
        "buckets": args.buckets,
        "batch_size": args.batch_size,
        "epoch_length": planner.epoch_length,
        "images_per_epoch": round(planned / args.epochs, 1),
        "setup_seconds": round(setup, 3),
        "plan_seconds_per_epoch": round(statistics.median(timings), 3),
        "jump_to_epoch": args.jump_epoch,
        "jump_seconds": round(jump, 3),
        "pickled_mb_epoch_1": round(pickled_first / 2**20, 2),
        "pickled_mb_after_jump": round(pickled_jump / 2**20, 2),
        "planner_version": PLANNER_VERSION,
        "scheduled": bool(args.scheduled),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "extra_rss_mb": round(peak - baseline, 1),
    }
    print(
        f"{args.images} images, {args.subsets} subsets, {args.buckets} buckets, batch size {args.batch_size}: "
        f"{planner.epoch_length} batches per epoch; planner pickles to {pickled_first / 2**20:.2f} MB after epoch 1, "
        f"{pickled_jump / 2**20:.2f} MB after epoch {args.jump_epoch}",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
