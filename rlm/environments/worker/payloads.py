"""Values the host sends to the worker (contexts, histories, variables, tool values).

A value travels as a stream of one ``kind``:

* ``ascii``: an ASCII ``str``. The host sends the string's own characters (no encoded
  copy) and the worker allocates the final string up front and reads the bytes
  straight into it, so a 500 MB context costs 500 MB in the worker, once;
* ``utf8``: any other ``str`` (lone surrogates included), encoded 1 MB at a time;
* ``bytes``: ``bytes``/``bytearray``;
* ``pickle``: everything else, pickled by the host before sending (a failure must not
  leave half a stream behind) and unpickled by the worker while it arrives.

Only the host pickles here, and only the worker unpickles: the host never decodes
anything a worker produced. Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

from rlm.environments.worker.protocol import (
    CHUNK_BYTES,
    Channel,
    ProtocolError,
    StreamWriter,
)
from rlm.environments.worker.streams import StreamReader

# The worker may run an older Python than the host; protocol 5 is readable from 3.8.
PICKLE_PROTOCOL = min(pickle.HIGHEST_PROTOCOL, 5)
# Below this, a plain decode is as cheap as the in-place string and simpler.
_IN_PLACE_MIN = 1 << 16


def value_kind(value: Any) -> tuple[str, int | None]:
    """The wire kind of ``value`` and its size in bytes when known up front."""
    if isinstance(value, str):
        return ("ascii", len(value)) if value.isascii() else ("utf8", None)
    if isinstance(value, (bytes, bytearray)):
        return "bytes", len(value)
    return "pickle", None


def _ascii_view(text: str) -> memoryview | None:
    """A read-only view of an ASCII ``str``'s characters, without copying them (the
    reverse of ``_new_ascii``), or None where CPython's layout is not reachable."""
    try:
        import ctypes
    except ImportError:
        return None
    offset = sys.getsizeof("") - 1
    buffer = (ctypes.c_char * len(text)).from_address(id(text) + offset)
    return memoryview(buffer).cast("B").toreadonly()


def write_value(writer: StreamWriter, value: Any, kind: str) -> None:
    """Write ``value`` into ``writer`` in chunks (never one full-size copy of a str)."""
    view = _ascii_view(value) if kind == "ascii" and len(value) >= _IN_PLACE_MIN else None
    if view is not None:
        for start in range(0, len(view), CHUNK_BYTES):
            writer.write(view[start : start + CHUNK_BYTES])
        return
    if kind in ("ascii", "utf8"):
        encoding, errors = ("ascii", "strict") if kind == "ascii" else ("utf-8", "surrogatepass")
        for start in range(0, len(value), CHUNK_BYTES):
            writer.write(value[start : start + CHUNK_BYTES].encode(encoding, errors))
        return
    view = memoryview(value)
    for start in range(0, len(view), CHUNK_BYTES):
        writer.write(view[start : start + CHUNK_BYTES])


def send_value(channel: Channel, message: dict[str, Any], value: Any) -> None:
    """Send ``message`` followed by ``value`` as its stream. Raises TypeError (before
    anything is sent) if ``value`` cannot be pickled."""
    kind, size = value_kind(value)
    if kind == "pickle":
        # Pickled whole first: a failure half-way would leave a broken stream behind.
        try:
            value = pickle.dumps(value, protocol=PICKLE_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"cannot send a {type(value).__name__} to the worker: {exc}") from exc
        size = len(value)
    channel.send_stream(dict(message, kind=kind, size=size), lambda w: write_value(w, value, kind))


# ---------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------


def _new_ascii(size: int) -> tuple[str, memoryview] | None:
    """An uninitialised ASCII ``str`` of ``size`` characters and a writable view of
    its characters, or ``None`` where CPython's C API is not reachable.

    Filling a string before anyone else holds it is what C extensions do with
    ``PyUnicode_New``; it is what lets a large context exist once instead of twice
    (received bytes + decoded copy).
    """
    try:
        import ctypes

        new = ctypes.pythonapi.PyUnicode_New
    except (ImportError, AttributeError):
        return None
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_ssize_t, ctypes.c_uint32]
    text = new(size, 127)
    # A compact ASCII string keeps its characters right after its header, whose size
    # is that of the empty string minus the terminating NUL.
    offset = sys.getsizeof("") - 1
    buffer = (ctypes.c_char * size).from_address(id(text) + offset)
    return text, memoryview(buffer).cast("B")


def read_value(channel: Channel, message: dict[str, Any]) -> Any:
    """Decode the value streamed after ``message`` (``kind``/``size`` from
    ``send_value``). The stream is always consumed, even when decoding fails."""
    kind, size = message.get("kind"), message.get("size")
    if kind == "ascii" and isinstance(size, int) and size >= _IN_PLACE_MIN:
        made = _new_ascii(size)
        if made is not None:
            text, view = made
            if channel.read_stream_into(view) != size:
                raise ProtocolError("ascii stream shorter than declared")
            return text
    if kind == "pickle":
        reader = StreamReader(channel)
        try:
            return pickle.Unpickler(reader).load()
        finally:
            reader.drain()
    data = bytearray()
    for chunk in channel.iter_stream():
        data += chunk
    if kind == "ascii":
        return data.decode("ascii")
    if kind == "utf8":
        return data.decode("utf-8", "surrogatepass")
    if kind == "bytes":
        return bytes(data)
    raise ProtocolError(f"unknown value kind {kind!r}")
