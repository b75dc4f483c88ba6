"""The multiplier planner: a chain of small pure numpy steps.

layout (static shape of the epochs) -> sizing (extra batches K) -> credits (per-epoch allocation to
cells and batches, replayed from epoch 1) -> rotation (which images of a cell, through keyed
permutations) -> assemble (shuffle and cut into batches).
"""

from kohya_multiplier.planner.assemble import EpochPlan
from kohya_multiplier.dataset.multipliers import split_multiplier  # the one rule, re-exported for callers of the planner
from kohya_multiplier.planner.planner import PLANNER_VERSION, DatasetPlanner, PlanSummary

__all__ = ["PLANNER_VERSION", "DatasetPlanner", "EpochPlan", "PlanSummary", "split_multiplier"]
