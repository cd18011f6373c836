"""Per-execution capture of stdout/stderr, safe with concurrent cells.

``sys.stdout``/``sys.stderr`` are replaced once by proxies. Each write goes to the
buffer a ``ContextVar`` selects (set only while a cell runs in that thread), otherwise
to the stream the proxy wrapped. So concurrent cells in different threads each get
their own output, and host output is never captured. Swapping ``sys.stdout`` per cell
instead would be process-wide and race between threads.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import Any, TextIO

Buffers = tuple[io.StringIO, io.StringIO]

_buffers: ContextVar[Buffers | None] = ContextVar("rlm_repl_output", default=None)
_install_lock = threading.Lock()


class StreamProxy:
    """A text stream that forwards to the current cell's buffer, else to ``wrapped``."""

    def __init__(self, wrapped: TextIO | None, index: int) -> None:
        self._wrapped = wrapped
        self._index = index  # 0: stdout, 1: stderr

    @property
    def wrapped(self) -> TextIO | None:
        return self._wrapped

    def _capturing(self) -> io.StringIO | None:
        buffers = _buffers.get()
        return None if buffers is None else buffers[self._index]

    def write(self, text: str) -> int:
        buffers = _buffers.get()  # ``_capturing``, inlined: every print calls this twice
        if buffers is not None:
            return buffers[self._index].write(text)
        target = self._wrapped
        if target is None:  # e.g. pythonw, where sys.stdout is None
            return len(text)
        return target.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._capturing() is None and self._wrapped is not None:
            self._wrapped.flush()

    def isatty(self) -> bool:
        # A capturing cell is not a terminal (pagers and colour codes must not kick in).
        if self._capturing() is not None or self._wrapped is None:
            return False
        return self._wrapped.isatty()

    def fileno(self) -> int:
        if self._wrapped is None:
            raise io.UnsupportedOperation("fileno")
        return self._wrapped.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._wrapped, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:
        return getattr(self._wrapped, "errors", None)

    @property
    def closed(self) -> bool:
        return bool(getattr(self._wrapped, "closed", False))

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        # Anything else (buffer, name, mode, reconfigure...) is the wrapped stream's.
        if self._wrapped is None:
            raise AttributeError(name)
        return getattr(self._wrapped, name)

    def __repr__(self) -> str:
        return f"<StreamProxy of {self._wrapped!r}>"


def ensure_installed() -> None:
    """Wrap ``sys.stdout``/``sys.stderr`` unless they already are proxies. Someone
    (pytest's capsys, a host app) may have replaced them since: wrap what is current."""
    # Both already wrapped (every cell after the first): nothing to do, so no lock; the
    # locked path below checks again for itself.
    if type(sys.stdout) is StreamProxy and type(sys.stderr) is StreamProxy:
        return
    with _install_lock:
        if not isinstance(sys.stdout, StreamProxy):
            sys.stdout = StreamProxy(sys.stdout, 0)
        if not isinstance(sys.stderr, StreamProxy):
            sys.stderr = StreamProxy(sys.stderr, 1)


class capture:  # used as ``with capture() as (out, err)``, like a function
    """Capture this context's stdout/stderr writes into fresh ``StringIO`` buffers.

    A class rather than a ``contextmanager`` generator: it is entered once per cell."""

    __slots__ = ("_token",)
    _token: Token[Buffers | None]

    def __enter__(self) -> Buffers:
        ensure_installed()
        buffers = (io.StringIO(), io.StringIO())
        self._token = _buffers.set(buffers)
        return buffers

    def __exit__(self, *exc: object) -> None:
        _buffers.reset(self._token)
