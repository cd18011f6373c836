"""Connection-level limits for ``rlm serve``: header and idle timeouts, a connection cap.

uvicorn (up to at least 0.55) has no timeout for reading a request: a client that opens
a connection and sends half a request line, or headers and then a trickle of body, keeps
its socket, and a few hundred of them exhaust the server's file descriptors (the
"slowloris" attack). Its ``timeout_keep_alive`` only covers the idle time after a
response, and ``limit_concurrency`` answers 503 once headers arrive, which a slow
client never completes. ``guarded_protocol`` wraps uvicorn's HTTP protocol class
(h11 or httptools, whichever uvicorn picks) with:

- **header timeout**: a request's headers must be complete within ``header_timeout``
  seconds of the connection opening, or of the previous response's end;
- **idle timeout**: while a request's body is arriving, at most ``idle_timeout``
  seconds may pass without a byte;
- **connection cap**: past ``max_connections`` open connections, a new one gets a 503
  and is closed at once, before it can hold a descriptor.

A connection that breaks a limit is closed (a 408 is sent first when no request was
under way). Nothing is timed while the application works on a complete request: a long
completion, or a stream, is never cut.

Every response written here is OpenAI's error JSON (``rlm.server.errors``), as the
application's are: the 503 and 408 above, and the 400 uvicorn sends for a request its
parser rejects (a malformed request line or header), which uvicorn writes as plain text
(``Invalid HTTP request received.``) from ``send_400_response``; the wrapper overrides
that one method.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from rlm.server.errors import APIError, error_body

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_KEEP_ALIVE = 5


def _response(status: int, reason: str, message: str, code: str) -> bytes:
    """A whole ``connection: close`` HTTP/1.1 response holding OpenAI's error JSON."""
    api = APIError(status, message, code=code)
    body = json.dumps(error_body(api.message, api.type, api.param, api.code)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nconnection: close\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


_OVERLOADED = _response(503, "Service Unavailable", "Too many open connections; retry "
                        "shortly.", "too_many_connections")  # fmt: skip
_TIMED_OUT = _response(408, "Request Timeout", "The request was not received in time.",
                       "request_timeout")  # fmt: skip
_MALFORMED = _response(400, "Bad Request", "Invalid HTTP request received: the request line "
                       "or a header is not valid HTTP/1.1.", "invalid_http_request")  # fmt: skip


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits ``guarded_protocol`` enforces (seconds, and a count)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    keep_alive: int = DEFAULT_KEEP_ALIVE

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.idle_timeout <= 0 or self.keep_alive <= 0:
            raise ValueError("connection timeouts must be greater than 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


def guarded_protocol(limits: ConnectionLimits, base: type[Any] | None = None) -> type[Any]:
    """uvicorn's HTTP protocol class (``base``, default uvicorn's auto choice) with
    ``limits`` enforced; pass it as ``uvicorn.Config(http=...)``."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol

    class GuardedHTTPProtocol(base):  # type: ignore[misc, valid-type]
        _rlm_timer: asyncio.TimerHandle | None = None
        _rlm_phase: str | None = None  # "headers", "body" or None (nothing timed)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(_OVERLOADED)
                transport.close()
                return
            self._rlm_watch()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._rlm_watch()

        def on_response_complete(self) -> None:
            self._rlm_cancel()
            super().on_response_complete()  # may start a pipelined request
            self._rlm_watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._rlm_cancel()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to bytes its parser rejects (h11, httptools and zttp
            all call this, then nothing else): OpenAI's error JSON, not plain text."""
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(_MALFORMED)
            self.transport.close()

        # -- the timer -------------------------------------------------------------

        def _rlm_watch(self) -> None:
            """Time whatever the connection is waiting for from the client."""
            if self.transport is None or self.transport.is_closing():
                self._rlm_cancel()
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                if self._rlm_phase != "headers":  # the deadline runs from the first wait
                    self._rlm_arm("headers", limits.header_timeout)
            elif cycle.more_body:
                self._rlm_arm("body", limits.idle_timeout)  # reset by every byte
            else:
                self._rlm_cancel()  # the request is in; the application is working

        def _rlm_arm(self, phase: str, delay: float) -> None:
            self._rlm_cancel()
            self._rlm_phase = phase
            self._rlm_timer = self.loop.call_later(delay, self._rlm_expired)

        def _rlm_cancel(self) -> None:
            if self._rlm_timer is not None:
                self._rlm_timer.cancel()
            self._rlm_timer, self._rlm_phase = None, None

        def _rlm_expired(self) -> None:
            phase, self._rlm_timer, self._rlm_phase = self._rlm_phase, None, None
            if self.transport is None or self.transport.is_closing():
                return
            if phase == "headers" and (self.cycle is None or self.cycle.response_complete):
                self.transport.write(_TIMED_OUT)
            self.transport.close()

    return GuardedHTTPProtocol


def uvicorn_config(
    app: Any, host: str, port: int, limits: ConnectionLimits | None = None, **options: Any
) -> Any:
    """A ``uvicorn.Config`` serving ``app`` with ``limits`` (default ``ConnectionLimits()``)."""
    import uvicorn

    limits = limits or ConnectionLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits),
        timeout_keep_alive=limits.keep_alive,
        **options,
    )


__all__ = ["ConnectionLimits", "guarded_protocol", "uvicorn_config"]
