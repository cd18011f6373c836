"""A readable binary file over an iterator of byte chunks.

What provider SDKs hand back for a process's output, and what a session store reads a
blob as, are iterators of ``bytes`` chunks; ``pickle.load`` and ``io.BufferedReader``
want a file. ``ChunkReader`` is that file, without joining the chunks first.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any


class ChunkReader(io.RawIOBase):
    """A raw binary stream over ``chunks`` (empty chunks are skipped). Each chunk is
    read through a view, so a large chunk read in small pieces is never copied again."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not len(self._current):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._current = memoryview(chunk).cast("B")
        view = memoryview(buffer).cast("B")
        size = min(len(view), len(self._current))
        view[:size] = self._current[:size]
        self._current = self._current[size:]
        return size
