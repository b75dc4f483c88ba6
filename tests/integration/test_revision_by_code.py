"""Issue 12, point 2: a checkout is judged by its hooked code, not by its commit.

For every configured checkout: a copy without git (a zip download), a re-created git history (a new
commit hash) and a copy with unrelated code changed are all recognised as the tested revision they
are; a copy whose hooked code differs is untested, the verdict names what differs, and `patch`
refuses it with one line that says so (and applies with --force).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kohya_multiplier.checkouts import locate

pytestmark = pytest.mark.integration


def _copy(sd, target: Path) -> Path:
    shutil.copytree(Path(sd.root) / "library", target / "library", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout


def _defining_file(root: Path, class_name: str) -> Path:
    for path in sorted((root / "library").glob("*.py")):
        if f"class {class_name}(" in path.read_text(encoding="utf-8"):
            return path
    raise AssertionError(f"no file defines {class_name}")


def _edit_method(path: Path, class_name: str, method: str, new_body_line: str) -> None:
    """Replace the first body line of class_name.method (a change in hooked code)."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    function = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method)
    lines = text.splitlines(keepends=True)
    first = function.body[0]
    indent = lines[first.lineno - 1][: len(lines[first.lineno - 1]) - len(lines[first.lineno - 1].lstrip())]
    lines[first.lineno - 1 : first.end_lineno] = [indent + new_body_line + "\n"]
    path.write_text("".join(lines), encoding="utf-8")


def test_a_copy_without_git_and_a_new_history_are_the_tested_revision(sd, tmp_path):
    expected = sd.revision.nearest
    assert sd.revision.tested and expected
    copy = _copy(sd, tmp_path / "zip")
    verdict = locate.detect_revision(copy)
    assert verdict.tested and verdict.nearest == expected and verdict.commit is None
    _git(copy, "init", "-q")
    _git(copy, "add", ".")
    _git(copy, "commit", "-qm", "re-created history")
    verdict = locate.detect_revision(copy)
    assert verdict.tested and verdict.nearest == expected
    assert verdict.commit != sd.revision.commit and f"{expected} code at" in verdict.name
    # a local commit of unrelated code on top
    util = copy / "library" / "train_util.py"
    util.write_text(util.read_text(encoding="utf-8") + "\n\ndef my_local_helper():\n    return 42\n", encoding="utf-8")
    _git(copy, "commit", "-qam", "local helper")
    assert locate.detect_revision(copy).tested


def test_changed_hooked_code_is_untested_and_named(sd, tmp_path):
    copy = _copy(sd, tmp_path / "fork")
    _edit_method(_defining_file(copy, "BaseDataset"), "BaseDataset", "__len__", "return int(self._length)")
    verdict = locate.detect_revision(copy)
    assert verdict.supported and not verdict.tested
    assert verdict.differs == ("BaseDataset.__len__",) and verdict.nearest == sd.revision.nearest
    assert "BaseDataset.__len__" in verdict.verdict()
    refused = subprocess.run([sys.executable, "-m", "kohya_multiplier", "patch", str(copy)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "is not a tested revision" in line and "BaseDataset.__len__" in line and "--force" in line
    forced = subprocess.run([sys.executable, "-m", "kohya_multiplier", "patch", str(copy), "--force"], capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr
