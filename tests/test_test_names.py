"""pytest (rootdir-relative imports, no __init__.py) cannot collect two test modules with one name:
the whole run stops at collection. Keep every test module's file name unique under tests/."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_module_names_are_unique():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1]
