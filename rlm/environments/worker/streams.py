"""A file-like view of a channel's current stream, so ``pickle.load`` can decode a
value while it arrives instead of after (the worker's own: it imports only the
standard library and ``protocol``).

Standard library only, Python 3.9 compatible: the worker imports this module.
"""

from __future__ import annotations

from typing import Any

from rlm.environments.worker.protocol import Channel


class StreamReader:
    """File-like view of the current stream (``read``/``readinto``/``readline``), so
    ``pickle.load`` can decode a value while it arrives instead of after."""

    def __init__(self, channel: Channel) -> None:
        self._chunks = channel.iter_stream()
        self._buffer = memoryview(b"")
        self.done = False

    def _fill(self) -> bool:
        if self.done:
            return False
        try:
            self._buffer = memoryview(next(self._chunks))
        except StopIteration:
            self.done = True
            return False
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        got = 0
        while got < len(view):
            if not self._buffer and not self._fill():
                break
            n = min(len(view) - got, len(self._buffer))
            view[got : got + n] = self._buffer[:n]
            self._buffer = self._buffer[n:]
            got += n
        return got

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [bytes(self._buffer)]
            self._buffer = memoryview(b"")
            while self._fill():
                parts.append(bytes(self._buffer))
                self._buffer = memoryview(b"")
            return b"".join(parts)
        out = bytearray(size)
        got = self.readinto(out)
        return bytes(out[:got])

    def readline(self) -> bytes:
        line = bytearray()
        while True:
            if not self._buffer and not self._fill():
                return bytes(line)
            end = bytes(self._buffer).find(b"\n")
            if end >= 0:
                line += self._buffer[: end + 1]
                self._buffer = self._buffer[end + 1 :]
                return bytes(line)
            line += self._buffer
            self._buffer = memoryview(b"")

    def drain(self) -> None:
        """Skip whatever is left of the stream (after an error, to stay in sync)."""
        self._buffer = memoryview(b"")
        while self._fill():
            self._buffer = memoryview(b"")
