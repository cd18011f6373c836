"""OpenAIClient against a real llama.cpp server, and against a scripted fake server.

The real server checks the wire format, usage accounting and concurrency; the fake one
produces the statuses a real server will not on demand (503, 429, 401) and counts
requests, so retry behaviour is observed rather than assumed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import rlm.clients
from rlm.base.errors import (
    ConfigurationError,
    MissingAPIKeyError,
    MissingExtraError,
    ProviderConnectionError,
    ProviderError,
    RateLimitError,
)
from rlm.base.types import ModelUsageSummary
from rlm.clients import get_client
from rlm.clients.openai import OpenAIClient
from rlm.clients.retry import RetryPolicy

SAMPLING = {"max_tokens": 16, "temperature": 0, "seed": 1}
FAST_RETRY = RetryPolicy(max_retries=1, base_delay=0.01, jitter=0)

# ---------------------------------------------------------------------------
# Scripted fake server
# ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON, str -> sent as is
    headers: dict[str, str] = field(default_factory=dict)


def chat_json(
    text: str | None = "ok", prompt_tokens: int = 7, completion_tokens: int = 3, **usage: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            **usage,
        },
    }


class FakeServer:
    """Replays replies in order (the last one repeats) and records each request body."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = fake._next(json.loads(raw))
                data = (
                    reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                ).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(*replies: Reply) -> FakeServer:
        servers.append(FakeServer(list(replies) or [Reply(body=chat_json())]))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def fake_client(server: FakeServer, **kwargs: Any) -> OpenAIClient:
    args: dict[str, Any] = {"base_url": server.base_url, "model_name": "fake-model", **kwargs}
    client = get_client("openai_compatible", args)
    assert isinstance(client, OpenAIClient)
    return client


def usage_tuple(usage: ModelUsageSummary) -> tuple[int, int, int]:
    return usage.total_calls, usage.total_input_tokens, usage.total_output_tokens


# ---------------------------------------------------------------------------
# Real llama.cpp server
# ---------------------------------------------------------------------------


def llama_client(server: Any, backend: str = "openai_compatible", **kwargs: Any) -> OpenAIClient:
    args = {"base_url": server.base_url, "model_name": "smollm2", "sampling_args": SAMPLING}
    client = get_client(backend, {**args, **kwargs})
    assert isinstance(client, OpenAIClient)
    return client


def raw_usage(server: Any, messages: list[dict[str, str]]) -> tuple[int, int]:
    """The server's own usage numbers for a request, bypassing our client."""
    body = json.dumps({"model": "smollm2", "messages": messages, **SAMPLING}).encode()
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        usage = json.load(resp)["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


@pytest.mark.llama
@pytest.mark.parametrize("backend", ["openai_compatible", "vllm"])
def test_string_and_message_prompts(llama_server: Any, backend: str) -> None:
    client = llama_client(llama_server, backend)
    try:
        assert isinstance(client.completion("Say hello."), str)
        client.completion({"role": "user", "content": "Name a colour."})
        result = client.complete(
            [
                {"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": "Capital of France?"},
            ]
        )
        assert result.text
        assert result.model == "smollm2"
        assert 0 < result.usage.total_output_tokens <= 16
        summary = client.get_usage_summary().model_usage_summaries["smollm2"]
        assert summary.total_calls == 3
        assert summary.total_cost is None  # an unknown local model has no price
    finally:
        client.close()


@pytest.mark.llama
def test_usage_equals_servers_own_numbers(llama_server: Any) -> None:
    messages = [{"role": "user", "content": "Write a haiku about the sea."}]
    client = llama_client(llama_server)
    try:
        result = client.complete(messages)
        assert (result.usage.total_input_tokens, result.usage.total_output_tokens) == raw_usage(
            llama_server, messages
        )
        assert usage_tuple(client.get_last_usage()) == usage_tuple(result.usage)
    finally:
        client.close()


@pytest.mark.llama
def test_acompletion_and_concurrent_per_call_usage(llama_server: Any) -> None:
    prompts = [f"Repeat the word{' again' * i}: blue." for i in range(8)]
    expected = [raw_usage(llama_server, [{"role": "user", "content": p}]) for p in prompts]
    assert len({e[0] for e in expected}) == 8  # distinct prompt sizes: no lucky matches
    client = llama_client(llama_server)

    async def batch() -> list[Any]:
        return await asyncio.gather(*(client.acomplete(p) for p in prompts))

    try:
        assert isinstance(asyncio.run(client.acompletion("Say hi.")), str)
        single = client.get_last_usage()
        results = asyncio.run(batch())  # a second event loop, on purpose
        got = [(r.usage.total_input_tokens, r.usage.total_output_tokens) for r in results]
        assert got == expected
        summary = client.get_usage_summary().model_usage_summaries["smollm2"]
        assert usage_tuple(summary) == (
            9,
            single.total_input_tokens + sum(e[0] for e in expected),
            single.total_output_tokens + sum(e[1] for e in expected),
        )
    finally:
        client.close()


@pytest.mark.llama
def test_tiny_timeout_is_a_connection_error(llama_server: Any) -> None:
    client = llama_client(llama_server, timeout=0.001, max_retries=1)
    try:
        with pytest.raises(ProviderConnectionError, match="did not answer within"):
            client.completion("Say hello.")
    finally:
        client.close()


# ---------------------------------------------------------------------------
# Failures and retries (fake server)
# ---------------------------------------------------------------------------


def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    client = get_client(
        "vllm",
        {"base_url": f"http://127.0.0.1:{port}/v1", "model_name": "m", "retry_policy": FAST_RETRY},
    )
    with pytest.raises(ProviderConnectionError, match="Could not reach"):
        client.completion("hi")


def test_503_then_success_retries_once(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server(
        Reply(503, {"error": {"message": "overloaded"}}, {"Retry-After": "0"}),
        Reply(body=chat_json("recovered", 5, 2)),
    )
    client = fake_client(server)
    assert client.completion("hi") == "recovered"
    assert len(server.requests) == 2
    assert usage_tuple(client.get_last_usage()) == (1, 5, 2)  # failed attempts cost nothing


def test_503_then_success_retries_once_async(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server(Reply(503, {}, {"Retry-After": "0"}), Reply(body=chat_json("async")))
    client = fake_client(server)
    assert asyncio.run(client.acompletion("hi")) == "async"
    assert len(server.requests) == 2


def test_429_honours_retry_after(
    fake_server: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    server = fake_server(
        Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}),
        Reply(body=chat_json()),
    )
    assert fake_client(server).completion("hi") == "ok"
    assert slept == [7.0]
    assert len(server.requests) == 2


def test_429_exhausted_raises_rate_limit(
    fake_server: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "sleep", lambda _s: None)
    server = fake_server(Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"}))
    with pytest.raises(RateLimitError, match="slow down") as info:
        fake_client(server, max_retries=2).completion("hi")
    assert info.value.retry_after == 1.0
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "Incorrect API key provided"),
        (400, "This model's maximum context length is 2048 tokens"),
        (404, "The model `nope` does not exist"),
    ],
)
def test_client_errors_fail_fast_with_providers_message(
    fake_server: Callable[..., FakeServer], status: int, message: str
) -> None:
    server = fake_server(Reply(status, {"error": {"message": message, "type": "x"}}))
    with pytest.raises(ProviderError, match=message) as info:
        fake_client(server).completion("hi")
    assert info.value.status == status
    assert not info.value.retryable
    assert len(server.requests) == 1


def test_no_choices_or_null_content_is_a_retried_error_never_empty_text(
    fake_server: Callable[..., FakeServer],
) -> None:
    no_choices = {**chat_json(), "choices": []}
    server = fake_server(
        Reply(body=no_choices), Reply(body=chat_json(None, 4, 0)), Reply(body=chat_json("ok"))
    )
    quick = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.001, jitter=0)
    client = fake_client(server, retry_policy=quick)
    assert client.completion("hi") == "ok"  # both unanswered replies were retried
    assert len(server.requests) == 3

    for body, what in [(no_choices, "no choices"), (chat_json(None, 4, 0), "no message content")]:
        lone = fake_server(Reply(body=body))
        with pytest.raises(ProviderError) as info:
            fake_client(lone, max_retries=0).completion("hi")
        assert info.value.retryable and what in str(info.value)
        assert f"the provider at {lone.base_url} answered 200 with" in str(info.value)
        assert len(lone.requests) == 1
    assert "(finish_reason: stop)" in str(info.value)

    empty = fake_server(Reply(body=chat_json("", 4, 0)))  # "" is the model's own answer
    assert fake_client(empty).completion("hi") == ""


def test_reported_cost_and_cached_tokens(fake_server: Callable[..., FakeServer]) -> None:
    body = chat_json("x", 100, 10, cost=0.0042, prompt_tokens_details={"cached_tokens": 64})
    usage = fake_client(fake_server(Reply(body=body))).complete("hi").usage
    assert usage.total_cost == pytest.approx(0.0042)
    assert usage.cache_read_tokens == 64


def test_cost_estimated_from_price_table(fake_server: Callable[..., FakeServer]) -> None:
    client = fake_client(
        fake_server(Reply(body=chat_json("x", 1000, 1000))), model_name="gpt-4o-mini"
    )
    assert client.complete("hi").usage.total_cost == pytest.approx(
        (1000 * 0.15 + 1000 * 0.60) / 1e6
    )


def test_request_body_sampling_args_and_model_override(
    fake_server: Callable[..., FakeServer],
) -> None:
    server = fake_server()
    sampling = {"max_tokens": 5, "temperature": 0.2, "top_k": 3, "seed": None}
    client = fake_client(server, sampling_args=sampling)
    client.completion([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    client.completion("c", model="other-model")
    first, second = server.requests
    assert first["messages"][1] == {"role": "assistant", "content": "b"}
    assert first["max_tokens"] == 5  # kept as is for non-OpenAI servers
    assert first["top_k"] == 3  # unknown to the SDK: sent through extra_body
    assert "seed" not in first
    assert second["model"] == "other-model"
    assert set(client.get_usage_summary().model_usage_summaries) == {"fake-model", "other-model"}


def test_async_client_survives_several_event_loops(
    fake_server: Callable[..., FakeServer],
) -> None:
    server = fake_server()
    client = fake_client(server)
    for _ in range(2):  # pooled connections must not leak across loops
        assert asyncio.run(client.acompletion("hi")) == "ok"
    client.close()
    assert len(server.requests) == 2


def test_invalid_prompt_is_rejected_before_any_request(
    fake_server: Callable[..., FakeServer],
) -> None:
    server = fake_server()
    with pytest.raises(ConfigurationError):
        fake_client(server).completion(42)  # type: ignore[arg-type]
    assert server.requests == []


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "env_var"),
    [("openai", "OPENAI_API_KEY"), ("openrouter", "OPENROUTER_API_KEY")],
)
def test_missing_api_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, backend: str, env_var: str
) -> None:
    monkeypatch.delenv(env_var, raising=False)
    with pytest.raises(MissingAPIKeyError, match=env_var):
        get_client(backend, {"model_name": "gpt-5-nano"})


def test_model_name_is_required() -> None:
    with pytest.raises(ConfigurationError, match="model_name"):
        get_client("vllm", {"base_url": "http://127.0.0.1:9/v1"})


def test_missing_openai_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
    original = sys.modules["rlm.clients.openai"]
    monkeypatch.setattr(rlm.clients, "openai", original)  # restored with sys.modules below
    monkeypatch.delitem(sys.modules, "rlm.clients.openai")
    module = importlib.import_module("rlm.clients.openai")  # still imports cleanly
    with pytest.raises(MissingExtraError, match=r"pip install 'rlmx\[openai\]'"):
        module.OpenAIClient(api_key="k", model_name="gpt-5-nano")


def test_network_guard_blocks_non_loopback() -> None:
    with pytest.raises(RuntimeError, match="loopback"):
        socket.create_connection(("203.0.113.1", 443), timeout=0.1)
    with socket.socket() as sock, pytest.raises(RuntimeError, match="loopback"):
        sock.connect(("203.0.113.1", 443))
