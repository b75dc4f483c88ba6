"""Round-trip editing of sd-scripts dataset TOML files (tomlkit): change values, keep the rest.

Comments, key order, quoting, indentation and blank lines survive byte for byte; only the edited
key/value lines change. A key that is replaced by another (``num_repeats`` or ``images_per_epoch``
turned into ``multiplier``) is renamed in place, keeping its position and its comment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import tomlkit
import tomlkit.exceptions
from tomlkit.items import AoT, Array, InlineTable, SingleKey, Table

from kohya_multiplier.errors import UserError


@dataclass(frozen=True)
class SubsetEdit:
    """Set ``key = value`` in ``[[datasets]]`` number ``dataset``, ``[[datasets.subsets]]`` number
    ``subset`` (both 0-based, in file order). Keys in ``replaces`` found in that table are removed;
    the first one found gives its place (and comment) to ``key`` when ``key`` is not there yet.
    ``comment`` (without ``#``) replaces the comment after the value when given; it may be a function
    of the comment found there before (on the key itself or on the key it replaces), or None."""

    dataset: int
    subset: int
    key: str
    value: Any
    replaces: tuple[str, ...] = ()
    comment: "str | Callable[[str | None], str] | None" = None


def parse(text: str, *, file: str | None = None) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as error:
        raise UserError(f"TOML syntax error at line {error.line}, column {error.col}", file=file) from None


def subset_table(doc: tomlkit.TOMLDocument, dataset: int, subset: int, *, file: str | None = None):
    """The tomlkit table (``Table`` or ``InlineTable``) of one subset."""
    where = f"datasets[{dataset}].subsets[{subset}]"
    datasets = doc.get("datasets")
    if not isinstance(datasets, (AoT, Array, list)) or dataset >= len(datasets):
        raise UserError("no such [[datasets]] table in the file", file=file, where=where)
    subsets = datasets[dataset].get("subsets") if hasattr(datasets[dataset], "get") else None
    if not isinstance(subsets, (AoT, Array, list)) or subset >= len(subsets):
        raise UserError("no such [[datasets.subsets]] table in the file", file=file, where=where)
    table = subsets[subset]
    if not isinstance(table, (Table, InlineTable)):
        raise UserError("is not a table", file=file, where=where)
    return table


def subset_tables(doc: tomlkit.TOMLDocument) -> Iterable[tuple[int, int, Any]]:
    """(dataset index, subset index, table) for every subset table in file order."""
    datasets = doc.get("datasets")
    if not isinstance(datasets, (AoT, Array, list)):
        return
    for d, dataset in enumerate(datasets):
        subsets = dataset.get("subsets") if hasattr(dataset, "get") else None
        if not isinstance(subsets, (AoT, Array, list)):
            continue
        for s, table in enumerate(subsets):
            if isinstance(table, (Table, InlineTable)):
                yield d, s, table


def value_comment(table, key: str) -> str | None:
    """The comment after ``key = value`` in a tomlkit table, without ``#``, or None."""
    if key not in table:
        return None
    item = table.item(key) if hasattr(table, "item") else table[key]
    comment = getattr(getattr(item, "trivia", None), "comment", "") or ""
    comment = comment.strip()
    return comment[1:].strip() if comment.startswith("#") else (comment or None)


def _set_comment(item, text: str) -> None:
    """Put ``# text`` after the value, keeping the old spacing before the comment if it had one."""
    trivia = item.trivia
    if not (trivia.comment or "").strip():
        trivia.comment_ws = "  "
    trivia.comment = "# " + text.replace("\n", " ").replace("\r", " ")


def _item(value: Any) -> Any:
    """A tomlkit item; a dict (a schedule) as an inline table, as a subset's value is written."""
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        table.update(value)
        return table
    return tomlkit.item(value)


def _new_item_like(value: Any, old) -> Any:
    """A tomlkit item for ``value`` carrying the old item's indentation, comment and line end."""
    item = _item(value)
    old_trivia = getattr(old, "trivia", None)
    if old_trivia is not None:
        for name in ("indent", "comment_ws", "comment", "trail"):
            setattr(item.trivia, name, getattr(old_trivia, name))
    return item


def apply_edit(doc: tomlkit.TOMLDocument, edit: SubsetEdit, *, file: str | None = None) -> None:
    table = subset_table(doc, edit.dataset, edit.subset, file=file)
    container = table.value
    present = [k for k in edit.replaces if k in table and k != edit.key]
    old_comment = value_comment(table, edit.key) if edit.key in table else None
    if old_comment is None:
        old_comment = next((value_comment(table, k) for k in present if value_comment(table, k)), None)
    if edit.key not in table and present:
        first = present.pop(0)
        old_key = next(k for k, _ in container.body if k is not None and k.key == first)
        spelled = old_key.as_string()
        new_key = SingleKey(edit.key, sep=old_key.sep, original=edit.key + spelled[len(spelled.rstrip()):])
        container._replace(first, new_key, _new_item_like(edit.value, table.item(first)))
    elif edit.key in table:
        table[edit.key] = _new_item_like(edit.value, table.item(edit.key))
    else:
        table[edit.key] = _item(edit.value)
    for key in present:
        del table[key]
    if edit.comment is not None:
        text = edit.comment(old_comment) if callable(edit.comment) else edit.comment
        _set_comment(table.item(edit.key), text)


def edit_text(text: str, edits: Sequence[SubsetEdit], *, file: str | None = None) -> str:
    """Apply ``edits`` to the TOML ``text`` and return the new text."""
    doc = parse(text, file=file)
    for edit in edits:
        apply_edit(doc, edit, file=file)
    return tomlkit.dumps(doc)


def backup_path(path: Path) -> Path:
    """``CONFIG.toml.bak``, or ``.bak.1``, ``.bak.2``... when earlier backups exist (never overwritten)."""
    candidate = path.with_name(path.name + ".bak")
    number = 0
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.bak.{number}")
    return candidate


def read_text(path: str | os.PathLike) -> str:
    """The file as text with its line endings untouched (``\\r\\n`` stays ``\\r\\n``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read: {error.strerror or error}", file=str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("is not UTF-8 text", file=str(path)) from None
