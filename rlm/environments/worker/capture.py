"""Per-cell output capture in the worker, with a size cap.

The worker is its own process, so ``sys.stdout``/``sys.stderr`` are simply replaced by
``CellStream`` objects: while a cell runs they write into that cell's ``CappedText``,
otherwise to the worker's real stderr. Everything a cell prints (its threads included)
is captured, and a 50 MB ``print`` keeps only its head and tail: the channel never
carries more than the cap.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections import deque
from typing import Any, TextIO


class CappedText:
    """Text that keeps its first ``limit * 2 // 3`` and last ``limit // 3`` characters
    and counts what it drops in between."""

    def __init__(self, limit: int) -> None:
        self.head_limit = max(0, limit * 2 // 3)
        self.tail_limit = max(0, limit - self.head_limit)
        self._head: list[str] = []
        self._head_size = 0
        self._tail: deque[str] = deque()
        self._tail_size = 0
        self.dropped = 0

    def write(self, text: str) -> int:
        size = len(text)
        room = self.head_limit - self._head_size
        if room > 0:
            part = text[:room]
            self._head.append(part)
            self._head_size += len(part)
            text = text[room:]
        if not text:
            return size
        if len(text) >= self.tail_limit:  # a huge write replaces the whole tail
            self.dropped += self._tail_size + len(text) - self.tail_limit
            self._tail.clear()
            text = text[len(text) - self.tail_limit :] if self.tail_limit else ""
            self._tail_size = 0
        self._tail.append(text)
        self._tail_size += len(text)
        while self._tail_size > self.tail_limit:
            first = self._tail.popleft()
            excess = self._tail_size - self.tail_limit
            if len(first) > excess:
                self._tail.appendleft(first[excess:])
                self._tail_size -= excess
                self.dropped += excess
            else:
                self._tail_size -= len(first)
                self.dropped += len(first)
        return size

    def getvalue(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if not self.dropped:
            return head + tail
        note = f"\n... [{self.dropped:,} characters of output truncated by the worker] ...\n"
        return head + note + tail

    def tell(self) -> int:
        return self._head_size + self.dropped + self._tail_size


class CellStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of the worker: the running cell's buffer, or
    ``fallback`` (the worker's real stderr) between cells."""

    def __init__(self, fallback: TextIO | None, name: str) -> None:
        super().__init__()
        self.target: CappedText | None = None
        self._fallback = fallback
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        """Ignored: a cell cannot close the worker's streams."""

    def isatty(self) -> bool:
        return False

    def write(self, text: Any) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        target = self.target
        if target is not None:
            return target.write(text)
        if self._fallback is not None:
            with contextlib.suppress(OSError, ValueError):
                self._fallback.write(text)
        return len(text)

    def flush(self) -> None:
        if self.target is None and self._fallback is not None:
            with contextlib.suppress(OSError, ValueError):
                self._fallback.flush()


class Capture:
    """The worker's two output streams and the buffers of the cell being run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        fallback = sys.__stderr__
        self.stdout = CellStream(fallback, "<stdout>")
        self.stderr = CellStream(fallback, "<stderr>")
        self.install()

    def install(self) -> None:
        """(Re)bind ``sys.stdout``/``sys.stderr``: a cell may have replaced or closed them."""
        sys.stdout = self.stdout
        sys.stderr = self.stderr

    def start(self) -> tuple[CappedText, CappedText]:
        out, err = CappedText(self.limit), CappedText(self.limit)
        self.install()
        self.stdout.target, self.stderr.target = out, err
        return out, err

    def stop(self) -> None:
        self.stdout.target = self.stderr.target = None
        self.install()
