"""What a wrapped training run prints at start, for either trainer: the dry run's notes and
balance table, once, before the trainer loads a model."""

from __future__ import annotations

import sys
from typing import Any

from kohya_multiplier.planner.dataset_plan import DatasetPlan
from kohya_multiplier.report.distortion import warn_distortions
from kohya_multiplier.report.stats import collect_stats, format_table

# Epochs of the table when --max_train_epochs does not say (the dry run's default), and at most.
DEFAULT_TABLE_EPOCHS = 10
MAX_TABLE_EPOCHS = 100


def print_balance(config, seed: int, max_train_epochs: Any, *, seed_given: bool) -> dict[int, DatasetPlan]:
    """Print the notes and each dataset's table; {dataset index: its plan}, for the run to train."""
    epochs = max(1, min(int(max_train_epochs or DEFAULT_TABLE_EPOCHS), MAX_TABLE_EPOCHS))
    for note in config.notes:
        print(f"kohya-multiplier: {note}")
    print(f"kohya-multiplier: seed {seed}{'' if seed_given else ' (no --seed given)'}; balance of epochs 1-{epochs}:")
    plans = {}
    for dataset in config.datasets:
        plans[dataset.index] = plan = DatasetPlan(dataset, seed)
        stats = collect_stats(plan, range(1, epochs + 1))
        warn_distortions(stats)  # once, before its table (kohya_multiplier.report.distortion)
        print(format_table(stats))
    sys.stdout.flush()
    return plans
