"""A progress bar on stderr while items run (plain lines when stderr is not a terminal).

In a terminal one line is redrawn (``\\r``): bar, items done of total, failures, rate
and an estimate of the time left. Elsewhere (CI, a log file) a line is printed every
5 % and at the end. ``quiet`` prints nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

BAR = 28


class Progress:
    """Counts finished items; ``advance(row)`` after each."""

    def __init__(
        self, total: int, stream: IO[str] | None = None, quiet: bool = False, label: str = "items"
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.label = label
        self.done = 0
        self.failed = 0
        self.started = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._step = max(1, total // 20)
        self._lock = threading.Lock()

    def advance(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.done += 1
            self.failed += row.get("status") == "failed"
            if self._tty or self.done % self._step == 0 or self.done == self.total:
                self._show()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        filled = int(BAR * self.done / self.total) if self.total else BAR
        eta = (
            f"{left:,.0f}s left"
            if left is not None and self.done < self.total
            else f"{elapsed:,.1f}s"
        )
        return (
            f"[{'#' * filled}{'.' * (BAR - filled)}] {self.done}/{self.total} {self.label}"
            f"  {self.failed} failed  {rate:.2f}/s  {eta}"
        )

    def _show(self) -> None:
        if self.quiet:
            return
        if self._tty:
            self.stream.write("\r\033[K" + self.line())
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line if a run stopped early."""
        if self._tty and not self.quiet and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()
