"""Errors and warnings addressed to the user.

A ``UserError`` is something the user can fix in their files or arguments. The CLI prints it as one
line (``file: table: key: message``) and exits with status 2, never with a traceback.
"""

from __future__ import annotations

import sys

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C


class UserError(Exception):
    """An error in the user's input, shown as one line naming the file, the table and the key."""

    def __init__(self, message: str, *, file: str | None = None, where: str | None = None, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.where = where
        self.key = key

    def __str__(self) -> str:
        parts = [str(p) for p in (self.file, self.where, self.key) if p]
        return safe_text(": ".join(parts + [self.message]))


_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c not in (9,)}
_CONTROL.update({10: "\\n", 13: "\\r", 127: "\\x7f"})


def safe_text(text: str) -> str:
    """``text`` printable on one line in any terminal and encodable as UTF-8: a newline or another
    control character is escaped (``\\n``), and so is a byte that was not valid UTF-8 in a file
    name (``\\xff``, kept by Python as a lone surrogate)."""
    text = str(text)
    if text.isprintable():
        return text
    try:  # an undecodable byte of a file name back to its byte, shown as \xff
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no byte stands for
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.translate(_CONTROL)


_warned: set[str] = set()
_warned_in_order: list[str] = []


def warn_once(message: str) -> None:
    """Print a warning to stderr the first time this exact message is given in this process."""
    if message in _warned:
        return
    _warned.add(message)
    _warned_in_order.append(message)
    print(f"kohya-multiplier: warning: {safe_text(message)}", file=sys.stderr)


def warnings_given() -> list[str]:
    """Every warning given so far in this process, in order (for reports that repeat them)."""
    return list(_warned_in_order)
