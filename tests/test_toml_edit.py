"""Round-trip TOML editing: only the edited values change, byte for byte."""

from __future__ import annotations

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from kohya_multiplier.balance import toml_edit as te
from kohya_multiplier.commands.balance import write_with_backup
from kohya_multiplier.errors import UserError

COMMENTED = """\
# Dataset config for my LoRA.   (trailing spaces kept)   
[general]
shuffle_caption = true            # aligned comment
caption_extension = '.txt'
keep_tokens=1

[[datasets]]
resolution = [768, 512]
batch_size = 4

    # --- subjects ---
    [[datasets.subsets]]
    image_dir = "C:\\\\data\\\\alice"    # Windows path, escaped
    num_repeats   =   10     # ten
    class_tokens = "alice woman"

    [[datasets.subsets]]
    image_dir = 'train/bob'
    multiplier = 0.5 # half
    flip_aug = true


    [[datasets.subsets]]
    image_dir = "train/reg"
    is_reg = true
    # trailing comment in the table

[[datasets]]
subsets = [
  { image_dir = "more/x", num_repeats = 1 },   # inline
  { image_dir = "more/y" },
]
"""


def _changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    assert len(old_lines) == len(new_lines)
    return [(a, b) for a, b in zip(old_lines, new_lines) if a != b]


def test_changing_values_keeps_everything_else_byte_for_byte():
    edits = [
        te.SubsetEdit(0, 0, "num_repeats", 3),
        te.SubsetEdit(0, 1, "multiplier", 0.125),
    ]
    new = te.edit_text(COMMENTED, edits)
    assert _changed_lines(COMMENTED, new) == [
        ('    num_repeats   =   10     # ten\n', '    num_repeats   =   3     # ten\n'),
        ('    multiplier = 0.5 # half\n', '    multiplier = 0.125 # half\n'),
    ]


def test_renaming_a_key_in_place_keeps_position_spacing_and_comment():
    new = te.edit_text(COMMENTED, [te.SubsetEdit(0, 0, "multiplier", 0.025, replaces=("num_repeats",))])
    assert _changed_lines(COMMENTED, new) == [
        ('    num_repeats   =   10     # ten\n', '    multiplier   =   0.025     # ten\n'),
    ]
    assert tomllib.loads(new)["datasets"][0]["subsets"][0]["multiplier"] == 0.025


def test_new_key_is_added_to_its_table_only():
    new = te.edit_text(COMMENTED, [te.SubsetEdit(0, 2, "multiplier", 0.2)])
    old_lines, new_lines = COMMENTED.splitlines(keepends=True), new.splitlines(keepends=True)
    assert len(new_lines) == len(old_lines) + 1
    extra = [i for i, line in enumerate(new_lines) if line not in old_lines]
    assert [new_lines[i] for i in extra] == ["    multiplier = 0.2\n"]
    assert new_lines[: extra[0]] + new_lines[extra[0] + 1:] == old_lines
    parsed = tomllib.loads(new)
    assert parsed["datasets"][0]["subsets"][2] == {"image_dir": "train/reg", "is_reg": True, "multiplier": 0.2}


def test_inline_tables_in_an_array():
    new = te.edit_text(COMMENTED, [
        te.SubsetEdit(1, 0, "multiplier", 0.5, replaces=("num_repeats",)),
        te.SubsetEdit(1, 1, "multiplier", 2.5),
    ])
    parsed = tomllib.loads(new)
    assert parsed["datasets"][1]["subsets"] == [{"image_dir": "more/x", "multiplier": 0.5},
                                                {"image_dir": "more/y", "multiplier": 2.5}]
    assert "# inline" in new and new.startswith("# Dataset config for my LoRA.   (trailing spaces kept)   \n")


def test_replaced_keys_are_removed_and_comment_functions_see_the_old_comment():
    text = "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\nimages_per_epoch = 25  # mine\nnum_repeats = 2\n"
    seen = []
    new = te.edit_text(text, [te.SubsetEdit(0, 0, "multiplier", 0.25, replaces=("images_per_epoch", "num_repeats"),
                                            comment=lambda old: seen.append(old) or f"target; {old}")])
    assert seen == ["mine"]
    assert new == "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\nmultiplier = 0.25  # target; mine\n"


def test_crlf_line_endings_survive(tmp_path):
    text = COMMENTED.replace("\n", "\r\n")
    path = tmp_path / "c.toml"
    path.write_bytes(text.encode())
    loaded = te.read_text(path)
    assert loaded == text
    new = te.edit_text(loaded, [te.SubsetEdit(0, 1, "multiplier", 0.75)])
    write_with_backup(path, new)
    data = path.read_bytes()
    assert data.count(b"\r\n") == text.count("\r\n") and b"multiplier = 0.75 # half\r\n" in data


def test_write_with_backup_never_overwrites_a_backup(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("a = 1\n")
    first = write_with_backup(path, "a = 2\n")
    second = write_with_backup(path, "a = 3\n")
    assert first.name == "config.toml.bak" and first.read_text() == "a = 1\n"
    assert second.name == "config.toml.bak.1" and second.read_text() == "a = 2\n"
    assert path.read_text() == "a = 3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "config.toml.bak", "config.toml.bak.1"]


def test_errors_are_one_line():
    with pytest.raises(UserError) as error:
        te.edit_text("[[datasets]\n", [], file="x.toml")
    assert str(error.value).startswith("x.toml: TOML syntax error at line 1")
    with pytest.raises(UserError) as error:
        te.edit_text(COMMENTED, [te.SubsetEdit(0, 7, "multiplier", 1.0)], file="x.toml")
    assert str(error.value) == "x.toml: datasets[0].subsets[7]: no such [[datasets.subsets]] table in the file"
    with pytest.raises(UserError):
        te.read_text("/nonexistent/file.toml")


def test_subset_tables_and_value_comment():
    doc = te.parse(COMMENTED)
    positions = [(d, s) for d, s, _ in te.subset_tables(doc)]
    assert positions == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    table = te.subset_table(doc, 0, 1)
    assert te.value_comment(table, "multiplier") == "half"
    assert te.value_comment(table, "flip_aug") is None
    assert te.value_comment(table, "absent") is None
