"""Progress for people: times as clocks, and a progress line on stderr for the CLI.

Stdlib only, shared by the app (``ui``: clocks in progress bars) and the command line
(``train`` and the experiment subcommands), so both say "about 1:23 left" the same way.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def clock(seconds: float) -> str:
    """``83.4`` -> ``"1:23"``, ``3725`` -> ``"1:02:05"``."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def eta(elapsed: float, fraction: float) -> float | None:
    """Seconds left at the pace so far; None until there is a pace to go by (2% and 1 s)."""
    if fraction < 0.02 or fraction >= 1.0 or elapsed < 1.0:
        return None
    return elapsed * (1.0 - fraction) / fraction


class ProgressLine:
    """One line on stderr: rewritten in place on a terminal (at most twice a second), a new
    line every 10 s elsewhere, so a log file stays readable."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def due(self, final: bool = False) -> bool:
        now = time.monotonic()
        if final or now - self.last >= (0.5 if self.tty else 10.0):
            self.last = now
            return True
        return False

    def print(self, text: str, newline: bool = False) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K" + text + ("\n" if newline else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def bar(fraction: float, width: int = 30) -> str:
    return f"[{'#' * int(fraction * width):<{width}}] {fraction:4.0%}"


class StderrProgress:
    """A ``ProgressFn`` for the experiment subcommands: bar, message, elapsed and time left."""

    def __init__(self) -> None:
        self.line = ProgressLine()
        self.t0 = time.monotonic()

    def __call__(self, fraction: float, message: str, partial: Any = None) -> None:
        done = fraction >= 1.0
        if not self.line.due(done):
            return
        elapsed = time.monotonic() - self.t0
        left = eta(elapsed, fraction)
        tail = f" · about {clock(left)} left" if left is not None else ""
        self.line.print(f"{bar(fraction)} {message} · {clock(elapsed)}{tail}", newline=done)
