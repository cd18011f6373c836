"""Wire format, LMServer and LMConnection, over real loopback sockets."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from rlm.base import local_tokens
from rlm.base import wire as comms_utils
from rlm.base.errors import WireProtocolError
from rlm.base.types import Prompt
from rlm.base.wire import (
    FrameTooLargeError,
    LMConnection,
    LMRequest,
    LMResponse,
    send_lm_request,
    send_lm_request_batched,
    socket_recv,
    socket_send,
)
from rlm.clients.scripted import ScriptedLM
from rlm.core.lm_handler import LMHandler
from rlm.core.lm_server import LMServer


def _respond(prompt: Prompt) -> str:
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]  # type: ignore[index]
    if text == "boom":
        raise RuntimeError("scripted failure")
    return "echo:" + text


@pytest.fixture
def handler() -> Iterator[LMHandler]:
    h = LMHandler(ScriptedLM(model_name="m", responder=_respond))
    yield h
    h.close()


@pytest.fixture
def server(handler: LMHandler) -> Iterator[LMServer]:
    srv = LMServer(handler, token=handler.token)
    srv.start()
    yield srv
    srv.stop()


def _raw(server: LMServer) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=5)
    return sock


def _frame(data: Any) -> bytes:
    payload = json.dumps(data).encode()
    return struct.pack(">I", len(payload)) + payload


def _is_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# -- framing ------------------------------------------------------------------------


def test_roundtrip_unicode_and_multi_mb() -> None:
    a, b = socket.socketpair()
    with a, b:
        small = {"text": 'héllo 世界 🚀 \u0000 \\ "q"', "n": [1, 2.5, None, True]}
        big = {"blob": "ü" * (3 * 1024 * 1024) + "end"}
        sender = threading.Thread(target=lambda: (socket_send(a, small), socket_send(a, big)))
        sender.start()
        assert socket_recv(b) == small
        assert socket_recv(b) == big
        sender.join()


def test_lone_surrogate_survives() -> None:
    a, b = socket.socketpair()
    with a, b:
        socket_send(a, {"s": "x\ud800y"})
        assert socket_recv(b) == {"s": "x\ud800y"}


def test_partial_reads() -> None:
    a, b = socket.socketpair()
    data = {"prompt": "dribbled ✓", "depth": 3}
    wire = _frame(data)

    def dribble() -> None:
        for i in range(len(wire)):
            a.sendall(wire[i : i + 1])
            time.sleep(0.001)

    with a, b:
        sender = threading.Thread(target=dribble)
        sender.start()
        assert socket_recv(b) == data
        sender.join()


def test_eof_before_frame_returns_empty() -> None:
    a, b = socket.socketpair()
    a.close()
    with b:
        assert socket_recv(b) == {}


@pytest.mark.parametrize("cut", [2, 4, 10])
def test_eof_mid_frame_raises(cut: int) -> None:
    a, b = socket.socketpair()
    with b:
        a.sendall(_frame({"prompt": "truncated payload"})[:cut])
        a.close()
        with pytest.raises(ConnectionError):
            socket_recv(b)


def test_oversized_header_rejected_without_allocating() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", 0xFFFFFFF0))
        tracemalloc.start()
        try:
            with pytest.raises(FrameTooLargeError):
                socket_recv(b)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1024 * 1024
        assert issubclass(FrameTooLargeError, WireProtocolError)


def test_frame_limit_is_a_module_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    assert comms_utils.MAX_FRAME_BYTES == 1 << 30
    monkeypatch.setattr(comms_utils, "MAX_FRAME_BYTES", 100)
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(WireProtocolError):
            socket_send(a, {"x": "y" * 200})
        a.sendall(_frame({"x": "y" * 200}))
        with pytest.raises(WireProtocolError):
            socket_recv(b)


def test_non_object_frame_rejected() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(_frame([1, 2]))
        with pytest.raises(WireProtocolError):
            socket_recv(b)


def test_message_dicts() -> None:
    req = LMRequest(prompt="p", token="t", id=7)
    assert req.to_dict() == {"prompt": "p", "depth": 0, "token": "t", "id": 7}
    assert LMRequest.from_dict(req.to_dict()) == req
    assert LMRequest(prompts=["a"]).is_batched and not LMRequest(prompts=[]).is_batched
    err = LMResponse.error_response("bad", id=3)
    assert err.to_dict() == {
        "error": "bad",
        "chat_completion": None,
        "chat_completions": None,
        "id": 3,
    }
    assert LMResponse.from_dict(err.to_dict()) == err
    assert not err.success and not err.is_batched
    empty = LMResponse.from_dict(LMResponse.batched_success_response([]).to_dict())
    assert empty.success and empty.chat_completions == []


# -- server + compat helpers --------------------------------------------------------


def test_send_lm_request_single_with_usage(server: LMServer, handler: LMHandler) -> None:
    resp = send_lm_request(server.address, LMRequest(prompt="hi"), token=handler.token)
    assert resp.success, resp.error
    assert resp.chat_completion is not None
    assert resp.chat_completion.response == "echo:hi"
    usage = resp.chat_completion.usage_summary.model_usage_summaries["m"]
    assert usage.total_calls == 1 and usage.total_input_tokens > 0


def test_send_lm_request_chat_messages_and_depth(server: LMServer, handler: LMHandler) -> None:
    messages = [{"role": "user", "content": "yo"}]
    resp = send_lm_request(server.address, LMRequest(prompt=messages), depth=1, token=handler.token)
    assert resp.chat_completion is not None and resp.chat_completion.response == "echo:yo"


def test_send_lm_request_batched_order(server: LMServer, handler: LMHandler) -> None:
    prompts: list[Prompt] = [f"p{i}" for i in range(20)]
    out = send_lm_request_batched(server.address, prompts, token=handler.token)
    assert [r.chat_completion.response for r in out if r.chat_completion] == [
        f"echo:p{i}" for i in range(20)
    ]
    assert all(r.success for r in out)


def test_batched_item_error_is_per_item(server: LMServer, handler: LMHandler) -> None:
    out = send_lm_request_batched(server.address, ["a", "boom", "c"], token=handler.token)
    assert [r.success for r in out] == [True, False, True]
    assert "scripted failure" in (out[1].error or "")
    assert out[2].chat_completion is not None and out[2].chat_completion.response == "echo:c"


@pytest.mark.parametrize("token", ["wrong", "ünïcode"])
def test_bad_token_is_unauthorized(server: LMServer, token: str | None) -> None:
    resp = send_lm_request(server.address, LMRequest(prompt="hi"), token=token)
    assert resp.error == "unauthorized"
    batched = send_lm_request_batched(server.address, ["a", "b"], token=token)
    assert [r.error for r in batched] == ["unauthorized", "unauthorized"]


def test_no_token_in_this_process_finds_the_servers_own(server: LMServer) -> None:
    """rlms-era code knows only the address (LMHandler(client) + send_lm_request(
    handler.address, ...)): a server started in this process lends its token to it."""
    resp = send_lm_request(server.address, LMRequest(prompt="hi"))
    assert resp.success and resp.chat_completion is not None
    assert resp.chat_completion.response == "echo:hi"
    batched = send_lm_request_batched(("localhost", server.address[1]), ["a", "b"])
    assert [r.chat_completion.response for r in batched if r.chat_completion] == [
        "echo:a",
        "echo:b",
    ]
    with LMConnection(server.address) as conn:
        assert conn.request(LMRequest(prompt="c")).success


def test_no_token_from_another_process_is_unauthorized(server: LMServer) -> None:
    """The registry is this process's memory: another process without the token is
    refused, single and batched."""
    code = (
        "import sys, json\n"
        "from rlm.base.wire import LMRequest, send_lm_request, send_lm_request_batched\n"
        "addr = (sys.argv[1], int(sys.argv[2]))\n"
        "one = send_lm_request(addr, LMRequest(prompt='hi'))\n"
        "many = send_lm_request_batched(addr, ['a', 'b'])\n"
        "print(json.dumps([one.error] + [r.error for r in many]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, server.address[0], str(server.address[1])],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert json.loads(out) == ["unauthorized"] * 3


def test_stopped_server_forgets_its_token(handler: LMHandler) -> None:
    srv = LMServer(handler, token=handler.token)
    address = srv.start()
    assert local_tokens.lookup(address) == handler.token
    srv.stop()
    assert local_tokens.lookup(address) is None


def test_unauthorized_closes_connection(server: LMServer) -> None:
    with _raw(server) as sock:
        sock.sendall(_frame({"prompt": "hi", "token": "nope", "id": 5}))
        reply = socket_recv(sock)
        assert reply["error"] == "unauthorized" and reply["id"] == 5
        assert _is_closed(sock)


def test_compat_helpers_never_raise() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
    resp = send_lm_request(dead, LMRequest(prompt="x"), timeout=1)
    assert not resp.success and (resp.error or "").startswith("Request failed")
    out = send_lm_request_batched(dead, ["a", "b"], timeout=1)
    assert len(out) == 2 and not any(r.success for r in out)


def test_malformed_requests(server: LMServer, handler: LMHandler) -> None:
    with _raw(server) as sock:
        sock.sendall(_frame({"token": handler.token, "id": 1}))  # no prompt
        reply = socket_recv(sock)
        assert "missing 'prompt'" in reply["error"] and reply["id"] == 1
        sock.sendall(_frame({"prompt": "ok", "token": handler.token, "id": 2}))
        assert socket_recv(sock)["chat_completion"]["response"] == "echo:ok"
    with _raw(server) as sock:
        sock.sendall(_frame(["not", "an", "object"]))
        assert "malformed" in socket_recv(sock)["error"]
        assert _is_closed(sock)
    with _raw(server) as sock:
        sock.sendall(struct.pack(">I", 4) + b"\xff\xfe{}")
        assert "malformed" in socket_recv(sock)["error"]


def test_oversized_frame_closes_connection(
    server: LMServer, handler: LMHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(comms_utils, "MAX_FRAME_BYTES", 1000)
    with _raw(server) as sock:
        socket_send(sock, {"auth": True, "token": handler.token})
        assert socket_recv(sock)["auth"] == "ok"  # an authenticated connection's frame
        sock.sendall(struct.pack(">I", 5000))
        assert _is_closed(sock)


# -- persistent connection ----------------------------------------------------------


def test_persistent_connection_reuses_one_socket(server: LMServer, handler: LMHandler) -> None:
    with LMConnection(server.address, token=handler.token) as conn:
        for i in range(200):
            resp = conn.request(LMRequest(prompt=f"q{i}"))
            assert resp.chat_completion is not None
            assert resp.chat_completion.response == f"echo:q{i}"
        assert resp.id == 200
    assert server.connections_accepted == 1


def test_connection_shared_by_threads(server: LMServer, handler: LMHandler) -> None:
    conn = LMConnection(server.address, token=handler.token)
    errors: list[str] = []

    def worker(t: int) -> None:
        for i in range(25):
            prompt = f"t{t}-{i}"
            resp = conn.request(LMRequest(prompt=prompt))
            got = resp.chat_completion.response if resp.chat_completion else resp.error
            if got != f"echo:{prompt}":
                errors.append(f"{prompt} -> {got}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    conn.close()
    assert errors == []
    assert server.connections_accepted == 1


def test_client_error_keeps_connection_usable(server: LMServer, handler: LMHandler) -> None:
    with LMConnection(server.address, token=handler.token) as conn:
        bad = conn.request(LMRequest(prompt="boom"))
        assert bad.error == "LM call failed: RuntimeError: scripted failure"
        good = conn.request(LMRequest(prompt="after"))
        assert good.chat_completion is not None and good.chat_completion.response == "echo:after"
        batch = conn.request(LMRequest(prompts=["x", "boom"]))
        assert batch.chat_completions is not None
        assert [c.error is None for c in batch.chat_completions] == [True, False]
    assert server.connections_accepted == 1


def test_connection_reconnects_once_after_server_drop(server: LMServer, handler: LMHandler) -> None:
    with LMConnection(server.address, token=handler.token) as conn:
        assert conn.request(LMRequest(prompt="1")).success
        for c in list(server._conns):  # the server drops the idle connection
            c.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 2
        while server.active_connections and time.monotonic() < deadline:
            time.sleep(0.005)
        resp = conn.request(LMRequest(prompt="2"))
        assert resp.chat_completion is not None and resp.chat_completion.response == "echo:2"
    assert server.connections_accepted == 2


def test_connection_to_dead_server_returns_error(handler: LMHandler) -> None:
    srv = LMServer(handler, token=handler.token)
    srv.start()
    address = srv.address
    srv.stop()
    with LMConnection(address, token=handler.token, timeout=1) as conn:
        resp = conn.request(LMRequest(prompt="x"))
        assert not resp.success and (resp.error or "").startswith("Request failed")


# -- lifecycle ----------------------------------------------------------------------


def test_stop_is_fast_and_port_refuses(handler: LMHandler) -> None:
    srv = LMServer(handler, token=handler.token)
    srv.start()
    conn = LMConnection(srv.address, token=handler.token)
    assert conn.request(LMRequest(prompt="warm")).success  # one idle client connection
    started = time.perf_counter()
    srv.stop()
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"stop() took {elapsed:.3f}s"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(srv.address, timeout=1).close()
    assert not conn.request(LMRequest(prompt="late")).success
    conn.close()
    srv.stop()  # idempotent


def test_handler_start_stop_uses_server(handler: LMHandler) -> None:
    host, port = handler.start()
    assert host == "127.0.0.1" and port > 0
    resp = send_lm_request((host, port), LMRequest(prompt="via handler"), token=handler.token)
    assert resp.chat_completion is not None
    assert resp.chat_completion.response == "echo:via handler"
    handler.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=1).close()


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::"])
def test_non_loopback_bind_refused(handler: LMHandler, host: str) -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        LMServer(handler, host=host, token=handler.token)


def test_loopback_hosts_and_explicit_remote_accepted(handler: LMHandler) -> None:
    LMServer(handler, host="localhost", token=handler.token)
    LMServer(handler, host="127.0.0.2", token=handler.token)
    LMServer(handler, host="0.0.0.0", token=handler.token, allow_remote=True)
