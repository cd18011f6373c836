"""The provider clients, with their real SDKs, against a loopback fake of each wire format.

Only the transport is fake (``fake_providers``): request encoding, auth headers, status
handling and response parsing are the SDKs' own. Each SDK is needed only by its own
tests; the missing-SDK tests need none.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Importing litellm otherwise fetches its price map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fake_providers import (
    FakeProviderServer,
    Reply,
    anthropic_error,
    anthropic_message,
    gemini_error,
    gemini_response,
    openai_chat,
    openai_error,
)

from rlm.base.errors import (
    ConfigurationError,
    MissingAPIKeyError,
    MissingExtraError,
    ProviderConnectionError,
    ProviderError,
    RateLimitError,
)
from rlm.clients.base_lm import BaseLM
from rlm.clients.retry import RetryPolicy, is_retryable

pytestmark = pytest.mark.filterwarnings(
    # google-genai's own aiohttp subclass; nothing these tests can change.
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)
FAST = RetryPolicy(max_retries=3, base_delay=0.0, jitter=0.0)
# Back-off so long that a test passing quickly proves Retry-After: 0 was obeyed.
SLOW = RetryPolicy(max_retries=2, base_delay=30.0, max_delay=30.0, jitter=0.0)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
]


@dataclass(frozen=True)
class Provider:
    name: str
    sdk_module: str  # what the client imports
    package: str  # what pip installs
    extra: str
    key_env: str | None  # named by MissingAPIKeyError; None when the backend needs none
    other_key_envs: tuple[str, ...]
    make: Callable[..., BaseLM]  # (server url, **overrides) -> client
    error_body: Callable[[int, str], dict[str, Any]]
    auth_status: int
    ok_reply: Callable[[], dict[str, Any]]
    usage: tuple[int, int]  # (input, output) tokens of ok_reply
    text: str
    path: str  # regex the request path must match
    sampled: Callable[[dict[str, Any]], dict[str, Any]]  # where sampling args land


def _anthropic(url: str, **kw: Any) -> BaseLM:
    from rlm.clients.anthropic import AnthropicClient

    kw.setdefault("api_key", "sk-ant-test")
    kw.setdefault("retry_policy", FAST)
    return AnthropicClient(model_name="claude-sonnet-4-6", base_url=url, **kw)


def _gemini(url: str, **kw: Any) -> BaseLM:
    from rlm.clients.gemini import GeminiClient

    kw.setdefault("api_key", "gm-test")
    kw.setdefault("retry_policy", FAST)
    return GeminiClient(model_name="gemini-2.5-flash", base_url=url, **kw)


def _azure(url: str, **kw: Any) -> BaseLM:
    from rlm.clients.azure_openai import AzureOpenAIClient

    kw.setdefault("api_key", "az-test")
    kw.setdefault("retry_policy", FAST)
    return AzureOpenAIClient(
        model_name="gpt-4o-mini",
        azure_endpoint=url,
        azure_deployment="gpt4o-mini-prod",
        api_version="2024-10-21",
        **kw,
    )


def _portkey(url: str, **kw: Any) -> BaseLM:
    from rlm.clients.portkey import PortkeyClient

    kw.setdefault("api_key", "pk-test")
    kw.setdefault("retry_policy", FAST)
    return PortkeyClient(model_name="gpt-4o-mini", base_url=f"{url}/v1", **kw)


def _litellm(url: str, **kw: Any) -> BaseLM:
    from rlm.clients.litellm import LiteLLMClient

    kw.setdefault("api_key", "ll-test")
    kw.setdefault("retry_policy", FAST)
    return LiteLLMClient(model_name="openai/xyz", api_base=f"{url}/v1", **kw)


def _top_level(body: dict[str, Any]) -> dict[str, Any]:
    return body


_OPENAI_WIRE: dict[str, Any] = {
    "error_body": openai_error,
    "auth_status": 401,
    "ok_reply": openai_chat,
    "usage": (19, 10),
    "text": "Hello from the OpenAI wire",
    "sampled": _top_level,
}

PROVIDERS = [
    Provider(
        "anthropic", "anthropic", "anthropic", "anthropic", "ANTHROPIC_API_KEY", (),
        _anthropic, anthropic_error, 401, anthropic_message, (12, 6), "Hello from Claude",
        r"/v1/messages", _top_level,
    ),
    Provider(
        "gemini", "google.genai", "google-genai", "gemini", "GEMINI_API_KEY",
        ("GOOGLE_API_KEY",), _gemini, gemini_error, 403, gemini_response, (9, 5),
        "Hello from Gemini", r"/v1(beta)?/models/gemini-2\.5-flash:generateContent",
        lambda body: body["generationConfig"],
    ),
    Provider(
        "azure_openai", "openai", "openai", "openai", "AZURE_OPENAI_API_KEY", (), _azure,
        path=r"/openai/deployments/gpt4o-mini-prod/chat/completions", **_OPENAI_WIRE,
    ),
    Provider(
        "portkey", "portkey_ai", "portkey-ai", "portkey", "PORTKEY_API_KEY", (), _portkey,
        path=r"/v1/chat/completions", **_OPENAI_WIRE,
    ),
    Provider(
        "litellm", "litellm", "litellm", "litellm", None, (), _litellm,
        path=r"/v1/chat/completions", **_OPENAI_WIRE,
    ),
]  # fmt: skip
BY_NAME = {p.name: p for p in PROVIDERS}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _with_sdk(providers: list[Provider]) -> list[Any]:
    return [
        pytest.param(
            p,
            id=p.name,
            marks=pytest.mark.skipif(
                not _installed(p.sdk_module), reason=f"{p.package} is not installed"
            ),
        )
        for p in providers
    ]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProviderServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(var, raising=False)
    with FakeProviderServer() as fake:
        yield fake


def _complete(client: BaseLM, prompt: Any = "Say hello") -> Any:
    try:
        return client.complete(prompt)
    finally:
        client.close()


# ---------------------------------------------------------------------------
# Every provider
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_completion_returns_text_and_its_own_usage(
    provider: Provider, server: FakeProviderServer
) -> None:
    client = provider.make(server.url)
    result = _complete(client, MESSAGES)

    assert result.text == provider.text
    assert (result.usage.total_input_tokens, result.usage.total_output_tokens) == provider.usage
    assert result.usage.total_calls == 1
    assert client.get_usage_summary().total_calls == 1
    assert len(server.requests) == 1
    assert re.fullmatch(provider.path, server.last.path)


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_sampling_args_reach_the_request_body(
    provider: Provider, server: FakeProviderServer
) -> None:
    client = provider.make(server.url, sampling_args={"temperature": 0.25, "top_p": 0.5})
    _complete(client)

    sent = provider.sampled(server.last.body)
    assert sent["temperature"] == 0.25
    assert sent.get("top_p", sent.get("topP")) == 0.5


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_rate_limit_obeys_retry_after_then_succeeds(
    provider: Provider, server: FakeProviderServer
) -> None:
    server.enqueue(Reply(429, provider.error_body(429, "Slow down"), {"Retry-After": "0"}))
    client = provider.make(server.url, retry_policy=SLOW)

    started = time.monotonic()
    result = _complete(client)

    assert result.text == provider.text
    assert len(server.requests) == 2
    assert time.monotonic() - started < 10  # the 30 s back-off was not used


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_auth_error_fails_fast_with_the_providers_message(
    provider: Provider, server: FakeProviderServer
) -> None:
    status = provider.auth_status
    server.enqueue(Reply(status, provider.error_body(status, "Invalid API key ref-7f3a")))
    client = provider.make(server.url)

    with pytest.raises(ProviderError) as info:
        _complete(client)

    assert info.value.status == status
    assert not info.value.retryable
    assert "Invalid API key ref-7f3a" in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_server_error_is_retried(provider: Provider, server: FakeProviderServer) -> None:
    server.enqueue(Reply(500, provider.error_body(500, "Internal error")))
    result = _complete(provider.make(server.url))

    assert result.text == provider.text
    assert len(server.requests) == 2


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_sdk_retries_are_off_so_attempts_are_ours(
    provider: Provider, server: FakeProviderServer
) -> None:
    server.enqueue(*[Reply(500, provider.error_body(500, "Still broken"))] * 5)
    client = provider.make(server.url, retry_policy=RetryPolicy(max_retries=1, base_delay=0.0))

    with pytest.raises(ProviderError) as info:
        _complete(client)

    assert info.value.status == 500
    assert len(server.requests) == 2  # one try and one retry, none added by the SDK


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_rate_limit_surfaces_when_retries_run_out(
    provider: Provider, server: FakeProviderServer
) -> None:
    server.enqueue(Reply(429, provider.error_body(429, "Quota exceeded"), {"Retry-After": "0"}))
    client = provider.make(server.url, retry_policy=RetryPolicy(max_retries=0))

    with pytest.raises(RateLimitError, match="Quota exceeded"):
        _complete(client)
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_async_completion(provider: Provider, server: FakeProviderServer) -> None:
    server.enqueue(Reply(500, provider.error_body(500, "Internal error")))
    client = provider.make(server.url)

    async def run() -> Any:
        return await client.acomplete(MESSAGES)

    result = asyncio.run(run())
    client.close()

    assert result.text == provider.text
    assert result.usage.total_input_tokens == provider.usage[0]
    assert client.get_usage_summary().total_calls == 1
    assert len(server.requests) == 2  # the retry works on the async path too


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_unreachable_server_is_a_retryable_client_error(provider: Provider) -> None:
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    client = provider.make(url, retry_policy=RetryPolicy(max_retries=1, base_delay=0.0))
    # LiteLLM itself reports a refused connection as its InternalServerError (HTTP 500).
    expected = ProviderError if provider.name == "litellm" else ProviderConnectionError

    with pytest.raises(expected) as info:
        _complete(client)
    assert is_retryable(info.value)
    with pytest.raises(expected):
        asyncio.run(client.acomplete("Say hello"))


@pytest.mark.parametrize("provider", _with_sdk([p for p in PROVIDERS if p.key_env is not None]))
def test_missing_key_names_the_env_var(
    provider: Provider, server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert provider.key_env is not None
    for var in (provider.key_env, *provider.other_key_envs):
        monkeypatch.delenv(var, raising=False)

    with pytest.raises(MissingAPIKeyError) as info:
        provider.make(server.url, api_key=None)

    assert info.value.env_var == provider.key_env
    assert provider.key_env in str(info.value)
    assert not server.requests


@pytest.mark.parametrize("provider", PROVIDERS, ids=[p.name for p in PROVIDERS])
def test_missing_sdk_names_the_extra(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, provider.sdk_module, None)  # import now fails
    module_name = f"rlm.clients.{provider.name}"  # backend name == module name
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    importlib.import_module(module_name)  # imports cleanly without its SDK

    with pytest.raises(MissingExtraError) as info:
        provider.make("http://127.0.0.1:9", api_key="unused")

    assert f"rlmx[{provider.extra}]" in str(info.value)
    assert provider.package in str(info.value)


# ---------------------------------------------------------------------------
# Anthropic
# ---------------------------------------------------------------------------

anthropic_only = pytest.mark.skipif(not _installed("anthropic"), reason="anthropic not installed")
HISTORY = [
    {"role": "system", "content": "You are an RLM."},
    {"role": "user", "content": "Task: count the words."},
    {"role": "assistant", "content": "```repl\nprint(len(context.split()))\n```"},
    {"role": "user", "content": "REPL output: 42"},
    {"role": "user", "content": "Continue."},
]


@anthropic_only
def test_anthropic_system_extraction_merging_and_text_blocks(server: FakeProviderServer) -> None:
    result = _complete(_anthropic(server.url), HISTORY)
    body = server.last.body

    assert body["system"] == "You are an RLM."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][-1]["content"] == "REPL output: 42\n\nContinue."
    assert body["max_tokens"] == 32768
    assert "cache_control" not in str(body)
    assert server.last.headers.get("anthropic-version")
    assert "sk-ant-test" in server.last.headers.get("x-api-key", "") + server.last.headers.get(
        "authorization", ""
    )
    assert result.text == "Hello from Claude"  # two text blocks, concatenated


@anthropic_only
def test_anthropic_prompt_caching_marks_the_stable_prefix(server: FakeProviderServer) -> None:
    server.enqueue(Reply(200, anthropic_message(input_tokens=5, cache_read=1000, cache_write=200)))
    client = _anthropic(server.url, prompt_caching=True, sampling_args={"max_tokens": 512})
    result = _complete(client, HISTORY)
    body = server.last.body

    ephemeral = {"type": "ephemeral"}
    assert body["system"] == [
        {"type": "text", "text": "You are an RLM.", "cache_control": ephemeral}
    ]
    prefix, newest = body["messages"][-2], body["messages"][-1]
    assert prefix["role"] == "assistant"
    assert prefix["content"][-1]["cache_control"] == ephemeral
    assert "cache_control" not in str(newest)
    assert "cache_control" not in str(body["messages"][0])
    assert body["max_tokens"] == 512
    assert HISTORY[2]["content"].startswith("```repl")  # the caller's messages are untouched

    usage = result.usage
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (1000, 200)
    assert usage.total_input_tokens == 5 + 1000 + 200
    # claude-sonnet-4 prices: $3 in / $15 out per million; reads 0.1x, writes 1.25x.
    expected = (5 * 3 + 1000 * 3 * 0.1 + 200 * 3 * 1.25 + 6 * 15) / 1_000_000
    assert usage.total_cost == pytest.approx(expected)
    assert (
        client.get_usage_summary().model_usage_summaries["claude-sonnet-4-6"].cache_read_tokens
        == 1000
    )


# ---------------------------------------------------------------------------
# Gemini
# ---------------------------------------------------------------------------

gemini_only = pytest.mark.skipif(
    not _installed("google.genai"), reason="google-genai not installed"
)


@gemini_only
def test_gemini_system_instruction_roles_and_cached_tokens(server: FakeProviderServer) -> None:
    client = _gemini(server.url, api_version="v1beta", sampling_args={"max_tokens": 64})
    result = _complete(client, HISTORY)
    request = server.last

    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "gm-test"
    assert request.body["systemInstruction"]["parts"] == [{"text": "You are an RLM."}]
    assert [c["role"] for c in request.body["contents"]] == ["user", "model", "user"]
    assert len(request.body["contents"][-1]["parts"]) == 2  # two user turns, merged
    assert request.body["generationConfig"]["maxOutputTokens"] == 64
    assert result.usage.cache_read_tokens == 4


@gemini_only
def test_gemini_rejects_unknown_sampling_args(server: FakeProviderServer) -> None:
    with pytest.raises(ConfigurationError, match="temprature"):
        _gemini(server.url, sampling_args={"temprature": 0.2})


# ---------------------------------------------------------------------------
# Azure OpenAI, Portkey, LiteLLM
# ---------------------------------------------------------------------------

openai_only = pytest.mark.skipif(not _installed("openai"), reason="openai not installed")


@openai_only
def test_azure_uses_deployment_url_version_and_key_header(server: FakeProviderServer) -> None:
    _complete(_azure(server.url, sampling_args={"top_k": 3}))
    request = server.last

    assert request.query["api-version"] == ["2024-10-21"]
    assert request.headers["api-key"] == "az-test"
    assert request.body["top_k"] == 3  # a server-specific knob travels in the body


@openai_only
def test_azure_needs_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm.clients.azure_openai import AzureOpenAIClient

    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT"):
        AzureOpenAIClient(api_key="az-test", model_name="gpt-4o-mini")


@pytest.mark.skipif(not _installed("portkey_ai"), reason="portkey-ai not installed")
def test_portkey_sends_its_key_header(server: FakeProviderServer) -> None:
    _complete(_portkey(server.url))
    assert server.last.headers["x-portkey-api-key"] == "pk-test"


@pytest.mark.skipif(not _installed("litellm"), reason="litellm not installed")
def test_litellm_routes_to_api_base_and_reports_cost(server: FakeProviderServer) -> None:
    server.enqueue(Reply(200, openai_chat(cached_tokens=7)))
    result = _complete(_litellm(server.url))

    assert server.last.body["model"] == "xyz"  # the "openai/" route prefix is LiteLLM's
    assert server.last.headers["authorization"] == "Bearer ll-test"
    assert result.model == "openai/xyz"
    assert result.usage.cache_read_tokens == 7
    # LiteLLM prices the reply by the model the server names (gpt-4o-mini).
    assert result.usage.total_cost is not None and result.usage.total_cost > 0


_REGISTRY_KWARGS: dict[str, dict[str, Any]] = {
    "anthropic": {"api_key": "k", "model_name": "claude-sonnet-4-6"},
    "gemini": {"api_key": "k"},
    "azure_openai": {"api_key": "k", "azure_endpoint": "http://127.0.0.1:9", "model_name": "m"},
    "portkey": {"api_key": "k", "model_name": "m"},
    "litellm": {"model_name": "openai/xyz"},
}


@pytest.mark.parametrize("provider", _with_sdk(PROVIDERS))
def test_registry_builds_the_client(provider: Provider) -> None:
    from rlm.clients.registry import get_backend, get_client

    client = get_client(provider.name, _REGISTRY_KWARGS[provider.name])
    try:
        assert type(client) is get_backend(provider.name).load()
        assert client.model_name
    finally:
        client.close()
