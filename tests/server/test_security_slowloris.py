"""``rlm serve`` closes connections that never finish a request, and caps open ones.

A real ``rlm serve`` subprocess on a loopback port, real sockets. The limits are set
through ``RLM_*`` environment variables (older servers ignore unknown ones and start
anyway, so these tests fail on an assertion there, not at startup).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

REPO = Path(__file__).resolve().parents[2]
TOKEN = "slow-loris-token"
REPLY = "```repl\nanswer['content'] = 'served'\nanswer['ready'] = True\n```"
HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def rlm_serve(tmp_path: Path, **limits: str) -> Iterator[int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env.update(PYTHONPATH=str(REPO), RLM_BACKEND="scripted", RLM_SERVER_TOKEN=TOKEN)
    env["RLM_BACKEND_KWARGS"] = json.dumps({"model_name": "scripted", "responses": [REPLY]})
    env.update(limits)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "no server"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def open_sockets(port: int, count: int, payload: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if payload:
            sock.sendall(payload)
        socks.append(sock)
    return socks


def wait_closed(socks: list[socket.socket], within: float) -> tuple[int, list[bytes]]:
    """How many of ``socks`` the server closed within ``within`` seconds, and what it
    sent them (each socket is read until EOF or the deadline)."""
    open_ones = {s.fileno(): s for s in socks}
    received = {fd: b"" for fd in open_ones}
    closed = 0
    deadline = time.monotonic() + within
    while open_ones and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(list(open_ones.values()), [], [], min(left, 0.5))
        for sock in ready:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if data:
                received[sock.fileno()] += data
                continue
            closed += 1
            del open_ones[sock.fileno()]
    return closed, list(received.values())


def ask(port: int) -> str:
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0, timeout=30
    )
    reply = client.chat.completions.create(
        model="rlm", messages=[{"role": "user", "content": "hi"}]
    )
    return str(reply.choices[0].message.content)


LIMITS = {
    "RLM_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "RLM_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
    "RLM_MAX_CONNECTIONS": "100",
}


def test_half_sent_requests_are_closed_while_real_clients_are_served(tmp_path: Path) -> None:
    with rlm_serve(tmp_path, **LIMITS) as port:
        partial = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        socks = open_sockets(port, 40, partial) + open_sockets(port, 10, b"")  # 10 silent
        try:
            started = time.monotonic()
            assert ask(port) == "served"  # a real client is served meanwhile
            closed, received = wait_closed(socks, within=HEADER_TIMEOUT + 5)
            assert closed == 50, f"{50 - closed} half-open connections still open"
            assert time.monotonic() - started < HEADER_TIMEOUT + 5
            assert all(r.startswith(b"HTTP/1.1 408") for r in received), received[:2]
            assert ask(port) == "served"
        finally:
            for sock in socks:
                sock.close()


def test_a_stalled_body_is_closed(tmp_path: Path) -> None:
    with rlm_serve(tmp_path, **LIMITS) as port:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n"
        ).encode()
        socks = open_sockets(port, 20, head + b'{"model": "rlm", ')
        try:
            closed, _ = wait_closed(socks, within=IDLE_TIMEOUT + 5)
            assert closed == 20, f"{20 - closed} stalled uploads still open"
            assert ask(port) == "served"
        finally:
            for sock in socks:
                sock.close()


def test_connections_past_the_cap_are_refused_at_once(tmp_path: Path) -> None:
    # Timeouts long enough that only the cap can close anything during the test.
    limits = {**LIMITS, "RLM_MAX_CONNECTIONS": "20", "RLM_HEADER_TIMEOUT": "60"}
    with rlm_serve(tmp_path, **limits) as port:
        socks = open_sockets(port, 30, b"")
        try:
            closed, received = wait_closed(socks, within=3)
            # At most 20 are held (the readiness probe may still count for a moment).
            assert 10 <= closed <= 11, f"{30 - closed} connections held; the cap is 20"
            refused = [r for r in received if r]
            assert len(refused) == closed
            assert all(r.startswith(b"HTTP/1.1 503") for r in refused), refused[:2]
        finally:
            for sock in socks:
                sock.close()
        deadline = time.monotonic() + 10
        while True:  # the held ones are gone: the server serves again
            try:
                assert ask(port) == "served"
                break
            except openai.APIError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
