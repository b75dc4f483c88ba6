"""Plans are byte-identical across restructurings: `plan --schedule` of varied datasets (DreamBooth
subsets, fractional folder prefixes, multiply.txt, loss weights, regularization with and without
multipliers, fine-tuning metadata, --from-epoch jumps, a stock dataset) hashes as recorded in
tests/golden/plan_hashes.json. A change here is a new planner version (PLANNER_VERSION), never a
refactoring."""

from __future__ import annotations

import json
from pathlib import Path

from dev_scripts import load_script

from kohya_multiplier.planner import PLANNER_VERSION

ROOT = Path(__file__).resolve().parent.parent


def _script():
    return load_script("plan-hashes.py")


def test_plans_are_byte_identical_to_the_recorded_ones():
    recorded = json.loads((ROOT / "tests" / "golden" / "plan_hashes.json").read_text())
    assert PLANNER_VERSION == 2
    assert _script().plan_hashes() == recorded
