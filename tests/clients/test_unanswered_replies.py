"""An HTTP 200 that holds no answer is a provider error, never an empty answer.

A proxy's HTML page, broken or empty JSON, a reply with no choices or no content: each
client raises a retryable ``ProviderError`` naming the body (content type, size, its
start, redacted), its retries are bounded, and an RLM run ends with that error after
exactly ``1 + max_retries`` requests, never with ``""`` as its answer. The real SDKs
talk to a loopback server (``fake_providers``); only the transport is fake.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest
from fake_providers import FakeProviderServer, Reply, openai_chat

from rlm import RLM
from rlm.base.errors import ProviderError
from rlm.clients import get_client
from rlm.clients.retry import RetryPolicy

HTML = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>"
    + b"<p>upstream said: Authorization: Bearer sk-echoed-secret-123456</p>" * 20
    + b"</body></html>"
)
KEY = "sk-test-key-0123456789"
QUICK = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.002, jitter=0.0)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProviderServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with FakeProviderServer() as fake:
        yield fake


# backend, SDK module, backend_kwargs (``{url}`` is the server's root), what messages name
BACKENDS: list[tuple[str, str, dict[str, Any], str]] = [
    ("openai", "openai", {"base_url": "{url}/v1", "model_name": "m"}, "the provider at {url}/v1"),
    (
        "azure_openai",
        "openai",
        {"azure_endpoint": "{url}", "model_name": "m", "api_version": "2024-02-01"},
        "Azure OpenAI at {url}",
    ),
    ("anthropic", "anthropic", {"base_url": "{url}", "model_name": "claude-x"}, "Anthropic API"),
    ("gemini", "google.genai", {"base_url": "{url}", "model_name": "gemini-x"}, "Gemini API"),
    ("portkey", "portkey_ai", {"base_url": "{url}/v1", "model_name": "m"}, "Portkey at {url}/v1"),
]
LITELLM = ("litellm", "litellm", {"api_base": "{url}/v1", "model_name": "openai/m"}, "LiteLLM")


def _params(backends: list[tuple[str, str, dict[str, Any], str]]) -> list[Any]:
    return [
        pytest.param(
            *case,
            id=case[0],
            marks=pytest.mark.skipif(not _installed(case[1]), reason=f"{case[1]} missing"),
        )
        for case in backends
    ]


def _client(server: FakeProviderServer, backend: str, kwargs: dict[str, Any]) -> Any:
    args = {k: v.format(url=server.url) if isinstance(v, str) else v for k, v in kwargs.items()}
    return get_client(backend, {**args, "api_key": KEY, "retry_policy": QUICK})


def _call(client: Any, mode: str) -> str:
    if mode == "sync":
        return str(client.completion("hi"))
    return str(asyncio.run(client.acompletion("hi")))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("backend", "sdk", "kwargs", "where"), _params(BACKENDS))
def test_an_html_page_with_200_is_a_retried_provider_error(
    server: FakeProviderServer,
    mode: str,
    backend: str,
    sdk: str,
    kwargs: dict[str, Any],
    where: str,
) -> None:
    server.always(Reply(200, raw=HTML, content_type="text/html; charset=utf-8"))
    client = _client(server, backend, kwargs)

    with pytest.raises(ProviderError) as info:
        _call(client, mode)
    error = info.value
    message = str(error)
    assert error.retryable and error.status is None
    assert len(server.requests) == 1 + QUICK.max_retries  # bounded: 3 requests, not more
    assert where.format(url=server.url) in message
    assert "answered 200 with a non-JSON body" in message
    assert f"{len(HTML):,} bytes" in message
    assert "'<!DOCTYPE html> <html><head><title>502 Bad Gateway</title>" in message
    assert message.endswith("…'") and len(message) < 400  # the start of the body only
    if backend in ("openai", "azure_openai", "anthropic"):  # the raw response is read
        assert "(text/html, " in message
    client.close()


@pytest.mark.parametrize(("backend", "sdk", "kwargs", "where"), _params([*BACKENDS, LITELLM]))
@pytest.mark.parametrize(
    ("raw", "content_type"),
    [(b"{not json", "application/json"), (b"", "application/json"), (HTML, "text/html")],
    ids=["broken-json", "empty", "html"],
)
def test_every_client_retries_an_unreadable_200_then_fails(
    server: FakeProviderServer,
    raw: bytes,
    content_type: str,
    backend: str,
    sdk: str,
    kwargs: dict[str, Any],
    where: str,
) -> None:
    server.always(Reply(200, raw=raw, content_type=content_type))
    client = _client(server, backend, kwargs)
    with pytest.raises(ProviderError) as info:
        client.completion("hi")
    assert info.value.retryable
    assert len(server.requests) == 1 + QUICK.max_retries
    assert "sk-echoed-secret" not in str(info.value)
    client.close()


def test_a_key_echoed_in_the_body_is_masked(server: FakeProviderServer) -> None:
    page = f"<html>your key {KEY} is not allowed here, token={KEY}</html>".encode()
    server.always(Reply(200, raw=page, content_type="text/html"))
    client = _client(server, "openai", {"base_url": "{url}/v1", "model_name": "m"})
    with pytest.raises(ProviderError) as info:
        client.completion("hi")
    assert KEY not in str(info.value) and "your key *** is not allowed" in str(info.value)


def test_an_unreadable_reply_then_an_answer_is_the_answer(server: FakeProviderServer) -> None:
    server.enqueue(
        Reply(200, raw=HTML, content_type="text/html"),
        Reply(200, {**openai_chat(), "choices": []}),
        Reply(200, openai_chat("finally")),
    )
    client = _client(server, "openai", {"base_url": "{url}/v1", "model_name": "m"})
    assert client.completion("hi") == "finally"
    assert len(server.requests) == 3
    assert client.get_usage_summary().model_usage_summaries["m"].total_calls == 1


@pytest.mark.skipif(not _installed("anthropic"), reason="anthropic missing")
def test_an_anthropic_reply_without_text_is_an_error(server: FakeProviderServer) -> None:
    from fake_providers import anthropic_message

    server.always(Reply(200, {**anthropic_message(), "content": [], "stop_reason": "max_tokens"}))
    client = _client(server, "anthropic", {"base_url": "{url}", "model_name": "claude-x"})
    with pytest.raises(ProviderError, match=r"no text content \(stop_reason: max_tokens\)"):
        client.completion("hi")
    assert len(server.requests) == 1 + QUICK.max_retries


@pytest.mark.skipif(not _installed("google.genai"), reason="google-genai missing")
def test_a_gemini_reply_without_candidates_is_an_error(server: FakeProviderServer) -> None:
    from fake_providers import gemini_response

    blocked = {**gemini_response(), "candidates": [], "promptFeedback": {"blockReason": "SAFETY"}}
    server.enqueue(Reply(200, {**gemini_response(), "candidates": []}))
    server.always(Reply(200, blocked))
    client = _client(server, "gemini", {"base_url": "{url}", "model_name": "gemini-x"})
    with pytest.raises(ProviderError) as info:
        client.completion("hi")
    assert "blocked the prompt (SAFETY)" in str(info.value)
    assert not info.value.retryable  # a blocked prompt will not heal: tried twice only
    assert len(server.requests) == 2


# ---------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------


def _rlm(server: FakeProviderServer, **kwargs: Any) -> RLM:
    backend_kwargs = {"base_url": f"{server.url}/v1", "api_key": "x", "model_name": "m"}
    return RLM(backend="openai", backend_kwargs={**backend_kwargs, "retry_policy": QUICK}, **kwargs)


@pytest.mark.parametrize("mode", ["completion", "acompletion"])
def test_a_run_against_an_html_upstream_fails_after_its_retries(
    server: FakeProviderServer, mode: str
) -> None:
    server.always(Reply(200, raw=HTML, content_type="text/html"))
    with _rlm(server, max_iterations=30) as rlm, pytest.raises(ProviderError) as info:
        if mode == "completion":
            rlm.completion("the context", root_prompt="What is it?")
        else:
            asyncio.run(rlm.acompletion("the context", root_prompt="What is it?"))
    assert type(info.value) is ProviderError
    assert "answered 200 with a non-JSON body (text/html" in str(info.value)
    assert len(server.requests) == 1 + QUICK.max_retries  # 3, not max_iterations + 1 = 31
    assert not getattr(info.value, "partial_answer", None)


def test_no_environment_variable_leaks_into_the_cache_key_text() -> None:
    """The shared SDK clients are keyed by a digest: neither a key nor a URL appears."""
    from rlm.clients.async_pool import cache_key

    key = cache_key(dict, {"api_key": KEY, "base_url": "http://h/v1"})
    assert key is not None and KEY not in repr(key) and "http://h" not in repr(key)
    assert cache_key(dict, {"api_key": KEY, "http_client": object()}) is None
    assert os.environ.get("OPENAI_API_KEY") is None or os.environ["OPENAI_API_KEY"] not in repr(key)
