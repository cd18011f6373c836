"""A live progress display for a terminal: iterations, sub-calls, tokens and spend.

It is a ``RunTracker`` whose ``say`` redraws a small ``rich`` panel instead of printing
a line, so the counts, the summary and ``--json`` stay exactly those of the plain
output. Used only when stderr is a TTY and ``rich`` (the ``cli`` extra) is installed.
"""

from __future__ import annotations

import time
from collections import deque
from typing import IO, Any

from rlm.cli.progress import RunTracker
from rlm.logger.verbose import format_duration, plural

RECENT_LINES = 4


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def use_live(err: IO[str], quiet: bool) -> bool:
    """Live display only for a person watching: a TTY, not quiet, rich installed."""
    isatty = getattr(err, "isatty", None)
    return not quiet and bool(isatty and isatty()) and rich_available()


class LiveDisplay(RunTracker):
    """``with LiveDisplay(sys.stderr) as tracker: ...``; lines said after the display
    stops (the summary) are printed as plain lines."""

    def __init__(self, err: IO[str], console: Any = None, max_iterations: int | None = None):
        super().__init__(err, quiet=False)
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(file=err, stderr=True)
        self._recent: deque[str] = deque(maxlen=RECENT_LINES)
        self._started = time.perf_counter()
        self._limit = max_iterations
        from rich.spinner import Spinner

        self._spinner = Spinner("dots")
        # Live re-renders ``self`` (``__rich__``) on each refresh, so the clock ticks.
        self._live = Live(self, console=self.console, refresh_per_second=8, transient=True)
        self._running = False

    def __enter__(self) -> LiveDisplay:
        self._started = time.perf_counter()
        self._live.start()
        self._running = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._live.stop()

    def say(self, text: str, level: int = 0) -> None:
        if not self._running:
            super().say(text, level)
            return
        self._recent.append(("  " * level) + text)

    def status_line(self) -> str:
        """``iteration 3/30 · 4 sub-calls · 1,234 tokens · $0.001200 · 12.30s``"""
        limit = self._limit or self._max_iterations
        parts = [f"iteration {self.current}" + (f"/{limit}" if limit else "")]
        parts.append(plural(self.subcalls, "sub-call"))
        if self.spent.get("tokens"):
            parts.append(f"{int(self.spent['tokens']):,} tokens")
        if self.spent.get("spent_usd"):
            parts.append(f"${float(self.spent['spent_usd']):.6f}")
        parts.append(format_duration(time.perf_counter() - self._started))
        return " · ".join(parts)

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        self._spinner.update(text=Text(self.status_line(), style="bold"))
        recent = [
            Text(line, style="dim", overflow="ellipsis", no_wrap=True) for line in self._recent
        ]
        return Group(self._spinner, *recent)
