"""Security hardening, finding 8: the LM handler socket authenticates before it
allocates, closes idle connections, and caps how many it serves at once.

The first frame of a connection must be small (``AUTH_FRAME_BYTES``) and carry the
token; only then are frames up to ``MAX_FRAME_BYTES`` read. The in-process helpers
(``send_lm_request``, ``send_lm_request_batched``, ``LMConnection``) still send the
token inside each request and authenticate first when a request is large, so
``rlms``-era callers keep working unchanged.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from rlm.base.types import Prompt
from rlm.base.wire import (
    LMConnection,
    LMRequest,
    send_lm_request,
    send_lm_request_batched,
    socket_recv,
    socket_send,
)
from rlm.clients.scripted import ScriptedLM
from rlm.core import lm_server
from rlm.core.lm_handler import LMHandler
from rlm.core.lm_server import LMServer


def _echo(prompt: Prompt) -> str:
    text = prompt if isinstance(prompt, str) else str(prompt)
    return f"echo:{len(text)}"


@pytest.fixture
def handler() -> Iterator[LMHandler]:
    h = LMHandler(ScriptedLM(model_name="m", responder=_echo))
    yield h
    h.close()


def _frame(data: Any) -> bytes:
    payload = json.dumps(data).encode()
    return struct.pack(">I", len(payload)) + payload


def _wait_closed(sock: socket.socket, limit: float = 20.0) -> bool:
    """True once the server has closed ``sock`` (EOF or reset), within ``limit`` s."""
    sock.settimeout(limit)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _until(predicate: Any, limit: float = 20.0) -> bool:
    """Poll ``predicate`` until it holds or ``limit`` seconds pass (a bounded wait)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# -- authenticate before allocating ----------------------------------------------------


def test_unauthenticated_large_first_frame_is_never_allocated(handler: LMHandler) -> None:
    big = _frame({"prompt": "z" * (8 << 20), "token": "wrong"})  # 8 MB, made before tracing
    server = LMServer(handler, token=handler.token)
    server.start()
    try:
        tracemalloc.start()
        try:
            with socket.create_connection(server.address, timeout=20) as sock:
                with contextlib.suppress(OSError):  # the server may hang up mid-send
                    sock.sendall(big)
                assert _wait_closed(sock)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        server.stop()
    assert peak < 2 << 20, f"server allocated {peak:,} bytes for an unauthenticated frame"


def test_first_frame_over_the_auth_cap_is_refused_even_with_the_token(
    handler: LMHandler,
) -> None:
    server = LMServer(handler, token=handler.token)
    server.start()
    try:
        with socket.create_connection(server.address, timeout=20) as sock:
            sock.sendall(_frame({"prompt": "y" * 10_000, "token": handler.token}))
            reply = socket_recv(sock)
            assert "unauthorized" in (reply.get("error") or "")
            assert reply.get("chat_completion") is None
    finally:
        server.stop()


def test_auth_frame_then_large_frames(handler: LMHandler) -> None:
    server = LMServer(handler, token=handler.token)
    server.start()
    try:
        with socket.create_connection(server.address, timeout=20) as sock:
            socket_send(sock, {"auth": True, "token": handler.token})
            assert socket_recv(sock).get("auth") == "ok"
            for i in range(3):  # no token needed once the connection is authenticated
                socket_send(sock, {"prompt": "w" * 1_000_000, "id": i})
                reply = socket_recv(sock)
                assert reply["id"] == i
                assert reply["chat_completion"]["response"] == "echo:1000000"
    finally:
        server.stop()


def test_bad_auth_frame_is_unauthorized(handler: LMHandler) -> None:
    server = LMServer(handler, token=handler.token)
    server.start()
    try:
        with socket.create_connection(server.address, timeout=20) as sock:
            socket_send(sock, {"auth": True, "token": "nope"})
            assert socket_recv(sock)["error"] == "unauthorized"
            assert _wait_closed(sock)
    finally:
        server.stop()


# -- rlms-era callers in this process keep working -------------------------------------


def test_rlms_era_calls_without_a_token_still_work(handler: LMHandler) -> None:
    """``LMHandler(client)`` + ``send_lm_request(handler.address, LMRequest(...))`` with
    no token, small and large, single and batched (rlms 0.1.3 ``test_lm_handler.py``)."""
    with handler:
        small = send_lm_request(handler.address, LMRequest(prompt="hello"))
        large = send_lm_request(handler.address, LMRequest(prompt="v" * 300_000))
        batch = send_lm_request_batched(handler.address, ["a" * 50_000, "b"])
    assert small.success and small.chat_completion is not None
    assert large.success and large.chat_completion is not None
    assert large.chat_completion.response == "echo:300000"
    assert [r.chat_completion.response for r in batch if r.chat_completion] == [
        "echo:50000",
        "echo:1",
    ]


def test_persistent_connection_with_large_requests(handler: LMHandler) -> None:
    with handler, LMConnection(handler.address) as conn:
        for size in (10, 200_000, 10, 500_000):
            resp = conn.request(LMRequest(prompt="u" * size))
            assert resp.chat_completion is not None
            assert resp.chat_completion.response == f"echo:{size}"


def test_large_request_with_a_wrong_token_is_unauthorized(handler: LMHandler) -> None:
    with handler:
        resp = send_lm_request(handler.address, LMRequest(prompt="t" * 100_000), token="bad")
    assert not resp.success and "unauthorized" in (resp.error or "")


# -- idle connections and the connection cap -------------------------------------------


def test_idle_connections_are_closed(handler: LMHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lm_server, "AUTH_TIMEOUT", 1.0, raising=False)
    monkeypatch.setattr(lm_server, "IDLE_TIMEOUT", 0.5, raising=False)
    server = LMServer(handler, token=handler.token)
    server.start()
    socks: list[socket.socket] = []
    try:
        for _ in range(20):  # never send a byte
            socks.append(socket.create_connection(server.address, timeout=20))
        authed = socket.create_connection(server.address, timeout=20)
        socks.append(authed)
        authed.sendall(_frame({"prompt": "hi", "token": handler.token, "id": 1}))
        assert socket_recv(authed)["chat_completion"]["response"] == "echo:2"
        # then idle: the server hangs up on every one of them
        assert _until(lambda: server.connections_accepted == 21)
        assert _until(lambda: server.active_connections == 0), server.active_connections
        assert _wait_closed(authed)
    finally:
        for s in socks:
            s.close()
        server.stop()


def test_connection_cap_bounds_threads(handler: LMHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lm_server, "MAX_CONNECTIONS", 8, raising=False)
    server = LMServer(handler, token=handler.token)
    server.start()
    threads_before = threading.active_count()
    socks: list[socket.socket] = []
    try:
        for _ in range(100):  # idle connections (the kernel's backlog holds the rest)
            socks.append(socket.create_connection(server.address, timeout=20))
        _until(lambda: server.active_connections > 8, limit=2.0)
        assert server.active_connections <= 8, server.active_connections
        assert threading.active_count() - threads_before <= 8 + 2
        for s in socks:
            s.close()
        socks.clear()
        # slots free up, and a real request gets served
        resp = send_lm_request(server.address, LMRequest(prompt="after"), timeout=60)
        assert resp.success, resp.error
    finally:
        for s in socks:
            s.close()
        server.stop()
