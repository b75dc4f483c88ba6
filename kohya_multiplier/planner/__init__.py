"""The multiplier planner: a chain of small pure numpy steps.

layout (static shape of the epochs) -> credits (per-epoch allocation to buckets and cells, replayed
from epoch 1) -> rotation (which images of a cell) -> assemble (shuffle and cut into batches).
"""

from kohya_multiplier.planner.assemble import EpochPlan
from kohya_multiplier.multipliers import split_multiplier  # the one rule, re-exported for callers of the planner
from kohya_multiplier.planner.planner import DatasetPlanner, PlanSummary

__all__ = ["DatasetPlanner", "EpochPlan", "PlanSummary", "split_multiplier"]
