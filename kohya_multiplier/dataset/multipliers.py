"""The meaning of ``multiplier``: validation, precedence, folder names, ``multiply.txt`` and the
automatic multiplier of regularization subsets.

Everything here is pure (no torch, no sd-scripts) and shared by the dry run (``plan``) and the
training adapter, so both derive the same numbers from the same inputs.

Terms used below:

* A subset's *multiplier* m (a float) means: every image is trained ``floor(m)`` times per epoch,
  plus a rotating selection of about ``(m - floor(m)) x N`` further images. ``m <= 0`` excludes the
  subset.
* A subset without a multiplier keeps sd-scripts' integer ``num_repeats``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from kohya_multiplier.errors import UserError

MULTIPLY_TXT = "multiply.txt"

# Relative tolerance under which a multiplier counts as a whole number (2.9999999999 -> 3).
_INTEGER_TOLERANCE = 1e-9


# --------------------------------------------------------------------------------------------
# Describing values in messages


def describe_value(value: Any) -> str:
    """Name the TOML/JSON kind of ``value`` with the value itself, for 'must be X, not Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, str):
        return f"a string ({json.dumps(value, ensure_ascii=False)})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({format_number(value)})"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    import datetime

    if isinstance(value, (datetime.date, datetime.time, datetime.datetime)):
        return f"a date/time ({value.isoformat()})"
    return f"a {type(value).__name__}"


def format_number(value: float) -> str:
    """Show a number the way a user would write it: 0.25, 3, 1e-05, nan, inf."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


# --------------------------------------------------------------------------------------------
# Validation


def check_multiplier(value: Any, *, file: str | None, where: str | None, key: str = "multiplier") -> float:
    """Return ``value`` as a float if it is a valid multiplier, else raise a one-line UserError.

    Integers (TOML ``multiplier = 2``) and floats are accepted; booleans, strings, NaN, infinities
    and anything else are rejected. Zero and negative values are valid: they exclude the subset.

    >>> check_multiplier(2, file="d.toml", where="general")
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"must be a number, not {describe_value(value)}", file=file, where=where, key=key)
    result = float(value)
    if not math.isfinite(result):
        raise UserError(f"must be a finite number, not {format_number(result)}", file=file, where=where, key=key)
    return result


def split_multiplier(m: float) -> tuple[int, float]:
    """Split ``m`` into (integer part, fraction), robust to float noise.

    ``2.9999999999 -> (3, 0.0)``, ``3.0000000001 -> (3, 0.0)``, ``2.5 -> (2, 0.5)``,
    ``0.29 -> (0, 0.29)``. A value within a relative 1e-9 of a whole number counts as that whole
    number. ``m <= 0`` (an excluded subset) gives ``(0, 0.0)``.
    """
    m = float(m)
    if not math.isfinite(m):
        raise ValueError(f"multiplier must be finite: {m}")
    if m <= 0:
        return 0, 0.0
    nearest = round(m)
    if abs(m - nearest) <= _INTEGER_TOLERANCE * max(1.0, abs(m)):
        return int(nearest), 0.0
    whole = math.floor(m)
    return int(whole), m - whole


def split_multipliers(multipliers) -> tuple[np.ndarray, np.ndarray]:
    """split_multiplier of every value at once (whole parts as int64, fractions): the same rule,
    for a replay of a scheduled dataset, which splits every subset's rate every epoch."""
    m = np.asarray(multipliers, dtype=np.float64)
    nearest = np.rint(m)
    whole = np.abs(m - nearest) <= _INTEGER_TOLERANCE * np.maximum(1.0, np.abs(m))
    integer = np.where(whole, nearest, np.floor(m))
    fraction = np.where(whole, 0.0, m - np.floor(m))
    positive = m > 0
    return np.where(positive, integer, 0).astype(np.int64), np.where(positive, fraction, 0.0)


# --------------------------------------------------------------------------------------------
# Precedence between levels


@dataclass(frozen=True)
class RepeatSetting:
    """What a subset repeats by, after the precedence rules.

    ``multiplier`` is None when the subset keeps sd-scripts' ``num_repeats``; ``origin`` names the
    level that decided ("subset", "dataset", "general", or "" when nothing was set anywhere and
    ``num_repeats`` is the default).
    """

    multiplier: Any  # a float, a schedule (kohya_multiplier.dataset.schedules), or None
    num_repeats: int
    origin: str
    images_per_epoch: Any = None  # the deciding level's images_per_epoch (a count or a schedule); then multiplier is None


def resolve_repeat_setting(
    levels: Sequence[tuple[str, Mapping[str, Any], str | None]],
    *,
    file: str | None,
    default_num_repeats: int = 1,
    check_value=None,
) -> RepeatSetting:
    """Apply the precedence rule to ``levels``, given from most to least specific.

    Each level is ``(origin, table, where)``: origin "subset"/"dataset"/"general", the raw table as
    read from the config, and how messages name that table.

    Rule: **the most specific level that sets either ``multiplier`` or ``num_repeats`` decides.**
    So ``[general] multiplier = 0.5`` with ``num_repeats = 3`` in a subset gives that subset
    ``num_repeats = 3`` (no multiplier), and ``[general] num_repeats = 10`` with
    ``multiplier = 0.25`` in a dataset gives its subsets multiplier 0.25. This mirrors how
    sd-scripts resolves every key (subset > dataset > general) while treating the two keys as two
    spellings of one setting. When the deciding level gives a multiplier, ``num_repeats`` is
    still resolved through the levels below (as sd-scripts would), and is reported but unused.
    Setting both keys in one table is an error. ``images_per_epoch`` (a count per epoch, made a
    rate once the subset's images are known) is a third spelling of the same setting.
    ``check_value(value, file=, where=, key=)``: how a multiplier or count is read (default: a
    plain number; the reader passes one that also takes schedules).
    """
    check = check_value or check_multiplier
    decided: RepeatSetting | None = None
    num_repeats: int | None = None
    for origin, table, where in levels:
        present = [key for key in ("multiplier", "num_repeats", "images_per_epoch") if table.get(key) is not None]
        if len(present) > 1:
            raise UserError(
                f"cannot be combined with {present[1]} in the same table; use one of them",
                file=file,
                where=where,
                key=present[0],
            )
        has_r = present == ["num_repeats"]
        if has_r and num_repeats is None:
            num_repeats = check_num_repeats(table["num_repeats"], file=file, where=where)
        if decided is None and present == ["multiplier"]:
            decided = RepeatSetting(check(table["multiplier"], file=file, where=where), 0, origin)
        elif decided is None and present == ["images_per_epoch"]:
            count = check(table["images_per_epoch"], file=file, where=where, key="images_per_epoch")
            decided = RepeatSetting(None, 0, origin, images_per_epoch=count)
        elif decided is None and has_r:
            decided = RepeatSetting(None, num_repeats if num_repeats is not None else default_num_repeats, origin)
    if num_repeats is None:
        num_repeats = default_num_repeats
    if decided is None:
        return RepeatSetting(None, num_repeats, "")
    return RepeatSetting(decided.multiplier, num_repeats, decided.origin, decided.images_per_epoch)


def check_num_repeats(value: Any, *, file: str | None, where: str | None) -> int:
    """``num_repeats`` as sd-scripts' schema accepts it (an integer; a fraction gets a hint)."""
    if isinstance(value, bool):
        # sd-scripts' isinstance(int) check lets a boolean through; so do we (True == 1).
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        raise UserError(
            f"must be an integer, not {describe_value(value)}; use multiplier for fractional repeats",
            file=file,
            where=where,
            key="num_repeats",
        )
    raise UserError(f"must be an integer, not {describe_value(value)}", file=file, where=where, key="num_repeats")


# --------------------------------------------------------------------------------------------
# DreamBooth folder names

# A fractional prefix: digits with a decimal point ("0.25", "1.", ".5", "1.0").
_FRACTION = re.compile(r"[0-9]*\.[0-9]+|[0-9]+\.[0-9]*")


def parse_folder_name(name: str) -> tuple[int | None, float | None, str] | None:
    """Parse a DreamBooth folder name ``<repeats>_<class tokens>``, extended to fractions.

    Returns ``(num_repeats, None, class_tokens)`` when the prefix is an integer, exactly as
    sd-scripts reads it (``int()`` of the text before the first underscore: ``10_alice`` ->
    ``(10, None, "alice")``, ``0_x`` -> ``(0, None, "x")``, which sd-scripts skips);
    ``(None, multiplier, class_tokens)`` when it is a decimal number (``0.25_alice`` ->
    ``(None, 0.25, "alice")``, ``1.0_x`` -> ``(None, 1.0, "x")``); and None when the folder has
    no repeat prefix (sd-scripts warns about such a folder and ignores it). The class tokens are
    the rest of the name after the first underscore, underscores kept (``3_a_b`` -> ``"a_b"``);
    a name without underscore has empty class tokens (``5`` -> ``(5, None, "")``).
    """
    head, _, tail = name.partition("_")
    try:
        return int(head), None, tail
    except ValueError:
        pass
    if _FRACTION.fullmatch(head):
        return None, float(head), tail
    return None


def folder_subset_table(image_dir: str, parsed: tuple[int | None, float | None, str], is_reg: bool) -> dict | None:
    """The subset table sd-scripts makes of a parsed DreamBooth folder (``parse_folder_name``), with
    ``multiplier`` for a decimal prefix; None for an integer prefix below 1 (sd-scripts skips it)."""
    repeats, multiplier, class_tokens = parsed
    table: dict = {"image_dir": image_dir, "is_reg": is_reg, "class_tokens": class_tokens}
    if multiplier is not None:
        table["multiplier"] = multiplier
    elif repeats < 1:
        return None
    else:
        table["num_repeats"] = repeats
    return table


# --------------------------------------------------------------------------------------------
# multiply.txt


def read_multiply_txt(image_dir: str, *, file_for_errors: str | None = None) -> float | None:
    """Read EveryDream2's ``multiply.txt`` in ``image_dir``: one number, surrounding whitespace ok.

    Returns None when the folder has no ``multiply.txt``. Anything but one finite number (empty
    file, words, two numbers, NaN, unreadable bytes) raises a UserError naming the file
    (``file_for_errors``, default the file's path). Zero or a negative number is valid and
    excludes the folder.
    """
    path = os.path.join(image_dir, MULTIPLY_TXT)
    return read_number_file(path, shown=file_for_errors or path)


def read_number_file(path: str, *, shown: str) -> float | None:
    """A file holding one finite number (EveryDream2's multiply.txt, loss_scale.txt); None if absent."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(4096)
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError("must hold one number, but is not UTF-8 text", file=shown) from None
    except OSError as error:
        raise UserError(f"cannot be read: {error.strerror or error}", file=shown) from None
    stripped = text.strip()
    if not stripped:
        raise UserError("must hold one number, but is empty", file=shown)
    try:
        value = float(stripped)
    except ValueError:
        raise UserError(f"must hold one number, not {json.dumps(_shorten(stripped), ensure_ascii=False)}", file=shown) from None
    if not math.isfinite(value):
        raise UserError(f"must hold a finite number, not {json.dumps(stripped)}", file=shown)
    return value


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Regularization subsets


@dataclass(frozen=True)
class RegularizationInput:
    """One subset as the automatic regularization rule sees it.

    ``multiplier`` is the subset's explicit multiplier (None if it has none), ``num_repeats`` its
    integer repeats, ``image_count`` its number of images.
    """

    is_reg: bool
    image_count: int
    multiplier: float | None
    num_repeats: int


def auto_regularization_rate(training_per_epoch: float, explicit_regularization_per_epoch: float, auto_images: int) -> float:
    """The automatic regularization multiplier: max(0, T - R_explicit) / R_auto (0 without images).
    The one formula; ``plan``, training and ``balance`` all reach it."""
    if not auto_images:
        return 0.0
    return max(0.0, training_per_epoch - explicit_regularization_per_epoch) / auto_images


def auto_regularization_multipliers(subsets: Sequence[RegularizationInput]) -> list[float | None]:
    """Multipliers for the regularization subsets of one dataset that have none of their own.

    Returns one entry per subset: the automatic multiplier for a regularization subset without an
    explicit multiplier (and with ``num_repeats >= 1``), None for every other subset. Applies only
    when some subset of the dataset has a multiplier; otherwise all entries are None and the
    dataset is stock sd-scripts.

    With T = training images per epoch (sum over non-regularization subsets of
    effective multiplier x images, where the effective multiplier is the explicit one, or
    ``num_repeats``, and anything <= 0 counts 0), R_explicit = regularization images per epoch of
    the regularization subsets that have a multiplier, and R_auto = the number of images of the
    regularization subsets that get the automatic one:

        m_auto = max(0, T - R_explicit) / R_auto

    so regularization images per epoch equal training images per epoch and, as a fraction is
    allowed, every regularization image rotates through training.
    """
    result: list[float | None] = [None] * len(subsets)
    if not any(s.multiplier is not None for s in subsets):
        return result
    train = 0.0
    reg_explicit = 0.0
    auto_images = 0
    auto_indices = []
    for index, s in enumerate(subsets):
        if s.is_reg:
            if s.multiplier is not None:
                reg_explicit += max(0.0, s.multiplier) * s.image_count
            elif s.num_repeats >= 1:
                auto_indices.append(index)
                auto_images += s.image_count
        else:
            rate = s.multiplier if s.multiplier is not None else float(s.num_repeats)
            train += max(0.0, rate) * s.image_count
    if auto_images <= 0:
        return result
    m = auto_regularization_rate(train, reg_explicit, auto_images)
    for index in auto_indices:
        result[index] = m
    return result

