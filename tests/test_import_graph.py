"""The house's shape: no import circles, no import that runs back up a layer, torch only in the
sd-scripts adapter (scripts/import-graph.py says what the layers are)."""

from __future__ import annotations

from pathlib import Path

from dev_scripts import load_script

ROOT = Path(__file__).resolve().parent.parent


def _script():
    return load_script("import-graph.py")


def test_no_circles_no_arrow_back_up_and_no_torch_in_the_core():
    assert _script().findings(ROOT) == []


def test_the_checker_sees_a_circle_and_an_arrow_back_up():
    script = _script()
    edges = {"kohya_multiplier.dataset.a": {"kohya_multiplier.dataset.b"}, "kohya_multiplier.dataset.b": {"kohya_multiplier.dataset.a"},
             "kohya_multiplier.dataset.c": set()}
    assert script.circles(edges) == [["kohya_multiplier.dataset.a", "kohya_multiplier.dataset.b"]]
    assert script.layer_of("kohya_multiplier.dataset.config") < script.layer_of("kohya_multiplier.report.stats") \
        < script.layer_of("kohya_multiplier.checkouts.locate") < script.layer_of("kohya_multiplier.sdscripts.dataset") < script.layer_of("kohya_multiplier.cli")


def test_at_most_ten_modules_at_the_top_level():
    top = [p.name for p in (ROOT / "kohya_multiplier").glob("*.py")]
    assert len(top) <= 10, sorted(top)
