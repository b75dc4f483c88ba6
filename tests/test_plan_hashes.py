"""Plans are byte-identical across restructurings: `plan --schedule` of varied datasets (DreamBooth
subsets, fractional folder prefixes, multiply.txt, loss weights, regularization with and without
multipliers, fine-tuning metadata, --from-epoch jumps, a stock dataset) hashes as recorded in
tests/golden/plan_hashes.json. A change here is a new planner version (PLANNER_VERSION), never a
refactoring."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from kohya_multiplier.planner import PLANNER_VERSION

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("plan_hashes", ROOT / "scripts" / "plan-hashes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plans_are_byte_identical_to_the_recorded_ones():
    recorded = json.loads((ROOT / "tests" / "golden" / "plan_hashes.json").read_text())
    assert PLANNER_VERSION == 2
    assert _script().plan_hashes() == recorded
