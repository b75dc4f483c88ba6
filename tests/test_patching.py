"""`kohya-multiplier patch|unpatch|status` mechanics on a small git checkout laid out like sd-scripts.

The real checkouts (main and v0.9.1) are patched, trained and unpatched in
tests/integration/test_patched_checkout.py; here the mechanics are checked without sd-scripts.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from kohya_multiplier.checkouts import patching

TAIL = '    logger.info("[blueprint]")\n    logger.info(f"{blueprint}")\n'


def run_cli(*args: str):
    return subprocess.run([sys.executable, "-m", "kohya_multiplier", *args], capture_output=True, text=True, timeout=60)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def checkout(tmp_path) -> Path:
    root = tmp_path / "sd-scripts"
    (root / "library").mkdir(parents=True)
    (root / "library" / "train_util.py").write_text("# training utilities\n")
    (root / "library" / "strategy_base.py").write_text("# strategies\n")
    (root / "library" / "config_util.py").write_text(
        "class ConfigSanitizer:\n    SUBSET_ASCENDABLE_SCHEMA = {}\n    validation_split = None\n\n\n"
        'if __name__ == "__main__":\n' + TAIL
    )
    git(root, "init", "-q")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return root


def test_patch_then_unpatch_restores_the_tree(checkout):
    original = (checkout / "library" / "config_util.py").read_text()
    result = run_cli("patch", str(checkout), "--force")  # a made-up commit is an untested revision
    assert result.returncode == 0, result.stderr
    patched = (checkout / "library" / "config_util.py").read_text()
    assert patched.startswith(original)
    assert "from kohya_multiplier.sdscripts.hook import activate" in patched
    assert git(checkout, "status", "--porcelain").strip() == "M library/config_util.py"
    result = run_cli("unpatch", str(checkout))
    assert result.returncode == 0, result.stderr
    assert (checkout / "library" / "config_util.py").read_text() == original
    assert git(checkout, "status", "--porcelain").strip() == ""


def test_patching_twice_and_unpatching_an_unpatched_tree_are_no_ops(checkout):
    assert run_cli("patch", str(checkout), "--force").returncode == 0
    once = (checkout / "library" / "config_util.py").read_text()
    again = run_cli("patch", str(checkout), "--force")
    assert again.returncode == 0 and "already patched" in again.stdout
    assert (checkout / "library" / "config_util.py").read_text() == once
    assert run_cli("unpatch", str(checkout)).returncode == 0
    second = run_cli("unpatch", str(checkout))
    assert second.returncode == 0 and "not patched; nothing to do" in second.stdout


def test_untested_revision_is_refused_without_force(checkout):
    result = run_cli("patch", str(checkout))
    assert result.returncode == 2
    assert "is not a tested revision" in result.stderr and "--force" in result.stderr
    assert "hooked code differs from" in result.stderr  # says what differs, never "not tested ... (tested: ...)"
    assert len(result.stderr.strip().splitlines()) == 1
    assert git(checkout, "status", "--porcelain").strip() == ""


def test_dirty_checkout_is_refused_without_force(checkout, monkeypatch, capsys):
    from kohya_multiplier.cli import main
    from kohya_multiplier.checkouts import locate

    real = locate.detect_revision
    monkeypatch.setattr(locate, "detect_revision", lambda root: dataclasses.replace(real(root), tested=True))
    (checkout / "library" / "train_util.py").write_text("# changed\n")
    assert main(["patch", str(checkout)]) == 2
    error = capsys.readouterr().err
    assert "local changes (library/train_util.py)" in error and "--force" in error
    assert "kohya_multiplier" not in (checkout / "library" / "config_util.py").read_text()
    assert main(["patch", str(checkout), "--force"]) == 0
    assert "kohya_multiplier" in (checkout / "library" / "config_util.py").read_text()


def test_modified_file_is_never_half_patched(checkout, monkeypatch):
    target = checkout / "library" / "config_util.py"
    target.write_text(target.read_text().replace('logger.info(f"{blueprint}")', "print(blueprint)"))
    before = target.read_text()
    result = run_cli("patch", str(checkout), "--force")
    assert result.returncode == 2
    assert "nothing was changed" in result.stderr
    assert target.read_text() == before


def test_all_hunks_are_located_before_any_file_is_written(checkout, monkeypatch):
    (checkout / "library" / "train_util.py").write_text("a\nb\n")
    diff = (
        "--- a/library/train_util.py\n+++ b/library/train_util.py\n@@ -1,2 +1,3 @@\n a\n+inserted\n b\n"
        "--- a/library/config_util.py\n+++ b/library/config_util.py\n@@ -1 +1,2 @@\n no such line\n+x\n"
    )
    monkeypatch.setattr(patching, "patch_text", lambda name: diff)
    with pytest.raises(Exception, match="does not match"):
        patching.apply(checkout, "test.diff")
    assert (checkout / "library" / "train_util.py").read_text() == "a\nb\n"


def test_status_reports_state_revision_and_loaded_package(checkout):
    result = run_cli("status", str(checkout))
    assert result.returncode == 0
    assert "patch:     unpatched" in result.stdout
    assert "revision:" in result.stdout and "untested: its hooked code differs from" in result.stdout
    assert "loads:     kohya-multiplier" in result.stdout
    run_cli("patch", str(checkout), "--force")
    assert "patch:     patched" in run_cli("status", str(checkout)).stdout


def test_shipped_patches_parse_and_only_add_lines():
    for name in patching.PATCH_FOR_LAYOUT.values():
        files = patching.parse_unified_diff(patching.patch_text(name))
        assert [f.path for f in files] == ["library/config_util.py"]
        (hunk,) = files[0].hunks
        assert hunk.new[: len(hunk.old)] == hunk.old  # nothing removed or changed
        assert len(hunk.new) - len(hunk.old) <= 10


def test_hook_strips_the_schedule_option_from_argv():
    from kohya_multiplier.sdscripts.hook import _take_schedule_option

    argv = ["train_network.py", "--multiplier_schedule", "s.jsonl", "--seed", "1"]
    assert _take_schedule_option(argv) == "s.jsonl"
    assert argv == ["train_network.py", "--seed", "1"]
    argv = ["x.py", "--multiplier_schedule=t.jsonl"]
    assert _take_schedule_option(argv) == "t.jsonl" and argv == ["x.py"]
    assert _take_schedule_option(["x.py"]) is None
