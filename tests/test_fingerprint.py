"""Revision detection by the code (issue 12, point 2), on small checkouts made by the test.

The real checkouts are judged in tests/integration/test_revision_by_code.py.
"""

from __future__ import annotations

from pathlib import Path

from kohya_multiplier.checkouts import fingerprint

DATASET_CODE = '''
class BaseDataset:
    def __len__(self):
        return self._length

    def make_buckets(self):
        # sort into buckets
        self._length = 3


def collator_class():
    return None


def unrelated_helper():
    return 1
'''


def library(root: Path, files: dict[str, str]) -> Path:
    (root / "library").mkdir(parents=True)
    for name, text in files.items():
        (root / "library" / name).write_text(text)
    return root


def test_comments_blank_lines_and_unrelated_code_do_not_change_the_fingerprint(tmp_path):
    base = fingerprint.fingerprint(library(tmp_path / "a", {"train_util.py": DATASET_CODE}))
    edited = DATASET_CODE.replace("        # sort into buckets\n", "\n        # a new comment\n\n")
    edited = edited.replace("return 1", "return 2") + "\n\ndef brand_new():\n    pass\n"
    assert fingerprint.fingerprint(library(tmp_path / "b", {"train_util.py": edited})) == base
    assert base["BaseDataset.__len__"] != fingerprint.MISSING and base["ConfigSanitizer"] == fingerprint.MISSING


def test_moving_code_to_another_module_keeps_its_fingerprint(tmp_path):
    base = fingerprint.fingerprint(library(tmp_path / "a", {"train_util.py": DATASET_CODE}))
    moved = fingerprint.fingerprint(
        library(tmp_path / "b", {"train_util.py": "from library.dataset import BaseDataset, collator_class\n", "dataset.py": DATASET_CODE})
    )
    assert moved == base


def test_a_change_in_hooked_code_names_the_symbol(tmp_path):
    base = fingerprint.fingerprint(library(tmp_path / "a", {"train_util.py": DATASET_CODE}))
    changed = fingerprint.fingerprint(
        library(tmp_path / "b", {"train_util.py": DATASET_CODE.replace("self._length = 3", "self._length = 4")})
    )
    assert fingerprint.differences(base, changed) == ["BaseDataset.make_buckets"]
    gone = fingerprint.fingerprint(library(tmp_path / "c", {"train_util.py": DATASET_CODE.replace("def collator_class", "def collate")}))
    assert gone["collator_class"] == fingerprint.MISSING
    assert fingerprint.differences(base, gone) == ["collator_class"]
