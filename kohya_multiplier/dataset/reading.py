"""Readers with bounds: JSON and TOML parsed so that no input can crash the tool.

A file nested deeper than Python can recurse (a config or metadata file of 100,000 brackets), a
``NaN`` or ``Infinity`` where sd-scripts' files hold numbers, and a number too large for any image
or epoch become one-line errors naming the file, instead of a RecursionError or an OverflowError
somewhere later.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any

from kohya_multiplier.errors import UserError

# An image side no camera or upscaler produces; sizes beyond it are corrupt metadata.
MAX_IMAGE_SIDE = 1 << 20


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number sd-scripts can use")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)  # one decoder: building one per line costs more than parsing


def parse_json(text: str, *, file: str | None, where: str | None = None, key: str | None = None) -> Any:
    """``json.loads`` without NaN/Infinity and with nesting depth bounded by the interpreter;
    a ``json.JSONDecodeError`` is left to the caller (which names the line its own way)."""
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise UserError("is nested too deeply to be a config, metadata or schedule file", file=file, where=where,
                        key=key) from None
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError):
            raise
        raise UserError(str(error), file=file, where=where, key=key) from None


def parse_toml(text: str, *, file: str | None):
    """``tomllib.loads`` with nesting depth bounded by the interpreter (TOMLDecodeError left to the caller)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        return tomllib.loads(text)
    except RecursionError:
        raise UserError("is nested too deeply to be a dataset config", file=file) from None


def image_side(value: Any) -> int | None:
    """A positive integer number of pixels (as sd-scripts' metadata holds them), at most MAX_IMAGE_SIDE; else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_IMAGE_SIDE:
        return value
    return None


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names, through links; None when it cannot be stat-ed. Two
    spellings of one file or folder (``a`` and ``a/``, a link, a hard link) have one identity."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def why_unreachable(path: str, *, what: str = "directory") -> str:
    """Why ``path`` cannot be used, in the system's words: ``directory not found`` only when it is
    not there; else the real reason (a path longer than the system allows, a permission)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return f"{what} not found"
    except OSError as error:
        detail = f" ({len(str(path))} characters)" if error.errno == errno.ENAMETOOLONG else ""
        return f"cannot be reached: {error.strerror or error}{detail}"
    except ValueError as error:
        return f"cannot be reached: {error}"
    return f"not a {what}"
