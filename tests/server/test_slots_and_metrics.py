"""Slots that free themselves, idempotent retries, the expiry timer and ``/metrics``,
against the app served by a real uvicorn on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from server_support import TOKEN, ScriptedFactory, serve_in_thread  # noqa: E402

from rlm.server import create_app  # noqa: E402
from rlm.server.sessions import InMemorySessionRegistry  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def body(question: str = "hello", session: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": "rlm", "messages": [{"role": "user", "content": question}]}
    if session is not None:
        payload["session_id"] = session
    return payload


def eventually(check: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_a_client_that_gives_up_frees_its_slot_and_cancels_its_run() -> None:
    factory = ScriptedFactory(latency=60)  # a hung upstream
    app = create_app(factory, token=TOKEN, max_concurrency=2)
    server = app.state.server
    with serve_in_thread(app) as base:
        for _ in range(2):  # two clients give up on the hung model
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{base}/chat/completions", json=body(), headers=AUTH, timeout=0.5)
        assert eventually(lambda: server.limit.active == 0)  # both slots came back
        factory.latency = 0  # the upstream recovers
        for rlm in factory.built:
            rlm.close()
        ok = httpx.post(f"{base}/chat/completions", json=body(), headers=AUTH, timeout=10)
        assert ok.status_code == 200, ok.text
        metrics = httpx.get(f"{base.removesuffix('/v1')}/metrics", headers=AUTH).text
    assert "rlm_client_disconnects_total 2" in metrics
    assert 'rlm_requests_total{route="/v1/chat/completions",status="499"} 2' in metrics


def test_a_slow_body_holds_no_slot() -> None:
    app = create_app(ScriptedFactory(), token=TOKEN, max_concurrency=1, body_timeout=0.5)
    with serve_in_thread(app) as base:
        port = int(base.rsplit(":", 1)[1].split("/")[0])
        slow = socket.create_connection(("127.0.0.1", port))
        try:
            slow.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: 1000\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b'\r\n\r\n{"mod'
            )
            time.sleep(0.1)  # its headers are in, its body is not: it must not take the slot
            ok = httpx.post(f"{base}/chat/completions", json=body(), headers=AUTH, timeout=10)
            assert ok.status_code == 200, ok.text
            slow.settimeout(10)
            answer = ""
            while "request_timeout" not in answer:  # the body never came: 408
                part = slow.recv(4096).decode()
                if not part:
                    break
                answer += part
            assert answer.startswith("HTTP/1.1 408"), answer
            assert "request_timeout" in answer
        finally:
            slow.close()


def test_the_overload_429_says_when_to_retry() -> None:
    app = create_app(ScriptedFactory(latency=60), token=TOKEN, max_concurrency=1)
    with serve_in_thread(app) as base:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/chat/completions", json=body(), headers=AUTH, timeout=0.3)
        # the first request's slot is freed by its disconnect; hold one for real:
        with httpx.Client(timeout=5) as client:
            app.state.server.limit.active = 1
            busy = client.post(f"{base}/chat/completions", json=body(), headers=AUTH)
            app.state.server.limit.active = 0
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "overloaded"


def test_an_idempotent_retry_runs_once() -> None:
    factory = ScriptedFactory()
    app = create_app(factory, token=TOKEN)
    with serve_in_thread(app) as base:
        headers = {**AUTH, "Idempotency-Key": "turn-1"}
        payload = body("REMEMBER plum", session="s")
        first = httpx.post(f"{base}/chat/completions", json=payload, headers=headers)
        again = httpx.post(f"{base}/chat/completions", json=payload, headers=headers)
        other = httpx.post(f"{base}/chat/completions", json=payload, headers=AUTH)
        bad = httpx.post(f"{base}/chat/completions", json=payload,
                         headers={**AUTH, "Idempotency-Key": "x" * 300})  # fmt: skip
        (info,) = app.state.sessions.list()
    assert first.status_code == again.status_code == other.status_code == 200
    assert again.json()["choices"] == first.json()["choices"]
    assert len(factory.built) == 1 and info.turns == 2  # two turns ran, not three
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


def test_an_evicted_session_is_a_410_not_a_fresh_start() -> None:
    registry: InMemorySessionRegistry[Any] = InMemorySessionRegistry(max_sessions=1, grace=0)
    app = create_app(ScriptedFactory(), token=TOKEN, sessions=registry)
    with serve_in_thread(app) as base:

        def ask(question: str, session: str) -> httpx.Response:
            payload = body(question, session=session)
            return httpx.post(f"{base}/chat/completions", json=payload, headers=AUTH)

        assert ask("REMEMBER plum", "a").status_code == 200
        assert ask("hello", "b").status_code == 200  # evicts "a"
        gone = ask("RECALL", "a")
        metrics = httpx.get(f"{base.removesuffix('/v1')}/metrics", headers=AUTH).text
    assert gone.status_code == 410, gone.text
    error = gone.json()["error"]
    assert error["code"] == "session_expired" and error["param"] == "session_id"
    assert "evicted" in error["message"] and "--session-store" in error["message"]
    assert "rlm_sessions_evicted_total 1" in metrics and "rlm_sessions_gone_total 1" in metrics


def test_expired_sessions_are_closed_by_the_timer() -> None:
    registry: InMemorySessionRegistry[Any] = InMemorySessionRegistry(idle_ttl=0.2)
    factory = ScriptedFactory()
    app = create_app(factory, token=TOKEN, sessions=registry, sweep_interval=0.1)
    with serve_in_thread(app) as base:
        ok = httpx.post(f"{base}/chat/completions", json=body(session="s"), headers=AUTH)
        assert ok.status_code == 200
        assert eventually(lambda: len(registry) == 0)  # no request needed to expire it
        (rlm,) = factory.built
        assert rlm._session is None  # closed: its environment released


def test_metrics_need_the_token() -> None:
    app = create_app(ScriptedFactory(), token=TOKEN)
    with serve_in_thread(app) as base:
        root = base.removesuffix("/v1")
        assert httpx.get(f"{root}/metrics").status_code == 401
        httpx.post(f"{base}/chat/completions", json=body(), headers=AUTH)
        page = httpx.get(f"{root}/metrics", headers=AUTH)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    text = page.text
    assert 'rlm_requests_total{route="/v1/chat/completions",status="200"} 1' in text
    assert 'rlm_request_seconds_count{route="/v1/chat/completions"} 1' in text
    assert "rlm_tokens_total " in text and "rlm_sessions_live 0" in text
    assert TOKEN not in text
