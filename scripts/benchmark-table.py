#!/usr/bin/env python3
"""Run the planner benchmark for the README's performance rows and print them as its Markdown table.

    python scripts/benchmark-table.py            # the README's rows (several minutes on one core)
    python scripts/benchmark-table.py --quick    # the same shapes at 1/20 of the images

Each row is one `python -m kohya_multiplier.bench` process (pinned to one core by the bench itself),
so the rows do not share memory or warm caches; the figures are the bench's own JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# (images, subsets, buckets, batch size, jump epoch): the shapes the README's table reports.
ROWS = [
    (1_000_000, 1000, 30, 1, 1000),
    (1_000_000, 1000, 30, 1, 10_000),
    (1_000_000, 100, 10, 4, 1000),
    (1_000_000, 50, 30, 4, 1000),
    (1_000_000, 25, 10, 1, 1000),
    (1_000_000, 20, 10, 8, 1000),
    (10_000_000, 100, 30, 4, 1000),
]
HEADER = (
    "| images | subsets | buckets | batch | batches per epoch | plan one epoch | jump to epoch | "
    "peak RSS (above numpy) | pickled after epoch 1 / after the jump |\n|---|---|---|---|---|---|---|---|---|"
)


def run_row(images: int, subsets: int, buckets: int, batch: int, jump: int) -> dict:
    command = [sys.executable, "-m", "kohya_multiplier.bench", "--images", str(images), "--subsets", str(subsets),
               "--buckets", str(buckets), "--batch-size", str(batch), "--epochs", "5", "--jump-epoch", str(jump)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=str(REPO_ROOT), check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def format_row(r: dict) -> str:
    return (
        f"| {r['images']:,} | {r['subsets']} | {r['buckets']} | {r['batch_size']} | {r['epoch_length']:,} | "
        f"{r['plan_seconds_per_epoch']:.3f} s | {r['jump_to_epoch']:,}: {r['jump_seconds']:.3f} s | "
        f"{r['peak_rss_mb']:.0f} ({r['extra_rss_mb']:.0f}) MB | {r['pickled_mb_epoch_1']:.2f} / {r['pickled_mb_after_jump']:.2f} MB |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/20 of the images per row (a smoke run)")
    args = parser.parse_args()
    print(HEADER)
    for images, subsets, buckets, batch, jump in ROWS:
        if args.quick:
            images = max(images // 20, subsets * 2)
        print(format_row(run_row(images, subsets, buckets, batch, jump)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
