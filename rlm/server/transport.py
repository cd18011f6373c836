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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_KEEP_ALIVE = 5


def _response(status: bytes, body: bytes) -> bytes:
    head = f"connection: close\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}"
    return b"HTTP/1.1 " + status + b"\r\n" + head.encode() + b"\r\n\r\n" + body


_OVERLOADED = _response(b"503 Service Unavailable", b"Too many open connections.\n")
_TIMED_OUT = _response(b"408 Request Timeout", b"Request not received in time.\n")


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
