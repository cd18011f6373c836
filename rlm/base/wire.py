"""The handler socket's wire format: 4-byte big-endian length + UTF-8 JSON object.

Public names and the compat helpers (``socket_request``, ``send_lm_request``,
``send_lm_request_batched``) keep the ``rlms`` 0.1.3 signatures and never-raise
semantics. On top of that, every request may carry a ``token`` (the server rejects
requests without the right one) and an ``id`` that the server echoes, and
``LMConnection`` keeps one persistent connection so a worker does not pay a TCP
handshake per ``llm_query``.

Authentication comes first: the server reads at most ``AUTH_FRAME_BYTES`` of a
connection's first frame, which must carry the token. A small request is its own
authentication (the ``rlms``-era wire format, unchanged); before a larger first
request the helpers here send ``{"auth": true, "token": ...}`` and wait for
``{"auth": "ok"}``. After that, frames up to ``MAX_FRAME_BYTES`` are read.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import struct
import threading
from typing import Any

from rlm.base import local_tokens
from rlm.base.errors import WireProtocolError
from rlm.base.types import Prompt
from rlm.base.wire_messages import LMRequest, LMResponse

# Largest frame a receiver accepts. Checked before allocating, so a corrupt or hostile
# header cannot make us reserve gigabytes. Read at call time: tests may patch it.
MAX_FRAME_BYTES: int = 1 << 30
# Largest first frame of a connection: the server reads no more before it has checked
# the token. Larger first requests are preceded by an auth frame (``AUTH_OK``).
AUTH_FRAME_BYTES: int = 4096
AUTH_OK = "ok"

_HEADER = struct.Struct(">I")
# Above this, header and payload go out in two sendall calls instead of being joined
# (joining copies the whole payload once more).
_JOIN_LIMIT = 64 * 1024

Address = tuple[str, int]


UNAUTHORIZED = "unauthorized"  # the server's error for a connection it refuses


class FrameTooLargeError(WireProtocolError):
    """A frame's declared length is above the limit; the stream cannot be resynced."""


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------


def encode_frame(data: dict[str, Any]) -> bytes:
    """The UTF-8 JSON payload of ``data`` (without header)."""
    try:
        return json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8; \u-escaped JSON carries them losslessly.
        return json.dumps(data).encode("ascii")


def socket_send(sock: socket.socket, data: dict[str, Any]) -> None:
    """Send ``data`` as one frame. Raises WireProtocolError if it is above the limit."""
    send_payload(sock, encode_frame(data))


def send_payload(sock: socket.socket, payload: bytes) -> None:
    """Send an encoded payload as one frame (see ``socket_send``)."""
    size = len(payload)
    if size > MAX_FRAME_BYTES or size > 0xFFFFFFFF:
        raise WireProtocolError(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    header = _HEADER.pack(size)
    if size <= _JOIN_LIMIT:
        sock.sendall(header + payload)
    else:
        sock.sendall(header)
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, buf: bytearray) -> int:
    """Fill ``buf`` from ``sock``; returns the bytes read (short only on EOF)."""
    view = memoryview(buf)
    got, size = 0, len(buf)
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            break
        got += n
    return got


def recv_frame(sock: socket.socket, max_bytes: int | None = None) -> bytearray | None:
    """Read one frame's payload. ``None`` on a clean EOF before the frame starts.

    Raises ConnectionError on EOF inside a frame and FrameTooLargeError (before
    allocating) when the header declares more than ``max_bytes``.
    """
    limit = MAX_FRAME_BYTES if max_bytes is None else max_bytes
    header = bytearray(_HEADER.size)
    got = _recv_exact(sock, header)
    if got == 0:
        return None
    if got < _HEADER.size:
        raise ConnectionError("connection closed inside a frame header")
    (length,) = _HEADER.unpack(header)
    if length > limit:
        raise FrameTooLargeError(f"frame of {length} bytes exceeds the {limit}-byte limit")
    payload = bytearray(length)
    if _recv_exact(sock, payload) < length:
        raise ConnectionError("connection closed before the frame was complete")
    return payload


def decode_frame(payload: bytes | bytearray) -> dict[str, Any]:
    """Parse a payload; raises WireProtocolError unless it is a UTF-8 JSON object."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireProtocolError(f"frame is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireProtocolError(f"frame must be a JSON object, got {type(data).__name__}")
    return data


def socket_recv(sock: socket.socket) -> dict[str, Any]:
    """Receive one frame. ``{}`` on a clean EOF before the frame starts.

    Raises ConnectionError on EOF mid-frame and WireProtocolError on an oversized or
    malformed frame.
    """
    payload = recv_frame(sock)
    return {} if payload is None else decode_frame(payload)


def _connect(address: Address, timeout: float | None) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def first_exchange(
    sock: socket.socket, data: dict[str, Any], token: str | None = None
) -> dict[str, Any]:
    """Send the first request of a new connection and receive its response.

    A request within ``AUTH_FRAME_BYTES`` goes as is (its token authenticates the
    connection); a larger one with a ``token`` (``data``'s own, else ``token``) is
    preceded by an auth frame. A refused auth frame's reply is returned as the response.
    """
    payload = encode_frame(data)
    own = data.get("token")
    token = own if isinstance(own, str) else token
    if len(payload) > AUTH_FRAME_BYTES and token:
        socket_send(sock, {"auth": True, "token": token})
        reply = socket_recv(sock)
        if reply.get("auth") != AUTH_OK:
            return reply or {"error": "connection closed during authentication"}
    send_payload(sock, payload)
    return socket_recv(sock)


def socket_request(address: Address, data: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """One request/response over a new connection (the rlms way; see LMConnection)."""
    with _connect(address, timeout) as sock:
        return first_exchange(sock, data)


# ---------------------------------------------------------------------------
# Typed helpers (rlms compat: never raise)
# ---------------------------------------------------------------------------


def send_lm_request(
    address: Address,
    request: LMRequest,
    timeout: float = 300,
    depth: int | None = None,
    token: str | None = None,
) -> LMResponse:
    """Send one request on a new connection. Failures come back as error responses."""
    try:
        if depth is not None:
            request.depth = depth
        if token is not None:
            request.token = token
        elif request.token is None:  # a handler started in this process: its token
            request.token = local_tokens.lookup(address)
        return LMResponse.from_dict(socket_request(address, request.to_dict(), timeout))
    except Exception as exc:
        return LMResponse.error_response(f"Request failed: {exc}")


def split_batched(response: LMResponse, count: int) -> list[LMResponse]:
    """One response per prompt; a completion with ``.error`` becomes an error response."""
    if not response.success:
        return [LMResponse.error_response(response.error or "unknown error")] * count
    items = response.chat_completions
    if items is None or len(items) != count:
        got = "no" if items is None else str(len(items))
        return [LMResponse.error_response(f"expected {count} completions, got {got}")] * count
    return [
        LMResponse.error_response(c.error) if c.error else LMResponse.success_response(c)
        for c in items
    ]


def send_lm_request_batched(
    address: Address,
    prompts: list[Prompt],
    model: str | None = None,
    timeout: float = 300,
    depth: int = 0,
    token: str | None = None,
) -> list[LMResponse]:
    """Send a batch on a new connection: one response per prompt, in prompt order."""
    try:
        if token is None:  # a handler started in this process: its token
            token = local_tokens.lookup(address)
        request = LMRequest(prompts=prompts, model=model, depth=depth, token=token)
        data = socket_request(address, request.to_dict(), timeout)
        return split_batched(LMResponse.from_dict(data), len(prompts))
    except Exception as exc:
        return [LMResponse.error_response(f"Request failed: {exc}")] * len(prompts)


# ---------------------------------------------------------------------------
# Persistent connection
# ---------------------------------------------------------------------------


class LMConnection:
    """One persistent, lazily opened connection to an LMServer, shared by threads.

    Exchanges are serialised by a lock. If a reused connection turns out to have been
    closed by the server, the request is retried once on a fresh one. Like
    ``send_lm_request``, ``request`` never raises: failures are error responses.
    """

    def __init__(self, address: Address, token: str | None = None, timeout: float = 300) -> None:
        self.address = address
        self.token = token
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pid = os.getpid()

    def request(self, req: LMRequest) -> LMResponse:
        self._after_fork()
        with self._lock:
            req.token = self.token if self.token is not None else local_tokens.lookup(self.address)
            req.id = next(self._ids)
            try:
                data = self._exchange(req.to_dict())
            except Exception as exc:
                self._drop()  # the stream's state is unknown: never reuse it
                return LMResponse.error_response(f"Request failed: {exc}", id=req.id)
            if data.get("id") not in (None, req.id):
                self._drop()  # out of step with the server
                return LMResponse.error_response(
                    f"Request failed: response id {data.get('id')} != request id {req.id}",
                    id=req.id,
                )
        try:
            return LMResponse.from_dict(data)
        except Exception as exc:
            return LMResponse.error_response(f"Request failed: bad response: {exc}", id=req.id)

    def _exchange(self, frame: dict[str, Any]) -> dict[str, Any]:
        reused = self._sock is not None
        try:
            return self._send_recv(frame)
        except (ConnectionError, EOFError):
            # A reused connection the server closed while idle: one fresh attempt.
            # A brand-new connection failing is a real error.
            if not reused:
                raise
            self._drop()
            return self._send_recv(frame)

    def _send_recv(self, frame: dict[str, Any]) -> dict[str, Any]:
        if self._sock is None:
            self._sock = _connect(self.address, self.timeout)
            data = first_exchange(self._sock, frame)
            if data.get("error") == UNAUTHORIZED:
                self._drop()  # the server hangs up on a refused connection
        else:
            socket_send(self._sock, frame)
            data = socket_recv(self._sock)
        if not data:
            raise EOFError("server closed the connection")
        return data

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _after_fork(self) -> None:
        # A forked child must not share the parent's stream or a lock held at fork.
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            self._lock = threading.Lock()
            self._drop()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> LMConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "AUTH_FRAME_BYTES",
    "MAX_FRAME_BYTES",
    "FrameTooLargeError",
    "LMConnection",
    "LMRequest",
    "LMResponse",
    "decode_frame",
    "encode_frame",
    "first_exchange",
    "recv_frame",
    "send_lm_request",
    "send_lm_request_batched",
    "send_payload",
    "socket_recv",
    "socket_request",
    "socket_send",
    "split_batched",
]
