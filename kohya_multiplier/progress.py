"""A tiny progress bar on stderr for long steps (reading image headers, planning many epochs).

Quiet unless stderr is a terminal, so logs, pipes, CI and tests see nothing. Two ways to use it:

    for item in progress.track(items, total=len(items), label="reading images"):
        ...

    with progress.Progress(total=epochs, label="planning") as bar:
        for epoch in ...:
            ...
            bar.advance()

``KOHYA_MULTIPLIER_PROGRESS=0`` turns it off, ``=1`` forces it on (even without a terminal).
Redraws at most ten times a second; the bar line is erased when the step ends.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Iterable, Iterator, TypeVar

T = TypeVar("T")

_WIDTH = 24
_INTERVAL = 0.1


def enabled_for(stream: IO[str] | None) -> bool:
    """Whether a bar would be drawn on ``stream`` (default stderr)."""
    setting = os.environ.get("KOHYA_MULTIPLIER_PROGRESS", "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress bar for ``total`` units of work (``None``: unknown total, counts only)."""

    def __init__(self, total: int | None = None, label: str = "", *, stream: IO[str] | None = None,
                 enabled: bool | None = None, min_seconds: float = 0.5):
        self.total = None if total is None else max(int(total), 0)
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled_for(self.stream) if enabled is None else enabled
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._min_seconds = min_seconds  # draw nothing for steps that finish sooner than this
        self._drawn = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < self._min_seconds or now - self._last < _INTERVAL:
            return
        self._last = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self._start
        label = f"{self.label}: " if self.label else ""
        if self.total:
            share = min(self.done / self.total, 1.0)
            filled = int(share * _WIDTH)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            eta = ""
            if 0 < self.done < self.total:
                eta = f" ~{_seconds(elapsed * (self.total - self.done) / self.done)} left"
            text = f"{label}[{bar}] {self.done}/{self.total} {share:4.0%}{eta}"
        else:
            text = f"{label}{self.done} ({_seconds(elapsed)})"
        try:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False
            return
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable[T], total: int | None = None, label: str = "", *,
          stream: IO[str] | None = None, enabled: bool | None = None) -> Iterator[T]:
    """Yield the items of ``iterable`` while drawing a bar (``total`` defaults to ``len()``)."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = Progress(total, label, stream=stream, enabled=enabled)
    try:
        for item in iterable:
            yield item
            bar.advance()
    finally:
        bar.close()


def _seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
