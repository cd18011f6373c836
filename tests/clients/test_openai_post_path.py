"""The OpenAI client sends chat completions through the SDK's documented ``client.post``
(not ``chat.completions.create``, whose per-call TypedDict transform and model building
were most of a call's CPU in ``rlm serve``), and the request on the wire is the one
``create`` would have sent: body fields, ``extra_body`` knobs at the top level, extra
headers and query. Replies are read from JSON; an unreadable body is still an error.
A loopback fake speaking OpenAI's wire; the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fake_providers import FakeProviderServer, Reply, openai_chat

from rlm.base.errors import ProviderError
from rlm.clients.openai import OpenAIClient
from rlm.clients.openai_wire import post_args
from rlm.clients.retry import RetryPolicy

openai = pytest.importorskip("openai")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProviderServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeProviderServer() as fake:
        yield fake


def _client(server: FakeProviderServer, **kwargs: Any) -> OpenAIClient:
    return OpenAIClient(
        api_key="sk-test",
        model_name="gpt-4o-mini",
        base_url=server.url + "/v1",
        retry_policy=RetryPolicy(max_retries=0),
        **kwargs,
    )


class _NoCreate:
    """Fails the test if ``chat.completions.create`` (or its raw form) is called."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_request_on_the_wire_is_what_create_would_send(
    server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    server.always(Reply(200, openai_chat("hi there", 12, 3)))
    client = _client(
        server,
        sampling_args={
            "temperature": 0.5,
            "top_k": 7,  # a server knob: create() puts it in extra_body
            "extra_headers": {"X-Trace": "t-1"},
            "extra_query": {"tag": "q"},
        },
    )
    resource = type(client.client.chat.completions)
    spy = _NoCreate(resource.create)
    monkeypatch.setattr(resource, "create", spy)
    try:
        if mode == "sync":
            result = client.complete([{"role": "user", "content": "Say hi"}])
        else:
            result = asyncio.run(client.acomplete([{"role": "user", "content": "Say hi"}]))
    finally:
        client.close()
    assert spy.calls == 0  # the post path, not create()
    assert result.text == "hi there"
    assert (result.usage.total_input_tokens, result.usage.total_output_tokens) == (12, 3)
    sent = server.last
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["messages"] == [{"role": "user", "content": "Say hi"}]
    assert sent.body["temperature"] == 0.5
    assert sent.body["top_k"] == 7
    assert not {"extra_body", "extra_headers", "extra_query"} & set(sent.body)
    assert sent.headers["x-trace"] == "t-1"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.query == {"tag": ["q"]}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_html_page_with_a_200_is_an_error_naming_its_content_type(
    server: FakeProviderServer, mode: str
) -> None:
    page = b"<html><body>Bad gateway, try later</body></html>"
    server.always(Reply(200, raw=page, content_type="text/html"))
    client = _client(server)
    try:
        with pytest.raises(ProviderError) as info:
            if mode == "sync":
                client.complete("hi")
            else:
                asyncio.run(client.acomplete("hi"))
    finally:
        client.close()
    assert info.value.retryable
    assert "text/html" in str(info.value)


def test_a_json_reply_without_choices_is_an_error_not_an_empty_answer(
    server: FakeProviderServer,
) -> None:
    server.always(Reply(200, {"object": "chat.completion", "choices": []}))
    client = _client(server)
    try:
        with pytest.raises(ProviderError, match="no choices"):
            client.complete("hi")
    finally:
        client.close()


def test_post_args_split_options_from_the_body() -> None:
    request = {
        "model": "m",
        "messages": [],
        "extra_body": {"top_k": 3, "model": "ignored-by-nobody"},
        "extra_headers": {"A": "b"},
        "timeout": 5.0,
    }
    body, options = post_args(request) or ({}, {})
    assert body == {"model": "ignored-by-nobody", "messages": [], "top_k": 3}  # as create()
    assert options == {"headers": {"A": "b"}, "timeout": 5.0}
    assert post_args({"model": "m", "messages": [], "stream": True}) is None
