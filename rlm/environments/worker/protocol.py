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

READ_BYTES = 1 << 16  # a larger receive buffer is dropped once its frame is taken

# Bound early: cell code patching json must not break the channel.
_dumps = json.dumps
_decoder = json.JSONDecoder()
_scan = _decoder.raw_decode  # no whitespace regexes: the peer writes none around a message
_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_encode_text: Any = json.encoder.encode_basestring  # the C one where there is one


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame; the channel is unusable."""


class FrameTooLarge(ProtocolError, ValueError):
    """A frame over the channel's limit: refused from its header, before its payload is
    read (so the channel is unusable when receiving), or refused before sending."""


class ChannelClosed(EOFError):
    """The peer closed the channel (or died)."""


def _json_text(message: dict[str, Any]) -> str:
    """``json.dumps(message, ensure_ascii=False, default=str)``, without building a
    ``JSONEncoder`` per call (a few microseconds on every sub-call)."""
    if _make_encoder is None:  # no C accelerator: the plain way
        return _dumps(message, ensure_ascii=False, default=str)
    # A fresh markers dict per call keeps the circular-reference check.
    encode = _make_encoder({}, str, _encode_text, None, ": ", ", ", False, False, True)
    return "".join(encode(message, 0))


def encode_message(message: dict[str, Any]) -> bytes:
    try:
        payload = _json_text(message).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: \u escapes carry them losslessly
        payload = _dumps(message, default=str).encode("ascii")
    return HEADER.pack(MESSAGE, len(payload)) + payload


def decode_message(payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    """A message's payload as a dict. Raises ProtocolError on anything else."""
    try:
        text = str(payload, "utf-8")
        message, end = _scan(text)
        if end != len(text) and text[end:].strip():
            raise ValueError("extra data after the message")
    except ValueError as exc:  # bad UTF-8 or JSON
        raise ProtocolError(f"bad message: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("message is not a JSON object")
    return message


class Channel:
    """Frames over ``rfile`` (readable) and ``wfile`` (writable) binary streams.

    Sending is thread-safe (one lock covers a message and its stream). Receiving is
    meant for one reader at a time (callers take turns, see ``HostBridge``): ``recv``
    returns the next message, and the reader must consume a message's stream
    (``read_stream`` / ``StreamReader``) before the next ``recv``.

    A message is taken from the input only once all of it has arrived, so an exception
    raised while ``recv`` waits (a signal handler's, when the worker's main thread reads
    its own sub-call reply) loses nothing: the next ``recv`` finds the same message. A
    stream chunk is read straight into its destination instead; an exception in the
    middle of one leaves the channel unusable (``ProtocolError`` from then on).
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
        # Input read ahead of the frames taken so far (``_rbuf[_rpos:]``).
        self._rbuf = bytearray()
        self._rpos = 0
        self._read1: Callable[[int], bytes] = getattr(rfile, "read1", None) or rfile.read
        # A buffered file's ``peek`` (None if it has none, or it is not buffered).
        self._peek: Callable[[int], bytes] | None = getattr(rfile, "peek", None)
        self._broken: ProtocolError | None = None  # a read stopped inside a stream chunk
        self.receiving = False  # inside ``recv`` (not inside a stream)

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

    def _fill(self, size: int) -> None:
        """Read until at least ``size`` bytes are buffered (from ``_rbuf[0]``). Takes
        nothing: whatever stops it midway, what arrived stays buffered."""
        buf = self._rbuf
        if self._rpos:
            if self._rpos >= len(buf) and len(buf) > READ_BYTES:
                self._rbuf = buf = bytearray()  # let a large frame's buffer go
            else:
                del buf[: self._rpos]
            self._rpos = 0
        while len(buf) < size:
            # Only what this frame lacks: the file's own buffer keeps any read-ahead,
            # so a stream chunk is later read in one piece, without an extra copy.
            data = self._read1(size - len(buf))
            if not data:
                raise ChannelClosed(
                    "channel closed" if not buf else "channel closed inside a frame"
                )
            buf += data

    def _peek_header(self, kinds: tuple[bytes, ...]) -> tuple[bytes, int]:
        """The next frame's kind and size (checked, not taken), once its header is in."""
        if self._broken is not None:
            raise self._broken
        if len(self._rbuf) - self._rpos < HEADER.size:
            self._fill(HEADER.size)
        kind, size = HEADER.unpack_from(self._rbuf, self._rpos)
        if kind not in (MESSAGE, CHUNK, END):
            raise ProtocolError(f"unknown frame type {kind!r}")
        if kind not in kinds:
            raise ProtocolError(
                "stream frame outside a stream"
                if kind != MESSAGE
                else "message frame inside a stream"
            )
        limit = MAX_MESSAGE_BYTES if kind == MESSAGE else MAX_CHUNK_BYTES
        limit = min(limit, self.max_message_bytes)
        if size > limit:
            raise FrameTooLarge(f"frame of {size} bytes exceeds the {limit}-byte {self.limit_name}")
        return kind, size

    def read_header(self) -> tuple[bytes, int]:
        """Take the next frame's header (its payload is read next, by the caller)."""
        kind, size = self._peek_header((MESSAGE, CHUNK, END))
        self._rpos += HEADER.size
        return kind, size

    def _read_exact(self, size: int) -> bytes:
        """The next ``size`` bytes of a stream chunk, straight from the input (the
        receive buffer holds at most what a header read left)."""
        buf, pos = self._rbuf, self._rpos
        have = min(len(buf) - pos, size)
        if have == size:
            self._rpos = pos + size
            return bytes(buf[pos : pos + size])
        head = bytes(buf[pos : pos + have])
        del buf[:]
        self._rpos = 0
        try:
            rest = self.rfile.read(size - have) or b""
            while len(rest) < size - have:  # raw streams may return short reads
                more = self.rfile.read(size - have - len(rest))
                if not more:
                    raise ChannelClosed("channel closed inside a frame")
                rest += more
        except ChannelClosed:
            raise
        except BaseException:
            self._broken = ProtocolError("a read was interrupted inside a stream chunk")
            raise
        return head + rest if head else rest

    def _readinto_exact(self, view: memoryview) -> None:
        buf, pos = self._rbuf, self._rpos
        have = min(len(buf) - pos, len(view))
        view[:have] = buf[pos : pos + have]
        self._rpos = pos + have
        got = have
        try:
            while got < len(view):
                n = self.rfile.readinto(view[got:])  # type: ignore[attr-defined]
                if not n:
                    raise ChannelClosed("channel closed inside a frame")
                got += n
        except ChannelClosed:
            raise
        except BaseException:
            self._broken = ProtocolError("a read was interrupted inside a stream chunk")
            raise

    def recv(self) -> dict[str, Any]:
        """The next message. Raises ChannelClosed at EOF, ProtocolError on garbage."""
        self.receiving = True  # an exception from the input now loses nothing
        try:
            return self._recv()
        finally:
            self.receiving = False

    def _recv(self) -> dict[str, Any]:
        peek = self._peek
        if peek is not None and self._rpos == len(self._rbuf) and self._broken is None:
            # Fast path: the whole frame is in the file's buffer (peek waits for input
            # and takes nothing): one look, then one read of exactly the frame.
            ahead = peek(HEADER.size)
            if len(ahead) >= HEADER.size:
                kind, size = HEADER.unpack_from(ahead)
                total = HEADER.size + size
                if kind == MESSAGE and size <= self.max_message_bytes and len(ahead) >= total:
                    frame = self._read1(total)
                    if len(frame) == total:
                        return decode_message(memoryview(frame)[HEADER.size :])
                    self._rbuf += frame  # not all of it after all: the slow way
        _, size = self._peek_header((MESSAGE,))
        total = HEADER.size + size
        if len(self._rbuf) - self._rpos < total:
            self._fill(total)
        start = self._rpos + HEADER.size
        payload = self._rbuf[start : start + size]
        self._rpos = start + size  # taken only now, whole
        return decode_message(payload)

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
