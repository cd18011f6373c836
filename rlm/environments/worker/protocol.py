"""The worker channel: typed, length-prefixed frames over a pair of byte streams.

Every frame is one type byte, a 4-byte big-endian length and the payload:

* ``J``: a UTF-8 JSON object (a message);
* ``B``: a chunk of raw bytes belonging to the stream the last message opened;
* ``E``: the end of that stream (empty payload).

A message with ``"stream": true`` is followed by zero or more ``B`` frames and one
``E`` frame, so large values (a 500 MB context, a pickled variable) travel in chunks
and are never JSON-encoded or held twice. Messages from the host carry ``id`` and get
a reply carrying ``re``; the worker's own requests (``llm``, ``rlm``) work the same
way in the other direction.

Standard library only, and Python 3.9 compatible: the worker imports this module.
"""

from __future__ import annotations

import contextlib
import json
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

HEADER = struct.Struct(">cI")
MESSAGE, CHUNK, END = b"J", b"B", b"E"

# Largest JSON message accepted by default, checked before allocating. The host reads
# a worker's frames under a much smaller cap (``max_frame_mb``, see WorkerClient): a
# hostile worker can make it neither reserve nor decode more than that per frame.
MAX_MESSAGE_BYTES = 1 << 30
MAX_CHUNK_BYTES = 1 << 30
CHUNK_BYTES = 1 << 20  # what senders cut streams into (no chunk frame is larger)
CORK_BYTES = 1 << 18  # frames held back by ``Channel.corked`` before they are written

_dumps = json.dumps  # bound early: cell code patching json must not break the channel
_loads = json.loads


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; the channel is unusable."""


class FrameTooLarge(ProtocolError, ValueError):
    """A frame over the channel's limit: refused from its header, before its payload is
    read (so the channel is unusable when receiving), or refused before sending."""


class ChannelClosed(EOFError):
    """The peer closed the channel (or died)."""


def encode_message(message: dict[str, Any]) -> bytes:
    try:
        payload = _dumps(message, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: \u escapes carry them losslessly
        payload = _dumps(message, default=str).encode("ascii")
    return HEADER.pack(MESSAGE, len(payload)) + payload


class Channel:
    """Frames over ``rfile`` (readable) and ``wfile`` (writable) binary streams.

    Sending is thread-safe (one lock covers a message and its stream). Receiving is
    meant for one reader thread: ``recv`` returns the next message, and the reader must
    consume a message's stream (``read_stream`` / ``StreamReader``) before the next
    ``recv``.
    """

    def __init__(
        self,
        rfile: IO[bytes],
        wfile: IO[bytes],
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_send_bytes: int | None = None,
        limit_name: str = "limit",
    ) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self.lock = threading.Lock()
        self.closed = False
        # Received frames (a message, or one stream chunk) larger than this are refused.
        self.max_message_bytes = max_message_bytes
        # Messages larger than this are not sent (the peer would refuse them).
        self.max_send_bytes = max_send_bytes
        self.limit_name = limit_name  # names the limit in errors (``max_frame_mb``)
        self._cork: bytearray | None = None  # frames held back (``corked``)

    # -- sending --------------------------------------------------------------------

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Hold back whole frames sent meanwhile (by any thread, in order) and write
        them at once when the block ends: the peer then wakes once for a burst of
        small messages (a snapshot and its reply) instead of once per frame. Past
        ``CORK_BYTES`` the held frames are written and the rest goes straight out."""
        with self.lock:
            self._cork = bytearray()
        try:
            yield
        finally:
            with self.lock:
                held, self._cork = self._cork, None
                if held and not self.closed:
                    self._write(held)

    def _write(self, data: Any) -> None:
        cork = self._cork
        if cork is not None:
            size = memoryview(data).nbytes
            if len(cork) + size <= CORK_BYTES:
                cork += data
                return
            self._cork = None  # too much to hold: write what is held, then this
            self._write(cork)
            self._cork = bytearray()
        view = memoryview(data).cast("B")
        while view:
            written = self.wfile.write(view)
            if written is None or written >= len(view):
                break
            view = view[written:]

    def send_raw(self, data: bytes) -> None:
        """Bytes outside the framing (the zipapp for a bootstrapping worker)."""
        with self.lock:
            self._write(data)
            self.wfile.flush()

    def _encode(self, message: dict[str, Any]) -> bytes:
        frame = encode_message(message)
        limit = self.max_send_bytes
        if limit is not None and len(frame) - HEADER.size > limit:
            raise FrameTooLarge(
                f"a message of {len(frame) - HEADER.size} bytes exceeds the channel's "
                f"{limit}-byte {self.limit_name}"
            )
        return frame

    def send(self, message: dict[str, Any]) -> None:
        """Send one message without a stream. Raises FrameTooLarge (nothing sent) if it
        exceeds ``max_send_bytes``."""
        frame = self._encode(message)
        with self.lock:
            if self.closed:
                raise ChannelClosed("channel closed")
            self._write(frame)
            self.wfile.flush()

    def send_stream(self, message: dict[str, Any], write: Callable[[StreamWriter], None]) -> None:
        """Send ``message`` and then the stream ``write(writer)`` produces."""
        frame = self._encode(dict(message, stream=True))
        with self.lock:
            if self.closed:
                raise ChannelClosed("channel closed")
            self._write(frame)
            writer = StreamWriter(self)
            write(writer)
            writer.flush()
            self._write(HEADER.pack(END, 0))
            self.wfile.flush()

    def send_chunks(self, message: dict[str, Any], chunks: Iterable[Any]) -> None:
        """Send ``message`` with a stream made of ``chunks`` (bytes-like objects)."""

        def write(writer: StreamWriter) -> None:
            for chunk in chunks:
                writer.write(chunk)

        self.send_stream(message, write)

    # -- receiving ------------------------------------------------------------------

    def _read_exact(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if data is None:
            data = b""
        while len(data) < size:  # raw streams may return short reads
            more = self.rfile.read(size - len(data))
            if not more:
                raise ChannelClosed("channel closed inside a frame")
            data += more
        return data

    def _readinto_exact(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self.rfile.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                raise ChannelClosed("channel closed inside a frame")
            got += n

    def read_header(self) -> tuple[bytes, int]:
        head = self.rfile.read(HEADER.size)
        if not head:
            raise ChannelClosed("channel closed")
        if len(head) < HEADER.size:
            head += self._read_exact(HEADER.size - len(head))
        kind, size = HEADER.unpack(head)
        if kind not in (MESSAGE, CHUNK, END):
            raise ProtocolError(f"unknown frame type {kind!r}")
        limit = MAX_MESSAGE_BYTES if kind == MESSAGE else MAX_CHUNK_BYTES
        limit = min(limit, self.max_message_bytes)
        if size > limit:
            raise FrameTooLarge(f"frame of {size} bytes exceeds the {limit}-byte {self.limit_name}")
        return kind, size

    def recv(self) -> dict[str, Any]:
        """The next message. Raises ChannelClosed at EOF, ProtocolError on garbage."""
        kind, size = self.read_header()
        if kind != MESSAGE:
            raise ProtocolError("stream frame outside a stream")
        try:
            message = _loads(self._read_exact(size))
        except ValueError as exc:  # bad UTF-8 or JSON
            raise ProtocolError(f"bad message: {exc}") from None
        if not isinstance(message, dict):
            raise ProtocolError("message is not a JSON object")
        return message

    def iter_stream(self) -> Iterator[bytes]:
        """The chunks of the current message's stream, up to its end frame."""
        while True:
            kind, size = self.read_header()
            if kind == END:
                return
            if kind != CHUNK:
                raise ProtocolError("message frame inside a stream")
            yield self._read_exact(size)

    def read_stream_into(self, view: memoryview) -> int:
        """Read the current stream straight into ``view`` (no intermediate copies);
        returns the bytes read. Raises ProtocolError if the stream is longer."""
        got = 0
        while True:
            kind, size = self.read_header()
            if kind == END:
                return got
            if kind != CHUNK or got + size > len(view):
                raise ProtocolError("stream does not fit its declared size")
            self._readinto_exact(view[got : got + size])
            got += size

    def read_stream(self, limit: int | None = None) -> bytes:
        """The whole stream as one bytes object (at most ``limit`` bytes)."""
        parts, total = [], 0
        for chunk in self.iter_stream():
            total += len(chunk)
            if limit is not None and total > limit:
                raise ProtocolError(f"stream exceeds the {limit}-byte limit")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class StreamWriter:
    """File-like sink that cuts what it is given into ``B`` frames (used with the
    channel lock held, by ``Channel.send_stream``). Small writes are coalesced."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._pending = bytearray()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if len(self._pending) + size < CHUNK_BYTES:
            self._pending += view
            return size
        self.flush()
        for start in range(0, size, CHUNK_BYTES):  # zero-copy slices, 1 MB frames
            part = view[start : start + CHUNK_BYTES]
            self._channel._write(HEADER.pack(CHUNK, len(part)))
            self._channel._write(part)
        return size

    def flush(self) -> None:
        if self._pending:
            self._channel._write(HEADER.pack(CHUNK, len(self._pending)))
            self._channel._write(self._pending)
            self._pending = bytearray()


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
