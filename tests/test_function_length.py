"""No function of the package grows past 60 lines (the restructuring issue's limit): a reader sees
each one whole. Counted from ``def`` to its last line, docstring included (decorators not)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kohya_multiplier"
LIMIT = 60


def test_no_function_is_longer_than_the_limit():
    long = []
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 50, f"the package's modules were not found under {PACKAGE}"
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)
