"""LMServer: the loopback socket through which out-of-process workers reach a session.

It serves any ``rlm.base.ports.RequestHandler`` (the engine's is ``LMHandler``): it
reads and authenticates frames, checks that a request is well formed, and hands it to
``handle_request``; it knows nothing of clients, budgets or the model policy.
``OnDemandServer`` is a handler's server slot: nothing listens until ``start()``.

A plain accept loop on a daemon thread rather than ``socketserver``: its shutdown
polls every 0.5 s, while ``stop()`` here returns at once. Each connection gets its own
daemon thread and serves any number of request frames (workers keep one persistent
``LMConnection``).

A connection authenticates before the server allocates anything for it: its first
frame may be at most ``AUTH_FRAME_BYTES`` and must carry the token (a small request,
or ``{"auth": true, "token": ...}``, answered ``{"auth": "ok"}``), and must arrive
within ``AUTH_TIMEOUT`` seconds. Only then are frames up to ``MAX_FRAME_BYTES`` read.
An authenticated connection idle for ``IDLE_TIMEOUT`` seconds is closed (clients
reconnect), and at most ``MAX_CONNECTIONS`` are served at once: further connections
wait in the listen backlog until one closes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from rlm.base import local_tokens
from rlm.base import wire as comms_utils
from rlm.base.errors import WireProtocolError
from rlm.base.wire import (
    AUTH_OK,
    UNAUTHORIZED,
    FrameTooLargeError,
    LMRequest,
    LMResponse,
    decode_frame,
    recv_frame,
    socket_send,
)

if TYPE_CHECKING:
    from rlm.base.ports import RequestHandler

# Defaults of the LMServer arguments of the same names (read when a server is made).
AUTH_TIMEOUT: float = 5.0  # seconds a new connection has to send its first frame
IDLE_TIMEOUT: float = 300.0  # seconds an authenticated connection may wait between frames
MAX_CONNECTIONS: int = 64  # connections served at once (one thread each)

_JOIN_TIMEOUT = 0.05
Reply = dict[str, Any]


def is_loopback(host: str) -> bool:
    """True if every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def _close(sock: socket.socket, shutdown: bool = True) -> None:
    # shutdown() first: it wakes a thread blocked in accept()/recv() on this socket,
    # which close() alone does not.
    if shutdown:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class LMServer:
    """Serves ``LMRequest`` frames for ``handler`` on ``host:port`` (0 = any free port)."""

    def __init__(
        self,
        handler: RequestHandler,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        allow_remote: bool = False,
        auth_timeout: float | None = None,
        idle_timeout: float | None = None,
        max_connections: int | None = None,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to bind LMServer to non-loopback host {host!r}; "
                "pass allow_remote=True to expose the handler beyond this machine"
            )
        token = token if token is not None else getattr(handler, "token", None)
        if not token:
            raise ValueError("LMServer needs an auth token")
        self.handler = handler
        self.host = host
        self._port = port
        self._token = token.encode("utf-8")
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.auth_timeout = AUTH_TIMEOUT if auth_timeout is None else auth_timeout
        self.idle_timeout = IDLE_TIMEOUT if idle_timeout is None else idle_timeout
        self.max_connections = MAX_CONNECTIONS if max_connections is None else max_connections
        if self.auth_timeout <= 0 or self.idle_timeout <= 0 or self.max_connections < 1:
            raise ValueError("auth_timeout and idle_timeout must be > 0, max_connections >= 1")
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._slot_free = threading.Condition(self._lock)
        self._stopping = False
        self.connections_accepted = 0

    # -- lifecycle --------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self._port)

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def start(self) -> tuple[str, int]:
        """Bind and start accepting (idempotent). Returns ``(host, port)``."""
        with self._lock:
            if self._listener is not None or self._stopping:
                return self.address
            family = socket.getaddrinfo(self.host, self._port, type=socket.SOCK_STREAM)[0][0]
            listener = socket.create_server((self.host, self._port), family=family, backlog=128)
            self._listener = listener
            self._port = listener.getsockname()[1]
            self._thread = threading.Thread(
                target=self._accept_loop, args=(listener,), name="rlm-lm-server", daemon=True
            )
            self._thread.start()
            local_tokens.register(self.address, self._token.decode("utf-8"))
        return self.address

    def stop(self) -> None:
        """Stop accepting and drop every open connection. Returns promptly."""
        with self._lock:
            self._stopping = True
            self._slot_free.notify_all()
            listener, self._listener = self._listener, None
            conns = list(self._conns)
            thread = self._thread
        if listener is not None:
            local_tokens.unregister(self.address)
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            except OSError:
                self._poke(listener)  # platforms where it doesn't: a connection does
            _close(listener, shutdown=False)
        for conn in conns:
            # Only shut down: the connection's thread closes it, so its fd is never
            # closed under a syscall still using it.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)

    @staticmethod
    def _poke(listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            socket.create_connection(listener.getsockname()[:2], timeout=0.1).close()

    def __enter__(self) -> LMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- accept and serve -------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            with self._slot_free:  # at the cap, leave new connections in the backlog
                while len(self._conns) >= self.max_connections and not self._stopping:
                    self._slot_free.wait()
                if self._stopping:
                    return
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # listener shut down or closed by stop()
            with self._lock:
                if self._stopping:
                    _close(conn)
                    return
                self._conns.add(conn)
                self.connections_accepted += 1
                n = self.connections_accepted
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(
                target=self._serve, args=(conn,), name=f"rlm-lm-conn-{n}", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        authed = False
        try:
            while True:
                try:
                    payload = recv_frame(conn) if authed else self._first_frame(conn)
                except FrameTooLargeError as exc:
                    if not authed:  # nothing read beyond the header: say why, hang up
                        self._send(conn, {"error": f"{UNAUTHORIZED}: {exc}"})
                    return  # can't resync past an oversized frame
                except OSError:
                    return  # peer gone, or silent past the auth/idle timeout
                if payload is None:
                    return
                conn.settimeout(self.idle_timeout)  # for the reply, and the next frame
                reply, keep_open = self._respond(payload, authed)
                if not self._send(conn, reply) or not keep_open:
                    return
                authed = True
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._slot_free.notify()
            _close(conn, shutdown=False)

    def _first_frame(self, conn: socket.socket) -> bytearray | None:
        """A new connection's first frame: at most ``AUTH_FRAME_BYTES``, all of it within
        ``auth_timeout`` (a slow sender cannot stretch it byte by byte)."""
        limit = comms_utils.AUTH_FRAME_BYTES
        deadline = time.monotonic() + self.auth_timeout
        header = _read_by(conn, 4, deadline)
        if not header:
            return None
        if len(header) < 4:
            raise ConnectionError("connection closed inside a frame header")
        length = int.from_bytes(header, "big")
        if length > limit:
            raise FrameTooLargeError(
                f"the first frame of a connection must carry the token and be at most "
                f'{limit} bytes (got {length}); send {{"auth": true, "token": ...}} first'
            )
        payload = _read_by(conn, length, deadline)
        if len(payload) < length:
            raise ConnectionError("connection closed before the frame was complete")
        return payload

    @staticmethod
    def _send(conn: socket.socket, reply: Reply) -> bool:
        try:
            try:
                socket_send(conn, reply)
            except WireProtocolError as exc:  # response too large for one frame
                rid = reply.get("id")
                socket_send(conn, LMResponse.error_response(str(exc), id=rid).to_dict())
            return True
        except OSError:
            return False

    def _respond(self, payload: bytearray, authed: bool) -> tuple[Reply, bool]:
        """The reply to one frame, and whether the connection stays open."""
        try:
            data = decode_frame(payload)
        except WireProtocolError as exc:
            # Cannot hold a token, so it is unauthenticated: answer, then hang up.
            return LMResponse.error_response(f"malformed request: {exc}").to_dict(), False
        raw_id = data.get("id")
        rid = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
        if not authed:
            token = data.get("token")
            if not isinstance(token, str) or not secrets.compare_digest(
                token.encode("utf-8"), self._token
            ):
                return LMResponse.error_response(UNAUTHORIZED, id=rid).to_dict(), False
        if data.get("auth") is True and "prompt" not in data and "prompts" not in data:
            return {"error": None, "chat_completion": None, "chat_completions": None,
                    "auth": AUTH_OK}, True  # fmt: skip
        return self._dispatch(LMRequest.from_dict(data), data, rid).to_dict(), True

    def _dispatch(self, req: LMRequest, data: dict[str, Any], rid: int | None) -> LMResponse:
        """Check the request's shape, then let the handler answer it."""
        depth = data.get("depth", 0)
        if not isinstance(depth, int) or isinstance(depth, bool):
            return LMResponse.error_response("malformed request: 'depth' must be an int", id=rid)
        if req.model is not None and not isinstance(req.model, str):
            return LMResponse.error_response("malformed request: 'model' must be a string", id=rid)
        if req.prompts is not None and not isinstance(req.prompts, list):
            return LMResponse.error_response("malformed request: 'prompts' must be a list", id=rid)
        if req.prompts is None and req.prompt is None:
            return LMResponse.error_response(
                "malformed request: missing 'prompt' or 'prompts'", id=rid
            )
        req.id = rid
        try:
            response = self.handler.handle_request(req)
        except Exception as exc:
            return LMResponse.error_response(f"LM call failed: {type(exc).__name__}: {exc}", id=rid)
        response.id = rid
        return response


def _read_by(conn: socket.socket, size: int, deadline: float) -> bytearray:
    """Up to ``size`` bytes (fewer only on EOF); ``TimeoutError`` past ``deadline``."""
    buf = bytearray()
    while len(buf) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete first frame within the auth timeout")
        conn.settimeout(left)
        chunk = conn.recv(size - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


class OnDemandServer:
    """A handler's socket slot: ``start()`` makes and starts an ``LMServer`` (once;
    again after ``stop()``), ``stop()`` stops it. ``address`` is the configured one
    until a server has bound its port."""

    def __init__(self, handler: RequestHandler, host: str, port: int, token: str) -> None:
        self.handler, self.host, self._port, self.token = handler, host, port, token
        self._server: LMServer | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        server = self._server
        return server.port if server is not None else self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> tuple[str, int]:
        """Start the loopback server if it is not running. Returns ``(host, port)``."""
        with self._lock:
            if self._server is None:
                server = LMServer(self.handler, self.host, self._port, self.token)
                server.start()
                self._server = server
        return self.address

    def stop(self) -> None:
        """Stop the server, if running. Returns immediately (no polling)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()


__all__ = [
    "AUTH_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "LMServer",
    "OnDemandServer",
    "is_loopback",
]
